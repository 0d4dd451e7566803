"""The original layout against the official InternVL code's own numbers.

`tests/fixtures/official/` holds tiny random checkpoints written by the official `InternVLChatModel`
(OpenGVLab/InternVL 2410d1db, transformers 4.57.6) and what that code computed from them; see its
README. Features, hidden states and logits must match within 1e-4, argmax and greedy tokens exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from internvl.model.cache import KVCache
from internvl.model.internvl import InternVL
from internvl.weights import load_model

FIXTURES = Path(__file__).parent / "fixtures" / "official"
FAMILIES = ["qwen2-300m", "qwen3-300m", "llama-300m", "internlm2-6b"]
CASES = ["two_images_b1", "one_image_each_b2_right_pad", "text_only_dummy_tile"]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def pixels() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "images" / "pixel_values.safetensors"))


def load_family(family: str) -> tuple[InternVL, dict[str, torch.Tensor]]:
    folder = FIXTURES / family
    model = load_model(folder)
    meta = json.loads((folder / "reference.json").read_text())
    model.image_token_id = meta["special_token_ids"]["img_context"]
    return model, load_file(str(folder / "reference.safetensors"))


@pytest.mark.parametrize("family", FAMILIES)
def test_matches_official_numbers(family, pixels):
    model, ref = load_family(family)
    for case in CASES:
        ids, mask = ref[f"{case}.input_ids"], ref[f"{case}.attention_mask"]
        has_images = case != "text_only_dummy_tile"
        tiles = pixels["two_images.pixel_values"] if has_images else pixels["text_only_dummy_tile.pixel_values"]
        with torch.no_grad():
            features = model.encode_images(tiles)
            hidden = model(ids, tiles if has_images else None, attention_mask=mask, return_hidden=True)
            logits = model.language.lm_head(hidden)
        where = f"{family}/{case}"
        assert (features - ref[f"{case}.image_features"]).abs().max() <= TOLERANCE, where
        real = mask.bool()
        assert (hidden - ref[f"{case}.last_hidden"])[real].abs().max() <= TOLERANCE, where
        positions = ref[f"{case}.logit_positions"]
        assert (logits[:, positions] - ref[f"{case}.logits_at_positions"]).abs().max() <= TOLERANCE, where
        assert (logits.logsumexp(-1) - ref[f"{case}.logits_logsumexp"])[real].abs().max() <= TOLERANCE, where
        assert torch.equal(logits.argmax(-1)[real], ref[f"{case}.logits_argmax"][real]), where


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_match_official(family, pixels):
    """8 greedy tokens, decoded with our KV cache, equal the official repeated-forward tokens."""
    model, ref = load_family(family)
    ids = ref["two_images_b1.input_ids"]
    expected = ref["generate.greedy_tokens"]
    cache = KVCache.for_model(model, batch=1, max_length=ids.shape[1] + expected.shape[1])
    tokens = []
    with torch.no_grad():
        logits = model(ids, pixels["two_images.pixel_values"], cache=cache, last_only=True)
        for _ in range(expected.shape[1]):
            next_token = logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(next_token)
            logits = model(next_token, cache=cache)
    assert torch.equal(torch.cat(tokens, dim=1), expected)
