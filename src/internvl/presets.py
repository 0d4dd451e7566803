"""Named model shapes (gpt-fast style): released dimensions for benchmarks and random-weight tests."""

from __future__ import annotations

from internvl.config import InternVLConfig, TextConfig, VisionConfig


def internvit_300m() -> VisionConfig:
    return VisionConfig(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, qkv_bias=True,
                        qk_norm=False, norm_type="layer_norm")


def internvl3_1b() -> InternVLConfig:
    """InternVL3-1B: InternViT-300M + Qwen2.5-0.5B (dynamic NTK rope scaling, untied head)."""
    text = TextConfig(family="qwen2", vocab_size=151674, hidden_size=896, intermediate_size=4864, num_layers=24,
                      num_heads=14, num_kv_heads=2, rope_theta=1_000_000.0, attention_bias=True,
                      rope_scaling={"rope_type": "dynamic", "factor": 2.0}, max_position_embeddings=32768,
                      tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151645)
    return InternVLConfig(vision=internvit_300m(), text=text, template="internvl2_5", max_dynamic_patch=12,
                          image_token_id=151667)


PRESETS = {"internvl3-1b": internvl3_1b}
