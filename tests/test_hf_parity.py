"""Logit parity against transformers' own InternVL implementation (random tiny models, CPU, fp32).

For each backbone and both ViT flavours: build the reference in transformers, save it (hf layout),
load it with internvl, run both on the same two-sample batch (a 3-tile and a 1-tile image, right
padding) and require max |logit difference| <= 1e-4 at every real token.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from internvl.model.internvl import InternVL
from internvl.weights import load_model, save_model
from tests.tiny import build_hf_model, two_sample_batch

TOLERANCE = 1e-4


def reference_logits(hf_model, ids, mask, pixels) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits


def our_logits(model: InternVL, ids, mask, pixels) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, pixels, attention_mask=mask)


def max_diff_on_tokens(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    keep = mask.bool()
    return (a[keep] - b[keep]).abs().max().item()


CASES = [
    ("qwen2", "300m", {}),
    ("qwen2", "6b", {}),
    ("qwen3", "300m", {}),
    ("qwen3", "6b", {}),
    ("qwen3_moe", "300m", {}),
    ("qwen3_moe", "6b", {}),
    ("llama", "300m", {}),
    ("llama", "6b", {}),
    # tied embeddings, and the rope scalings released configs use (dynamic NTK engaged: 800 > 256 positions)
    ("qwen2", "300m", {"tie": True}),
    ("qwen2", "300m", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}, "max_position_embeddings": 256}),
    (
        "llama",
        "300m",
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            }
        },
    ),
]


@pytest.mark.parametrize("family,vit,extra", CASES, ids=[f"{f}-{v}-{'-'.join(e) or 'plain'}" for f, v, e in CASES])
def test_logits_match_transformers(tmp_path, family, vit, extra):
    hf_model = build_hf_model(family, vit, seed=1, **extra)
    hf_model.save_pretrained(tmp_path)
    ids, mask, pixels = two_sample_batch()
    expected = reference_logits(hf_model, ids, mask, pixels)

    model = load_model(tmp_path)
    diff = max_diff_on_tokens(our_logits(model, ids, mask, pixels), expected, mask)
    assert diff <= TOLERANCE, f"{family}/{vit}: max |logit diff| {diff:.2e}"


def fuse_internlm2_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """docs/checkpoints.md#internlm2-wqkv, written independently of internvl.weights: rows grouped per KV head as
    [q_{gG}..q_{gG+G-1}, k_g, v_g]."""
    head_dim = k.shape[0] // num_kv_heads
    group = q.shape[0] // head_dim // num_kv_heads
    q = q.reshape(num_kv_heads, group, head_dim, -1)
    k = k.reshape(num_kv_heads, 1, head_dim, -1)
    v = v.reshape(num_kv_heads, 1, head_dim, -1)
    return torch.cat([q, k, v], dim=1).reshape(-1, q.shape[-1])


def write_internlm2_original(hf_folder, out_folder) -> None:
    """Turn a Llama-backed hf checkpoint into an InternLM2-backed original-layout checkpoint."""
    hf = load_file(str(hf_folder / "model.safetensors"))
    cfg = json.loads((hf_folder / "config.json").read_text())
    text, vision = cfg["text_config"], cfg["vision_config"]
    out: dict[str, torch.Tensor] = {}
    vit_names = [
        ("layernorm_before", "norm1"),
        ("layernorm_after", "norm2"),
        ("lambda_1", "ls1"),
        ("lambda_2", "ls2"),
        ("attention.projection_layer", "attn.proj"),
        ("attention.q_norm", "attn.q_norm"),
        ("attention.k_norm", "attn.k_norm"),
        ("mlp.fc1", "mlp.fc1"),
        ("mlp.fc2", "mlp.fc2"),
    ]
    for key, t in hf.items():
        if key.startswith("vision_tower.encoder.layer."):
            i, rest = key.removeprefix("vision_tower.encoder.layer.").split(".", 1)
            if rest.startswith("attention.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                continue
            for theirs, ours in vit_names:
                if rest.startswith(theirs + ".") or rest == theirs:
                    out[f"vision_model.encoder.layers.{i}.{ours}{rest[len(theirs) :]}"] = t
    for i in range(vision["num_hidden_layers"]):
        p = f"vision_tower.encoder.layer.{i}.attention."
        for s in ("weight", "bias"):
            if p + f"q_proj.{s}" in hf:
                out[f"vision_model.encoder.layers.{i}.attn.qkv.{s}"] = torch.cat(
                    [hf[p + f"{x}_proj.{s}"] for x in "qkv"]
                )
    e = "vision_tower.embeddings."
    out["vision_model.embeddings.class_embedding"] = hf[e + "cls_token"]
    out["vision_model.embeddings.position_embedding"] = hf[e + "position_embeddings"]
    out["vision_model.embeddings.patch_embedding.weight"] = hf[e + "patch_embeddings.projection.weight"]
    out["vision_model.embeddings.patch_embedding.bias"] = hf[e + "patch_embeddings.projection.bias"]
    for theirs, ours in (("layer_norm", "0"), ("linear_1", "1"), ("linear_2", "3")):
        for s in ("weight", "bias"):
            out[f"mlp1.{ours}.{s}"] = hf[f"multi_modal_projector.{theirs}.{s}"]
    lm = "language_model.model."
    out["language_model.model.tok_embeddings.weight"] = hf[lm + "embed_tokens.weight"]
    out["language_model.model.norm.weight"] = hf[lm + "norm.weight"]
    out["language_model.output.weight"] = hf["language_model.lm_head.weight"]
    for i in range(text["num_hidden_layers"]):
        a, b = f"{lm}layers.{i}.", f"language_model.model.layers.{i}."
        out[b + "attention.wqkv.weight"] = fuse_internlm2_wqkv(
            hf[a + "self_attn.q_proj.weight"],
            hf[a + "self_attn.k_proj.weight"],
            hf[a + "self_attn.v_proj.weight"],
            text["num_key_value_heads"],
        )
        out[b + "attention.wo.weight"] = hf[a + "self_attn.o_proj.weight"]
        out[b + "feed_forward.w1.weight"] = hf[a + "mlp.gate_proj.weight"]
        out[b + "feed_forward.w3.weight"] = hf[a + "mlp.up_proj.weight"]
        out[b + "feed_forward.w2.weight"] = hf[a + "mlp.down_proj.weight"]
        out[b + "attention_norm.weight"] = hf[a + "input_layernorm.weight"]
        out[b + "ffn_norm.weight"] = hf[a + "post_attention_layernorm.weight"]
    out_folder.mkdir()
    save_file({k: v.contiguous() for k, v in out.items()}, str(out_folder / "model.safetensors"))
    config = {
        "architectures": ["InternVLChatModel"],
        "model_type": "internvl_chat",
        "ps_version": "v2",
        "downsample_ratio": 0.5,
        "select_layer": -1,
        "template": "internlm2-chat",
        "force_image_size": 448,
        "vision_config": {
            "hidden_size": vision["hidden_size"],
            "num_hidden_layers": vision["num_hidden_layers"],
            "num_attention_heads": vision["num_attention_heads"],
            "intermediate_size": vision["intermediate_size"],
            "image_size": 448,
            "patch_size": 14,
            "qkv_bias": vision["attention_bias"],
            "qk_normalization": vision["use_qk_norm"],
            "norm_type": vision["norm_type"],
            "layer_norm_eps": 1e-6,
        },
        "llm_config": {
            "architectures": ["InternLM2ForCausalLM"],
            "model_type": "internlm2",
            "bias": False,
            "vocab_size": text["vocab_size"],
            "hidden_size": text["hidden_size"],
            "intermediate_size": text["intermediate_size"],
            "num_hidden_layers": text["num_hidden_layers"],
            "num_attention_heads": text["num_attention_heads"],
            "num_key_value_heads": text["num_key_value_heads"],
            "rms_norm_eps": text["rms_norm_eps"],
            "rope_theta": 10000.0,
            "max_position_embeddings": 4096,
            "rope_scaling": None,
        },
    }
    (out_folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("vit", ["300m", "6b"])
def test_internlm2_matches_equivalent_llama(tmp_path, vit):
    # head_dim 32 with 4 query heads and 2 KV heads: two query heads per group, so a wrong grouping shows
    hf_model = build_hf_model("llama", vit, seed=2)
    hf_model.save_pretrained(tmp_path / "hf")
    write_internlm2_original(tmp_path / "hf", tmp_path / "internlm2")
    ids, mask, pixels = two_sample_batch(seed=3)
    expected = reference_logits(hf_model, ids, mask, pixels)

    model = load_model(tmp_path / "internlm2")
    model.image_token_id = hf_model.config.image_token_id
    diff = max_diff_on_tokens(our_logits(model, ids, mask, pixels), expected, mask)
    assert diff <= TOLERANCE, f"internlm2/{vit}: max |logit diff| {diff:.2e}"


def test_internlm2_fused_layout_round_trip(tmp_path):
    hf_model = build_hf_model("llama", "6b", seed=4)
    hf_model.save_pretrained(tmp_path / "hf")
    write_internlm2_original(tmp_path / "hf", tmp_path / "internlm2")
    save_model(load_model(tmp_path / "internlm2"), tmp_path / "again", layout="original")
    before = load_file(str(tmp_path / "internlm2" / "model.safetensors"))
    after = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert saved["llm_config"]["architectures"] == ["InternLM2ForCausalLM"]


def test_our_hf_save_loads_in_transformers(tmp_path):
    """What we write in the hf layout is read by transformers' own class and gives the same logits."""
    from transformers import InternVLForConditionalGeneration

    source = build_hf_model("qwen3", "6b", seed=5)
    source.save_pretrained(tmp_path / "src")
    model = load_model(tmp_path / "src")
    save_model(model, tmp_path / "ours-hf", layout="hf")
    reloaded = InternVLForConditionalGeneration.from_pretrained(tmp_path / "ours-hf").eval()
    ids, mask, pixels = two_sample_batch(seed=6)
    diff = max_diff_on_tokens(reference_logits(reloaded, ids, mask, pixels), our_logits(model, ids, mask, pixels), mask)
    assert diff <= TOLERANCE


def test_internlm2_hf_save_is_llama_in_transformers(tmp_path):
    """An InternLM2 model saved in the hf layout becomes the equivalent Llama that transformers runs."""
    from transformers import InternVLForConditionalGeneration

    hf_model = build_hf_model("llama", "300m", seed=7)
    hf_model.save_pretrained(tmp_path / "hf")
    write_internlm2_original(tmp_path / "hf", tmp_path / "internlm2")
    model = load_model(tmp_path / "internlm2")
    model.image_token_id = hf_model.config.image_token_id
    save_model(model, tmp_path / "as-hf", layout="hf")
    reloaded = InternVLForConditionalGeneration.from_pretrained(tmp_path / "as-hf").eval()
    ids, mask, pixels = two_sample_batch(seed=8)
    diff = max_diff_on_tokens(
        reference_logits(reloaded, ids, mask, pixels), reference_logits(hf_model, ids, mask, pixels), mask
    )
    assert diff <= TOLERANCE


def test_round_trip_hf_original_hf_is_bit_identical(tmp_path):
    hf_model = build_hf_model("qwen3_moe", "6b", seed=9)
    hf_model.save_pretrained(tmp_path / "a")
    save_model(load_model(tmp_path / "a"), tmp_path / "b", layout="original")
    save_model(load_model(tmp_path / "b"), tmp_path / "c", layout="hf")
    first = load_file(str(tmp_path / "a" / "model.safetensors"))
    last = load_file(str(tmp_path / "c" / "model.safetensors"))
    assert first.keys() == last.keys()
    for key in first:
        assert torch.equal(first[key], last[key]), key
