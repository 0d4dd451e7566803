"""`merge-lora`: a LoRA run's checkpoint becomes a plain model folder with the LoRA model's outputs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from internvl.model.internvl import InternVL
from internvl.train import checkpoint, lora, sft
from internvl.train.data import SyntheticPackedBatches
from internvl.weights import load_model
from tests.test_train_support import (
    IMAGE_TOKEN_ID,
    single_thread,  # noqa: F401 (fixture: one intra-op thread)
    tiny_config,
    tiny_model_folder,
    tiny_recipe,
)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """Two steps of LoRA on both the language model and the ViT, plus a trained projector, at a high lr."""
    root = tmp_path_factory.mktemp("lora")
    model_dir = tiny_model_folder(root / "model", seed=3)
    run_dir = root / "run"
    sft.run(
        tiny_recipe(
            model_dir,
            run_dir,
            "lora.language_rank=4",
            "lora.vision_rank=2",
            "optim.lr=5e-2",
            "optim.warmup_steps=0",
            steps=2,
        )
    )
    return model_dir, run_dir


def lora_model(model_dir, run_dir) -> InternVL:
    """The trained LoRA model itself, adapters unmerged, in eval mode (no dropout)."""
    model = load_model(model_dir, dtype=torch.float32)
    lora.apply_lora(model, language_rank=4, vision_rank=2)
    weights = load_file(str(checkpoint.latest_checkpoint(run_dir) / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected
    return model.eval()


def outputs(model: InternVL) -> torch.Tensor:
    source = SyntheticPackedBatches(tiny_config(), rows=2, seq_len=48, samples_per_row=2, tiles_per_row=2, seed=9)
    batch = source.make_batch(0)
    with torch.no_grad():
        return model(
            batch["input_ids"],
            batch["pixel_values"],
            position_ids=batch["position_ids"],
            document_ids=batch["document_ids"],
            image_flags=batch["image_flags"],
        )


@pytest.mark.parametrize("layout", ["original", "hf"])
def test_merged_checkpoint_loads_back_with_the_lora_models_outputs(lora_run, tmp_path, layout):
    from internvl.train.cli import main

    model_dir, run_dir = lora_run
    expected = outputs(lora_model(model_dir, run_dir))
    base = outputs(load_model(model_dir).eval())  # the hf layout records image_token_id
    assert (expected - base).abs().max() > 1e-3  # training changed the model: the comparison means something

    out = tmp_path / "merged"
    assert main(["train", "merge-lora", str(run_dir), str(out), "--layout", layout]) == 0
    merged = load_model(out)
    merged.image_token_id = IMAGE_TOKEN_ID  # the original layout keeps it in the tokenizer, not config.json
    assert not any("lora" in name or "base_layer" in name for name, _ in merged.named_parameters())
    assert (outputs(merged.eval()) - expected).abs().max() <= 1e-5


def test_merge_lora_replaces_adapted_layers_with_plain_linears():
    model = InternVL(tiny_config())
    names = lora.apply_lora(model, language_rank=2)
    assert len(names) == 2 * 4 and all(n.startswith("language.layers.") for n in names)
    lora.merge_lora(model)
    assert type(model.language.layers[0].attn.qkv) is torch.nn.Linear  # the model's own layer again, no LoRA wrapper
    assert lora.adapted_modules(model) == []
