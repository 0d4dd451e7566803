"""MPO: the official pair format read through the SFT pipeline, the running BCO shift, and the recipe
end to end on a tiny original-layout checkpoint (full and LoRA), with resume and export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from internvl.data.preference import PreferencePairs, pair_records
from internvl.data.sft import DatasetSpec, SampleSettings, SupervisedDataset
from internvl.errors import ConfigError, InputError
from internvl.inputs.prompt import IGNORE_INDEX
from internvl.inputs.tokens import load_tokenizer
from internvl.train import mpo
from internvl.train.metrics import read_metrics
from internvl.train.preference import PreferenceLossSettings, RunningMean, preference_loss
from internvl.train.sft import export_model
from internvl.weights import load_model
from tests.test_train_support import single_thread  # noqa: F401 (fixture: one intra-op thread)
from tests.tiny import build_chat_model_folder

COLOURS = ["red", "blue", "green", "yellow"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_chat_model_folder(tmp_path_factory.mktemp("mpo") / "model")


def write_pairs(root: Path, lines: list[dict]) -> Path:
    """Images, an MPO JSONL in the official format and its meta JSON; returns the meta path."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for colour in COLOURS:
        Image.new("RGB", (112, 112), colour).save(root / "images" / f"{colour}.png")
    (root / "pairs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    meta = {"colours": {"root": str(root / "images"), "annotation": str(root / "pairs.jsonl"), "repeat_time": 1}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root / "meta.json"


def colour_pairs() -> list[dict]:
    """Chosen names the colour in a full sentence; rejected is a short refusal (learnable from the text)."""
    return [
        {
            "image": f"{c}.png",
            "question": "<image>\nWhat colour is the picture?",
            "chosen": f"The picture is {c}.",
            "rejected": "no.",
            "answer_gt": c,
        }
        for c in COLOURS
    ]


def recipe(model_dir: Path, meta: Path, run: Path, *overrides: str) -> mpo.MPOSettings:
    return mpo.load_config(
        None,
        [
            f"model.path={model_dir}",
            "data.source=internvl.data.preference:pair_batches",
            f"data.options.meta_path={meta}",
            "data.options.pairs_per_batch=2",
            "data.options.max_tiles=1",
            f"output_dir={run}",
            "train.max_steps=8",
            "train.precision=fp32",
            "optim.lr=3e-3",
            "optim.warmup_steps=1",
            "log.progress_bar=false",
            "log.plot=false",
            "checkpoint.every_steps=4",
            "checkpoint.keep_last=2",
            *overrides,
        ],
    )


# ----------------------------------------------------------------------------------------------- data


def test_official_lines_become_two_conversations_with_the_same_prompt_and_tiles(model_dir, tmp_path):
    lines = colour_pairs()[:2]
    lines.append({"question": "What is 2 + 2?", "chosen": "4", "rejected": "5"})  # text only
    lines.append({**colour_pairs()[2], "system_prompt": "You are careful."})
    write_pairs(tmp_path, lines)
    spec = DatasetSpec("colours", str(tmp_path / "images"), str(tmp_path / "pairs.jsonl"))
    tokenizer = load_tokenizer(model_dir)
    samples = SupervisedDataset(spec, tokenizer, SampleSettings(num_image_token=16, tile_size=112, max_tiles=1))
    pairs = PreferencePairs(samples)
    assert len(pairs) == 4
    for i in range(4):
        pair = pairs.load(i)
        chosen, rejected = pair.chosen, pair.rejected
        start = int((chosen.labels != IGNORE_INDEX).nonzero()[0])  # first supervised token: the answer
        assert torch.equal(chosen.input_ids[:start], rejected.input_ids[:start])  # identical prompt
        assert bool((rejected.labels[start:] != IGNORE_INDEX).any())
        assert torch.equal(chosen.pixel_values, rejected.pixel_values)
        assert pair.key == f"{tmp_path / 'pairs.jsonl'}:{i + 1}"
    assert tokenizer.decode(pairs.load(0).chosen.labels[pairs.load(0).chosen.labels != IGNORE_INDEX]).startswith(
        "The picture is red."
    )
    assert int(pairs.load(2).chosen.image_flags.sum()) == 0  # text only: one dummy tile, flagged 0
    assert "You are careful." in tokenizer.decode(pairs.load(3).chosen.input_ids)


def test_a_resumed_pass_starts_mid_epoch_without_reading_the_batches_before(model_dir, tmp_path, monkeypatch):
    from internvl.data.preference import pair_batches
    from internvl.train.data import BatchStream

    meta = write_pairs(tmp_path, colour_pairs() * 2)  # 8 pairs: 4 micro-batches of 2
    options = {"meta_path": str(meta), "pairs_per_batch": 2, "max_tiles": 1, "tokenizer": str(model_dir)}
    config = load_model(model_dir).config
    source = pair_batches(options, config, rank=0, world_size=1, seed=3)
    source.set_epoch(1)
    full = [batch["pair_keys"] for batch in source]
    assert len(full) == 4

    resumed = BatchStream(pair_batches(options, config, rank=0, world_size=1, seed=3))
    reads = []
    original = PreferencePairs.__getitem__
    monkeypatch.setattr(PreferencePairs, "__getitem__", lambda self, i: reads.append(i) or original(self, i))
    resumed.load_state_dict({"epoch": 1, "index": 3})
    assert reads == []  # nothing loaded to get there
    assert next(resumed)["pair_keys"] == full[3]
    assert len(reads) == 2


def test_a_bad_line_is_named_by_file_and_line(model_dir, tmp_path):
    write_pairs(tmp_path, [colour_pairs()[0], {"image": "red.png", "question": "q", "chosen": "a"}])
    spec = DatasetSpec("colours", str(tmp_path / "images"), str(tmp_path / "pairs.jsonl"))
    samples = SupervisedDataset(spec, load_tokenizer(model_dir), SampleSettings(num_image_token=16, tile_size=112))
    with pytest.raises(InputError, match=r"pairs.jsonl:2: an MPO line needs a string 'rejected'"):
        PreferencePairs(samples).load(1)
    with pytest.raises(InputError, match="'system_prompt' must be a string"):
        pair_records({"question": "q", "chosen": "a", "rejected": "b", "system_prompt": 3})


# ------------------------------------------------------------------------------------------ the loss


def test_running_bco_shift_follows_trl_0x_update_rule():
    """TRL 0.x RunningMoments: count starts at 1e-24; merging a mean x of n numbers gives
    mean + (x - mean) * n / (count + n). The first update therefore takes x itself."""
    running = RunningMean()
    assert running.update(2.0) == pytest.approx(2.0, abs=1e-12)
    assert running.update(4.0) == pytest.approx(3.0)  # (2 + 4) / 2
    assert running.update(0.0, count=2.0) == pytest.approx(1.5)  # two ranks' mean 0: (2 + 4 + 0 + 0) / 4
    restored = RunningMean()
    restored.load_state_dict(running.state_dict())
    assert restored.update(10.0) == running.update(10.0)


def test_bco_term_with_a_shift_matches_its_formula():
    beta, delta = 0.1, 0.3
    token_logps = torch.tensor([[-1.0, -2.0], [-3.0, -0.5]])  # chosen row, rejected row
    mask = torch.ones_like(token_logps)
    reference = torch.tensor([-4.0, -2.0])
    settings = PreferenceLossSettings(beta=beta, loss_types=["bco_pair"], loss_weights=[1.0])
    got = float(preference_loss(token_logps, mask, reference, settings, delta).loss)
    r_c, r_r = beta * (-3.0 + 4.0), beta * (-3.5 + 2.0)
    expected = -math.log(1 / (1 + math.exp(-(r_c - delta)))) - math.log(1 / (1 + math.exp(r_r - delta)))
    assert got == pytest.approx(expected, rel=1e-6)


def test_loss_settings_are_checked():
    bad = [
        ["mpo.loss_types=[dpo]"],
        ["mpo.loss_weights=[1.0]"],
        ["mpo.beta=0"],
    ]
    for overrides in bad:
        config = mpo.load_config(None, overrides)
        with pytest.raises(ConfigError, match="mpo"):
            from internvl.train.preference import check_loss_settings

            check_loss_settings(config.mpo)


# ---------------------------------------------------------------------------------------- the recipe


def test_recipe_caches_the_reference_learns_the_preference_resumes_and_exports(model_dir, tmp_path):
    meta = write_pairs(tmp_path / "data", colour_pairs())
    run = tmp_path / "run"
    result = mpo.run(recipe(model_dir, meta, run))
    assert result["step"] == 8
    cache = json.loads((run / "reference_logps.json").read_text())
    assert len(cache) == 4 and all(len(v) == 2 and v[0] < 0 and v[1] < 0 for v in cache.values())
    records = read_metrics(run)
    for key in ("loss_sigmoid", "loss_bco_pair", "loss_sft", "rewards_margin", "rewards_accuracy", "bco_delta"):
        assert key in records[0]
    # Step 1 trains at lr 0 (warm-up): the policy is still the reference, so every reward is 0 exactly
    # as far as float32 goes: the cache holds this model's own sums.
    assert abs(records[0]["rewards_margin"]) < 1e-4 and abs(records[1]["rewards_margin"]) < 1e-4
    assert records[0]["loss_sigmoid"] == pytest.approx(math.log(2), abs=1e-4)
    late = records[-3:]
    assert all(r["rewards_margin"] > 0.5 for r in late), [r["rewards_margin"] for r in records]
    assert all(r["rewards_accuracy"] == 1.0 for r in late)

    # Resume from step 4 gives the same last step as the uninterrupted run.
    resumed = tmp_path / "resumed"
    mpo.run(recipe(model_dir, meta, resumed, "train.stop_at_step=4"))
    mpo.run(recipe(model_dir, meta, resumed))
    again = read_metrics(resumed)
    assert again[-1]["step"] == 8
    assert again[-1]["loss"] == pytest.approx(records[-1]["loss"], rel=1e-5)
    assert again[-1]["bco_delta"] == pytest.approx(records[-1]["bco_delta"], rel=1e-6)

    out = export_model(run, tmp_path / "exported")
    model = load_model(out)
    assert (out / "tokenizer.json").is_file() and model.config.text.num_layers == 2


def test_recipe_trains_lora_adapters_only(model_dir, tmp_path):
    meta = write_pairs(tmp_path / "data", colour_pairs())
    run = tmp_path / "run"
    overrides = ("lora.language_rank=4", "freeze.vision=true", "freeze.projector=true", "train.max_steps=3")
    mpo.run(recipe(model_dir, meta, run, *overrides, "optim.lr=1e-3"))
    records = read_metrics(run)
    assert len(records) == 3 and all(math.isfinite(r["loss"]) for r in records)
    from safetensors.torch import load_file

    saved = load_file(str(run / "checkpoints" / "step-000003" / "model.safetensors"))
    assert saved and all("lora" in name for name in saved)


def test_recipe_refuses_sft_data_and_names_the_source(model_dir, tmp_path):
    config = recipe(
        model_dir, tmp_path / "meta.json", tmp_path / "run", "data.source=internvl.data.loader:packed_batches"
    )
    with pytest.raises(ConfigError, match="internvl.data.preference:pair_batches"):
        mpo.validate(config)
