"""Training checkpoints, written atomically: a crash or SIGKILL during a save leaves the previous one usable.

Layout of one checkpoint, `RUN/checkpoints/step-000120/`:

    model.safetensors     trainable weights (or all, `checkpoint.weights: full`), by our parameter names
    optimizer.pt          AdamW state with full tensors, keyed by parameter name (torch.save, tensors only)
    trainer_state.json    step, schedule (a function of the step), data position, samples/tokens consumed, world size
    rng/rank-00000.pt     python / numpy / torch (/ CUDA) RNG states of each rank
    config.yaml           the resolved recipe (what `internvl train export` rebuilds the model from)

Protocol: every file goes into `RUN/checkpoints/.step-000120.partial/`, is fsync'ed, and only then the
folder is renamed to `step-000120` (a rename is atomic on POSIX file systems) and the parent folder is
fsync'ed. Folders whose name starts with a dot are never read back, and are removed on the next save or
resume. Older complete checkpoints beyond `keep_last` are deleted only after the new one is in place.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from internvl.errors import CheckpointError
from internvl.train.distributed import Distributed

STEP_FOLDER = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def folder_name(step: int) -> str:
    return f"step-{step:06d}"


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (partial saves are dot-folders and never listed)."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for item in root.iterdir():
        match = STEP_FOLDER.match(item.name)
        if match and item.is_dir() and (item / STATE_FILE).is_file():
            found.append((int(match.group(1)), item))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (its latest checkpoint)."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(
            f"{path}: neither a training checkpoint (no {STATE_FILE}) nor a run folder with checkpoints"
        )
    return latest


def remove_partial(run_dir: str | Path) -> None:
    root = checkpoint_root(run_dir)
    if root.is_dir():
        for item in root.iterdir():
            if item.name.startswith(".") and item.name.endswith(".partial"):
                shutil.rmtree(item, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# RNG states


def rng_state() -> dict[str, Any]:
    """This process's RNG states as plain tensors / lists (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------
# Saving


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_weights(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    state: Distributed,
    *,
    weights: dict[str, torch.Tensor],
    optimizer: dict,
    trainer_state: dict[str, Any],
    config_yaml: str,
    keep_last: int,
) -> Path:
    """Collective: every rank calls it (each writes its RNG state); rank 0 writes the rest and commits.

    `weights` and `optimizer` need to be complete on rank 0 only.
    """
    root = checkpoint_root(run_dir)
    final = root / folder_name(step)
    partial = root / f".{folder_name(step)}.partial"
    if state.is_main:
        root.mkdir(parents=True, exist_ok=True)
        remove_partial(run_dir)
        partial.mkdir()
        (partial / "rng").mkdir()
    state.barrier()
    rng_path = partial / "rng" / f"rank-{state.rank:05d}.pt"
    torch.save(rng_state(), rng_path)
    _fsync(rng_path)
    state.barrier()
    if state.is_main:
        write_weights(weights, partial / "model.safetensors")
        torch.save(optimizer, partial / "optimizer.pt")
        (partial / "config.yaml").write_text(config_yaml, encoding="utf-8")
        (partial / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n", encoding="utf-8")
        for item in list(partial.iterdir()) + list((partial / "rng").iterdir()):
            if item.is_file():
                _fsync(item)
        _fsync(partial / "rng")
        _fsync(partial)
        commit(partial, final)
        _fsync(root)
        for old in complete_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    state.barrier()
    return final


def commit(partial: Path, final: Path) -> None:
    """The atomic step: the complete folder appears under its final name (a stale one is moved aside first)."""
    if final.exists():
        stale = final.with_name(f".{final.name}.stale")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(final, stale)
        os.replace(partial, final)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(partial, final)


# ----------------------------------------------------------------------------------------------
# Loading


def load_checkpoint(folder: str | Path, rank: int) -> dict[str, Any]:
    """Everything a rank needs to resume: weights, optimiser state, trainer state, its RNG state (or None).

    A file that cannot be read (truncated, garbage, from another program) is one `CheckpointError` naming
    it and the run's previous checkpoint, if there is one, to resume from instead."""
    folder = Path(folder)
    rng_path = folder / "rng" / f"rank-{rank:05d}.pt"
    readers: list[tuple[str, Path, Any]] = [
        ("trainer_state", folder / STATE_FILE, lambda p: json.loads(p.read_text(encoding="utf-8"))),
        ("weights", folder / "model.safetensors", lambda p: load_file(str(p))),
        ("optimizer", folder / "optimizer.pt", lambda p: torch.load(p, map_location="cpu", weights_only=True)),
        ("rng", rng_path, lambda p: torch.load(p, weights_only=True) if p.is_file() else None),
    ]
    loaded: dict[str, Any] = {}
    for name, path, read in readers:
        try:
            loaded[name] = read(path)
        except Exception as exc:  # safetensors, pickle and JSON errors have no common base class
            raise CheckpointError(
                f"{path}: cannot read this training checkpoint file ({_short(exc)}){_fallback(folder)}"
            ) from exc
    rng = loaded["rng"]
    if rng is not None and not (isinstance(rng, dict) and {"python", "numpy", "torch"} <= set(rng)):
        raise CheckpointError(f"{rng_path}: not a random-state file{_fallback(folder)}")
    return loaded


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _fallback(folder: Path) -> str:
    """Advice naming the checkpoint before `folder` in its run, if any."""
    earlier = [p for p in complete_checkpoints(folder.parent.parent) if p.name < folder.name]
    if earlier:
        return (
            f". Resume from the previous checkpoint with checkpoint.resume={earlier[-1]} "
            f"(or move {folder.name} aside and resume automatically)"
        )
    return ". There is no earlier checkpoint in this run: start again with checkpoint.resume=never"
