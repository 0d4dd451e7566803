"""Shared pieces of the training tests (no tests here): a tiny model folder and a tiny recipe.

The model is built from our own config (not transformers) because these tests check the training
loop, not parity: 56-pixel tiles give 4 <IMG_CONTEXT> tokens per tile, which keeps every step cheap.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from internvl.config import InternVLConfig, TextConfig, VisionConfig
from internvl.model.internvl import InternVL
from internvl.train.sft import SFTSettings, load_config
from internvl.weights import save_model

IMAGE_TOKEN_ID = 127


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread while a training test module runs: the tiny models gain nothing from more, and on
    a busy 2-core machine OpenMP barriers made each step 10-50x slower (measured: 0.1-1 s vs 0.01-0.02 s).
    Imported by each test_train_* module, so it applies to those modules only."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(family: str = "qwen2", tie: bool = False) -> InternVLConfig:
    vision = VisionConfig(
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        image_size=56,
        patch_size=14,
        qkv_bias=True,
        qk_norm=False,
        norm_type="layer_norm",
    )
    extra: dict = {}
    if family == "qwen3_moe":
        extra = dict(
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            norm_topk_prob=True,
            mlp_only_layers=[1],
            router_aux_loss_coef=0.01,
            qk_norm=True,
            head_dim=16,
        )
    text = TextConfig(
        family=family,
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        rope_theta=10000.0,
        attention_bias=family == "qwen2",
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        **extra,
    )
    return InternVLConfig(vision=vision, text=text, image_token_id=IMAGE_TOKEN_ID)


def tiny_model_folder(folder: Path, family: str = "qwen2", seed: int = 0, tie: bool = False) -> Path:
    """A random tiny model saved in the hf layout (which records image_token_id)."""
    torch.manual_seed(seed)
    model = InternVL(tiny_config(family, tie))
    with torch.no_grad():  # larger, non-trivial weights so that training moves the loss visibly
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.08)
    model.image_token_id = IMAGE_TOKEN_ID
    save_model(model, folder, layout="hf")
    return folder


def tiny_recipe_settings(model_dir: Path, run_dir: Path, steps: int) -> list[str]:
    """Settings of a recipe that runs a few steps of synthetic packed data in well under a second per step."""
    return [
        f"output_dir={run_dir}",
        f"model.path={model_dir}",
        "data.source=synthetic",
        "data.options={rows: 2, seq_len: 64, samples_per_row: 2, tiles_per_row: 2, padding: 3, dummy_tiles: 1}",
        f"train.max_steps={steps}",
        "train.precision=fp32",
        "train.device=cpu",
        "train.loss_chunk_size=16",
        "optim.lr=3e-3",
        "optim.warmup_steps=1",
        "checkpoint.every_steps=2",
        "log.progress_bar=false",
        "log.plot=false",
    ]


def tiny_recipe(model_dir: Path, run_dir: Path, *overrides: str, steps: int = 4) -> SFTSettings:
    """`tiny_recipe_settings` as an SFT recipe."""
    base = tiny_recipe_settings(model_dir, run_dir, steps)
    return load_config(None, base + list(overrides))


def losses(run_dir: Path) -> list[float]:
    from internvl.train.metrics import read_metrics

    return [r["loss"] for r in read_metrics(run_dir)]
