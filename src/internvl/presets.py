"""Named model shapes (gpt-fast style): released dimensions for benchmarks and random-weight tests."""

from __future__ import annotations

from internvl.config import InternVLConfig, TextConfig, VisionConfig


def internvit_300m() -> VisionConfig:
    return VisionConfig(
        hidden_size=1024,
        num_layers=24,
        num_heads=16,
        intermediate_size=4096,
        qkv_bias=True,
        qk_norm=False,
        norm_type="layer_norm",
    )


def internvl3_1b() -> InternVLConfig:
    """InternVL3-1B: InternViT-300M + Qwen2.5-0.5B (dynamic NTK rope scaling, untied head)."""
    text = TextConfig(
        family="qwen2",
        vocab_size=151674,
        hidden_size=896,
        intermediate_size=4864,
        num_layers=24,
        num_heads=14,
        num_kv_heads=2,
        rope_theta=1_000_000.0,
        attention_bias=True,
        rope_scaling={"rope_type": "dynamic", "factor": 2.0},
        max_position_embeddings=32768,
        tie_word_embeddings=False,
        bos_token_id=151643,
        eos_token_id=151645,
    )
    return InternVLConfig(
        vision=internvit_300m(), text=text, template="internvl2_5", max_dynamic_patch=12, image_token_id=151667
    )


def nano_vision() -> VisionConfig:
    """The nano encoder: InternViT 300M style at laptop size. Tiles stay 448 px (the official tiling),
    with 28 px patches: 16x16 patches -> 64 tokens per tile, so CPU training sees 4x fewer tokens than
    14 px patches."""
    return VisionConfig(
        hidden_size=192,
        num_layers=4,
        num_heads=3,
        intermediate_size=768,
        image_size=448,
        patch_size=28,
        qkv_bias=True,
        qk_norm=False,
        norm_type="layer_norm",
    )


def nano(vocab_size: int, vision: VisionConfig | None = None) -> InternVLConfig:
    """The nano InternVL: the released architecture (InternViT 300M style, pixel shuffle v2, mlp1, a
    Qwen2-style decoder) at laptop size; ``vision`` replaces the default encoder shape (a pre-trained
    encoder brings its own, see ``internvl.nano.vision_pretrain``)."""
    text = TextConfig(
        family="qwen2",
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=768,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        attention_bias=True,
        rope_theta=1_000_000.0,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )  # official configs force untied
    return InternVLConfig(
        vision=vision or nano_vision(), text=text, template="internvl2_5", max_dynamic_patch=6, min_dynamic_patch=1
    )


PRESETS = {"internvl3-1b": internvl3_1b}
