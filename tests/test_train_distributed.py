"""Data parallelism: 2 CPU processes (gloo, rendezvous through a file, no network) x 1 micro-batch must
train exactly like 1 process x 2 accumulated micro-batches: same losses, same weights (float tolerance)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from internvl.train import checkpoint, sft
from internvl.train.metrics import read_metrics
from tests.test_train_support import (
    single_thread,  # noqa: F401 (fixture: one intra-op thread)
    tiny_model_folder,
    tiny_recipe,
)

COMMON = ("data.options.rows=1", "checkpoint.every_steps=0", "checkpoint.weights=full", "log.every_steps=1")
RUNS = {
    # strategy -> settings: DDP trains every part in full; FSDP2 mixes frozen bases, LoRA and full parts
    "ddp": ("distributed.strategy=ddp",),
    "fsdp": ("distributed.strategy=fsdp", "lora.language_rank=4", "lora.dropout=0.0", "freeze.projector=true"),
}
STEPS = 3


def _worker(rank: int, world: int, model_dir: str, root: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    for name, settings in RUNS.items():
        init = f"distributed.init_method=file://{root}/{name}.rendezvous"
        sft.run(tiny_recipe(model_dir, f"{root}/{name}-2proc", *COMMON, *settings, init, steps=STEPS))


def final(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint.latest_checkpoint(run_dir) / "model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    model_dir = tiny_model_folder(root / "model", seed=5)
    for name, settings in RUNS.items():  # the single-process references, 2 micro-batches per step
        sft.run(
            tiny_recipe(
                model_dir,
                root / f"{name}-1proc",
                *COMMON,
                *settings,
                "train.gradient_accumulation_steps=2",
                steps=STEPS,
            )
        )
    # fork (where there is one) reuses this process's imports: a spawned child spends seconds importing
    # torch, transformers and peft again. The children run one intra-op thread, so no OpenMP pool is forked.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(2, str(model_dir), str(root)), nprocs=2, start_method=method, join=True)
    return root


@pytest.mark.parametrize("strategy", list(RUNS))
def test_two_processes_train_like_one_with_accumulation(runs, strategy):
    single, double = runs / f"{strategy}-1proc", runs / f"{strategy}-2proc"
    one, two = read_metrics(single), read_metrics(double)
    assert [r["samples"] for r in one] == [r["samples"] for r in two] == [4, 8, 12]
    assert [r["tokens"] for r in one] == [r["tokens"] for r in two]
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    ours, reference = final(double), final(single)
    assert ours.keys() == reference.keys()
    for key in reference:
        assert torch.allclose(ours[key], reference[key], atol=2e-5, rtol=1e-4), key
