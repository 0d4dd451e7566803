"""internvl: an independent PyTorch implementation of the InternVL multimodal models.

Public API: `load()` (a checkpoint folder -> `Chat`), `Chat`, `InternVL` (the model), `load_model` /
`save_model` (a checkpoint folder <-> `InternVL`, either layout), `Processor` (conversations -> model
inputs), and the error types. The heavy modules are imported on first use.
"""

from typing import Any

from internvl.errors import CheckpointError, ConfigError, InputError, InternVLError

__version__ = "0.1.0"

_LAZY = {
    "load": "internvl.chat",
    "Chat": "internvl.chat",
    "InternVL": "internvl.model.internvl",
    "Processor": "internvl.inputs.processor",
    "load_model": "internvl.weights",
    "save_model": "internvl.weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'internvl' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "Chat",
    "ConfigError",
    "InputError",
    "InternVL",
    "InternVLError",
    "Processor",
    "load",
    "load_model",
    "save_model",
]
