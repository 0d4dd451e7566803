"""Resuming: an interrupted run continues exactly where it stopped, and a kill during a save loses nothing
but that save."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from internvl.train import checkpoint, sft
from tests.test_train_support import (
    losses,
    single_thread,  # noqa: F401 (fixture: one intra-op thread)
    tiny_model_folder,
    tiny_recipe,
)

REPO = Path(__file__).resolve().parent.parent

# LoRA (dropout draws from the torch RNG) + a trained ViT, 2 micro-batches per step, a shuffled 5-batch
# epoch (so the data position crosses epochs): everything a resume has to restore.
SETTINGS = (
    "lora.language_rank=4",
    "lora.dropout=0.2",
    "train.gradient_accumulation_steps=2",
    "data.options.batches=5",
    "data.options.shuffle=true",
    "checkpoint.every_steps=2",
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def reference(model_dir, tmp_path_factory):
    """6 uninterrupted steps."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    sft.run(tiny_recipe(model_dir, run_dir, *SETTINGS, steps=6))
    return run_dir


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint.latest_checkpoint(run_dir) / "model.safetensors"))


def test_resume_reproduces_the_uninterrupted_loss_curve_exactly(model_dir, reference, tmp_path):
    run_dir = tmp_path / "run"
    sft.run(tiny_recipe(model_dir, run_dir, *SETTINGS, "train.stop_at_step=3", steps=6))
    assert len(losses(run_dir)) == 3
    assert checkpoint.latest_checkpoint(run_dir).name == "step-000003"  # saved where it stopped
    sft.run(tiny_recipe(model_dir, run_dir, *SETTINGS, steps=6))  # checkpoint.resume=auto
    expected = losses(reference)
    assert len(expected) == 6 and len(set(expected)) == 6
    assert losses(run_dir) == expected  # bit for bit
    ours, theirs = final_weights(run_dir), final_weights(reference)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_finished_run_says_so_at_once(model_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    first = sft.run(tiny_recipe(model_dir, run_dir, steps=2))
    start = time.perf_counter()
    again = sft.run(tiny_recipe(model_dir, run_dir, steps=2))
    assert time.perf_counter() - start < 1.0  # nothing is loaded
    assert again["already_finished"] and again["step"] == 2 and again["loss"] == first["loss"]
    assert "already finished at step 2" in capsys.readouterr().err
    assert not sft.run(tiny_recipe(model_dir, run_dir, steps=3)).get("already_finished")  # more steps: trains on


def test_resume_never_starts_over(model_dir, tmp_path):
    run_dir = tmp_path / "run"
    sft.run(tiny_recipe(model_dir, run_dir, steps=2))
    first = losses(run_dir)
    sft.run(tiny_recipe(model_dir, run_dir, "checkpoint.resume=never", steps=2))
    assert losses(run_dir) == first  # same seed, fresh start, metrics rewritten


KILLED_RUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import internvl.train.checkpoint as checkpoint
    from tests.test_train_support import tiny_recipe
    from internvl.train.sft import run

    model_dir, run_dir, signal_file = map(Path, sys.argv[1:4])
    settings = sys.argv[4:]
    write_weights = checkpoint.write_weights

    def slow_write(tensors, path):  # the save of step 4 hangs after its weights are written
        write_weights(tensors, path)
        if ".step-000004.partial" in str(path):
            signal_file.write_text("saving")
            time.sleep(120)

    checkpoint.write_weights = slow_write
    run(tiny_recipe(model_dir, run_dir, *settings, steps=6))
""")


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_usable(model_dir, reference, tmp_path):
    run_dir, signal_file = tmp_path / "run", tmp_path / "saving"
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'src'}", OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, str(script), str(model_dir), str(run_dir), str(signal_file), *SETTINGS],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not signal_file.exists():
        if process.poll() is not None:
            pytest.fail(f"the training subprocess ended early:\n{process.stdout.read().decode()[-3000:]}")
        assert time.monotonic() < deadline, "the training subprocess never reached the save of step 4"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    root = run_dir / "checkpoints"
    assert (root / ".step-000004.partial" / "model.safetensors").is_file()  # the torn save is there...
    assert not (root / "step-000004").exists()  # ...under a name that is never read back
    assert checkpoint.latest_checkpoint(run_dir).name == "step-000002"

    sft.run(tiny_recipe(model_dir, run_dir, *SETTINGS, steps=6))
    assert not (root / ".step-000004.partial").exists()
    assert losses(run_dir) == losses(reference)
    ours, theirs = final_weights(run_dir), final_weights(reference)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("damage", ["truncated weights", "garbage random state"])
def test_a_damaged_checkpoint_is_named_with_the_previous_one_to_resume_from(model_dir, tmp_path, damage):
    """Issue 16, defect 12: one line naming the file and the checkpoint before it, not a traceback."""
    from internvl import CheckpointError

    run_dir = tmp_path / "run"
    sft.run(tiny_recipe(model_dir, run_dir, *SETTINGS, steps=4))
    last = checkpoint.latest_checkpoint(run_dir)
    if damage == "truncated weights":
        path = last / "model.safetensors"
        path.write_bytes(path.read_bytes()[:100])
    else:
        path = last / "rng" / "rank-00000.pt"
        path.write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError) as info:
        sft.run(tiny_recipe(model_dir, run_dir, *SETTINGS, steps=6))
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "step-000002" in message and "checkpoint.resume=" in message
    # The advice works: resuming from the previous checkpoint finishes the run.
    result = sft.run(
        tiny_recipe(model_dir, run_dir, *SETTINGS, f"checkpoint.resume={run_dir}/checkpoints/step-000002", steps=6)
    )
    assert result["step"] == 6
