"""ViCO training (`internvl train vico`, docs/flash.md): the consistency stage teaches the compressed
connector, the router stage trains the router alone; both resume exactly and export Flash checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from internvl.errors import ConfigError
from internvl.inputs.prompt import IGNORE_INDEX
from internvl.train import checkpoint, vico
from internvl.train.metrics import read_metrics
from internvl.train.sft import export_model
from internvl.weights import load_model
from tests.test_train_support import tiny_model_folder, tiny_recipe_settings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "model")


def recipe(model_dir: Path, run_dir: Path, *overrides: str, steps: int = 6) -> vico.ViCOSettings:
    base = tiny_recipe_settings(model_dir, run_dir, steps) + [
        "checkpoint.weights=full",
        "freeze.vision=true",
        "freeze.projector=true",
        "freeze.language=true",
    ]
    return vico.load_config(None, base + list(overrides))


def metric(run_dir: Path, name: str) -> list[float]:
    return [row[name] for row in read_metrics(run_dir)]


def test_cut_batch_keeps_every_supervised_token_and_restarts_positions():
    ctx = 9
    ids = torch.tensor([[1, ctx, ctx, ctx, ctx, 5, 6, 2, ctx, ctx, ctx, ctx, 7, 0]])
    labels = torch.tensor([[IGNORE_INDEX] * 5 + [5, 6] + [IGNORE_INDEX] * 5 + [7, IGNORE_INDEX]])
    documents = torch.tensor([[0] * 7 + [1] * 6 + [2]])
    x = {"input_ids": ids, "document_ids": documents, "attention_mask": (documents < 2).long()}
    keep = vico.batch_keep_mask(ids, ctx, torch.tensor([True, False]), full=4, small=1)
    cut = vico.cut_batch(x, labels, keep)
    assert cut["input_ids"].tolist() == [[1, ctx, 5, 6, 2, ctx, ctx, ctx, ctx, 7, 0]]
    assert cut["labels"][cut["labels"] != IGNORE_INDEX].tolist() == [5, 6, 7]
    assert cut["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 0]]
    assert cut["attention_mask"].tolist() == [[1] * 10 + [0]]


def test_consistency_stage_trains_the_compressed_connector_only(model_dir, tmp_path):
    run_dir = tmp_path / "run"
    # one batch over and over: the connector can fit it (with 1 token for a tile's 4 the KL cannot reach 0)
    vico.run(recipe(model_dir, run_dir, "vico.compress_probability=1.0", "data.options.batches=1", steps=30))
    loss = metric(run_dir, "loss")
    assert loss[-1] < 0.5 * loss[0]  # the KL to the full-resolution reference falls (measured: 0.053 -> 0.011)
    assert metric(run_dir, "compressed_share")[0] == 1.0
    export_model(run_dir, tmp_path / "flash")
    trained, start = load_model(tmp_path / "flash"), load_model(model_dir)
    assert trained.config.flash
    for name, param in start.state_dict().items():  # every part but the new connector and router as it was
        assert torch.equal(param, trained.state_dict()[name]), name


def test_a_micro_batch_without_compressed_tiles_still_steps(model_dir, tmp_path):
    run_dir = tmp_path / "run"
    vico.run(recipe(model_dir, run_dir, "vico.compress_probability=1e-9", steps=2))
    assert metric(run_dir, "compressed_share") == [0.0, 0.0] and metric(run_dir, "loss") == [0.0, 0.0]


def test_consistency_stage_resumes_exactly(model_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    vico.run(recipe(model_dir, straight, "freeze.language=false", steps=4))
    vico.run(recipe(model_dir, resumed, "freeze.language=false", "train.stop_at_step=2", steps=4))
    vico.run(recipe(model_dir, resumed, "freeze.language=false", steps=4))
    assert metric(resumed, "loss") == metric(straight, "loss")
    assert metric(resumed, "compressed_share") == metric(straight, "compressed_share")
    a = load_file(str(checkpoint.latest_checkpoint(straight) / "model.safetensors"))
    b = load_file(str(checkpoint.latest_checkpoint(resumed) / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_router_stage_trains_the_router_alone_and_reports_it(model_dir, tmp_path):
    vico.run(recipe(model_dir, tmp_path / "s1", steps=2))
    export_model(tmp_path / "s1", tmp_path / "flash")
    run_dir = tmp_path / "s2"
    settings = recipe(tmp_path / "flash", run_dir, "vico.stage=router", "vico.ratio_window=8", steps=4)
    vico.run(settings)
    for name in ("router_accuracy", "compression_rate", "label_compress_share", "tau"):
        assert len(metric(run_dir, name)) == 4, name
    shares = metric(run_dir, "label_compress_share")
    assert all(0 < share < 1 for share in shares)  # τ is a percentile of the ratios: both labels occur
    export_model(run_dir, tmp_path / "routed")
    before, after = load_model(tmp_path / "flash").state_dict(), load_model(tmp_path / "routed").state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("router.") for name in changed)


def test_router_stage_needs_a_flash_model_and_bad_settings_are_named(model_dir, tmp_path):
    with pytest.raises(ConfigError, match="run the consistency stage first"):
        vico.run(recipe(model_dir, tmp_path / "r", "vico.stage=router", steps=1))
    with pytest.raises(ConfigError, match="LoRA"):
        vico.run(recipe(model_dir, tmp_path / "l", "lora.language_rank=4", steps=1))
    with pytest.raises(ConfigError, match="checkpoint.weights"):
        vico.run(recipe(model_dir, tmp_path / "w", "checkpoint.weights=trainable", steps=1))
    with pytest.raises(ConfigError, match="compress_probability"):
        vico.run(recipe(model_dir, tmp_path / "p", "vico.compress_probability=0", steps=1))
