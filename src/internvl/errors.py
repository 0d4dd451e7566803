"""Error types a caller can catch. Messages name the thing at fault and say what to do."""


class InternVLError(Exception):
    """Base class of every error raised on purpose by this package."""


class ConfigError(InternVLError):
    """A config.json (or a config value) is missing, malformed or unsupported."""


class CheckpointError(InternVLError):
    """Checkpoint tensors are missing, unexpected, mis-shaped, truncated or unreadable."""


class InputError(InternVLError):
    """An image, video, prompt or data line cannot be used as given."""


class TrainingError(InternVLError):
    """Training cannot go on (a non-finite loss, a broken resume, an unusable data source)."""
