"""Tiny random InternVL models built with transformers (the independent reference) for parity tests."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 320
IMAGE_TOKEN_ID = 317  # <IMG_CONTEXT>
IMG_START, IMG_END = 315, 316
TOKENS_PER_TILE = 256

VISION_FLAVOURS = {
    # 300M style: LayerNorm, qkv bias, no qk-norm
    "300m": dict(attention_bias=True, use_qk_norm=False, norm_type="layer_norm"),
    # 6B style: RMSNorm, qk-norm across all heads, no qkv bias
    "6b": dict(attention_bias=False, use_qk_norm=True, norm_type="rms_norm"),
}

TEXT_FAMILIES = {
    "qwen2": dict(model_type="qwen2"),
    "qwen3": dict(model_type="qwen3", head_dim=16),
    "qwen3_moe": dict(
        model_type="qwen3_moe",
        head_dim=16,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[1],
    ),
    "llama": dict(model_type="llama", head_dim=32),
}


def hf_config(
    family: str,
    vit: str = "300m",
    tie: bool = False,
    rope_scaling: dict | None = None,
    max_position_embeddings: int = 4096,
    vision_feature_layer: int = -1,
):
    from transformers import InternVLConfig

    text = dict(
        vocab_size=VOCAB,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie,
        rope_theta=10000.0,
    )
    text.update(TEXT_FAMILIES[family])
    if rope_scaling is not None:
        text["rope_scaling"] = rope_scaling
    vision = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=448,
        patch_size=14,
        layer_norm_eps=1e-6,
        **VISION_FLAVOURS[vit],
    )
    return InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_TOKEN_ID,
        downsample_ratio=0.5,
        tie_word_embeddings=tie,
        vision_feature_layer=vision_feature_layer,
    )


def randomize_(model: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """Norm gains and layer scales 1 + N(0, std), every other weight N(0, std): attention is not
    uniform, so position, mask and mapping mistakes show up in the logits. (A larger std, e.g. 0.3,
    gives sharper, more context-dependent next-token distributions: greedy text that loops less.)"""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * std
            is_gain = ("norm" in name and name.endswith("weight")) or "lambda" in name
            param.copy_(1 + noise if is_gain else noise)


def build_hf_model(family: str, vit: str = "300m", seed: int = 0, std: float = 0.05, **config_kwargs):
    from transformers import InternVLForConditionalGeneration

    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(hf_config(family, vit, **config_kwargs)).eval()
    randomize_(model, seed, std)
    return model


def save_hf(model, folder: Path) -> Path:
    model.save_pretrained(folder)
    return folder


def two_sample_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row 0: text, a 3-tile image, text. Row 1: a 1-tile image, text, right padding.

    Returns input_ids (2, T), attention_mask (2, T), pixel_values (4, 3, 448, 448) with row 0's tiles first.
    """
    g = torch.Generator().manual_seed(seed)

    def text(n: int) -> list[int]:
        return torch.randint(0, IMG_START, (n,), generator=g).tolist()

    def image(tiles: int) -> list[int]:
        return [IMG_START] + [IMAGE_TOKEN_ID] * (TOKENS_PER_TILE * tiles) + [IMG_END]

    row0 = text(7) + image(3) + text(12)
    row1 = text(3) + image(1) + text(9)
    length = max(len(row0), len(row1))
    ids = torch.zeros(2, length, dtype=torch.long)
    mask = torch.zeros(2, length, dtype=torch.long)
    for r, row in enumerate((row0, row1)):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    pixels = torch.randn(4, 3, 448, 448, generator=g)
    return ids, mask, pixels


def build_generation_model(family: str, vit: str = "300m", seed: int = 0):
    """A tiny reference for generation tests whose greedy continuations do not collapse into one
    repeated token: weights N(0, 0.3), and for qk-norm backbones (Qwen3) the text q/k norm gains x3, so
    that attention over hundreds of image tokens is not near-uniform (which makes every step alike)."""
    model = build_hf_model(family, vit, seed=seed, std=0.3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("model.language_model.") and (".q_norm." in name or ".k_norm." in name):
                param.mul_(3.0)
    return model


WORDS = (
    "the a red blue green circle square triangle left right up down one two three four is are there how many "
    "what colour yes no image which"
).split()


def build_chat_model_folder(folder: Path, flash: bool = False) -> Path:
    """A tiny random InternVL (112 px tiles) with a small real BPE tokenizer, saved like a release;
    `flash`: with InternVL3.5-Flash's second connector and router (docs/flash.md)."""
    from internvl.config import InternVLConfig, TextConfig, VisionConfig
    from internvl.model.internvl import InternVL
    from internvl.nano.tokenizer import save_tokenizer, train_tokenizer
    from internvl.weights import save_model

    texts = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12)) + "." for i in range(200)]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    save_tokenizer(tokenizer, folder)
    config = InternVLConfig(
        vision=VisionConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, image_size=112),
        text=TextConfig(
            family="qwen2",
            vocab_size=tokenizer.get_vocab_size(),
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            attention_bias=True,
            max_position_embeddings=2048,
        ),
        max_dynamic_patch=4,
        flash=flash,
    )
    torch.manual_seed(0)
    model = InternVL(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3 if p.dim() > 1 else 0.05).add_(1 if p.dim() == 1 else 0)
    save_model(model, folder, layout="original")
    return folder
