"""internvl: an independent PyTorch implementation of the InternVL multimodal models."""

from internvl.errors import CheckpointError, ConfigError, InputError, InternVLError

__version__ = "0.1.0"


def load(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Load a checkpoint folder with its tokenizer, ready to `ask` (see `internvl.chat.load`)."""
    from internvl.chat import load as _load

    return _load(*args, **kwargs)


__all__ = ["CheckpointError", "ConfigError", "InputError", "InternVLError", "load"]
