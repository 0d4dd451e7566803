"""internvl: an independent PyTorch implementation of the InternVL multimodal models."""

from internvl.errors import CheckpointError, ConfigError, InputError, InternVLError

__all__ = ["CheckpointError", "ConfigError", "InputError", "InternVLError"]
__version__ = "0.1.0"
