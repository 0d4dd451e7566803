"""Models shipped inside the package, by name: `nano` works wherever a model folder does.

    internvl.load("nano")                        # the Python API (load() with no folder means the same)
    internvl eval run --model nano ...           # any --model option
    model: {path: nano}                          # training recipes

A name always means the shipped model; to use a folder that happens to be called `nano`, write `./nano`.
"""

from __future__ import annotations

from pathlib import Path

from internvl.errors import CheckpointError

ASSETS = Path(__file__).parent / "assets"
SHIPPED: dict[str, Path] = {"nano": ASSETS / "nano"}  # the nano InternVL trained on the world (docs/nano/README.md)


def model_folder(name_or_path: str | Path) -> Path:
    """The folder of a shipped model's name, else `name_or_path` itself as a path."""
    if isinstance(name_or_path, str) and name_or_path in SHIPPED:
        folder = SHIPPED[name_or_path]
        if not (folder / "config.json").is_file():
            raise CheckpointError(
                f"{folder}: the shipped model {name_or_path!r} is not installed in this build; pass a checkpoint folder"
            )
        return folder
    return Path(name_or_path)
