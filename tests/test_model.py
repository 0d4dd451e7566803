"""Model pieces with exact expectations: pixel shuffle order, ViT layer choice, position interpolation."""

from __future__ import annotations

import pytest
import torch

from internvl.model.connector import pixel_shuffle
from internvl.weights import load_model
from tests.tiny import build_hf_model, two_sample_batch


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_pixel_shuffle_index_mapping(version):
    """docs/architecture.md#pixel-shuffle: output cell (i, j) = [x(2i,2j), x(2i,2j+1), x(2i+1,2j), x(2i+1,2j+1)];
    v2 stores it at row-major token 16i+j, v1 at 16j+i."""
    rows = cols = 8
    channels = 3
    x = torch.arange(rows * cols * channels, dtype=torch.float32).reshape(1, rows, cols, channels)
    out = pixel_shuffle(x, 0.5, version).reshape(1, -1, 4 * channels)
    half = rows // 2
    for i in range(half):
        for j in range(half):
            expected = torch.cat(
                [x[0, 2 * i, 2 * j], x[0, 2 * i, 2 * j + 1], x[0, 2 * i + 1, 2 * j], x[0, 2 * i + 1, 2 * j + 1]]
            )
            token = half * i + j if version == "v2" else half * j + i
            assert torch.equal(out[0, token], expected), (i, j)


def test_select_layer_matches_transformers(tmp_path):
    hf_model = build_hf_model("qwen2", "300m", seed=21, vision_feature_layer=-2)
    hf_model.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.config.select_layer == -2
    ids, mask, pixels = two_sample_batch(seed=22)
    with torch.no_grad():
        expected = hf_model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        ours = model(ids, pixels, attention_mask=mask)
    assert (ours - expected)[mask.bool()].abs().max() <= 1e-4


@pytest.mark.parametrize("height,width", [(336, 336), (448, 224), (224, 644)])
def test_position_embedding_interpolation_matches_transformers(tmp_path, height, width):
    hf_model = build_hf_model("qwen2", "6b", seed=23)
    hf_model.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    pixels = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(24))
    with torch.no_grad():
        expected = hf_model.model.vision_tower(pixel_values=pixels).last_hidden_state
        ours = model.vision(pixels)
    assert ours.shape == (2, 1 + (height // 14) * (width // 14), 64)
    assert (ours - expected).abs().max() <= 1e-4


def test_image_token_count_mismatch_is_a_clear_error(tmp_path):
    from internvl import InputError

    hf_model = build_hf_model("qwen2", "300m", seed=25)
    hf_model.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    ids, mask, pixels = two_sample_batch()
    with pytest.raises(
        InputError, match=r"1024 <IMG_CONTEXT> tokens but the images give 768 features \(3 tiles x 256\)"
    ):
        model(ids, pixels[:3], attention_mask=mask)


def test_packed_rows_equal_separate_samples(tmp_path):
    """Two samples packed in one row (document_ids + restarting positions) give each sample's own logits."""
    hf_model = build_hf_model("qwen3", "300m", seed=26)
    hf_model.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    ids, mask, pixels = two_sample_batch(seed=27)
    lengths = mask.sum(1).tolist()
    packed = torch.cat([ids[0, : lengths[0]], ids[1, : lengths[1]]])[None]
    documents = torch.cat([torch.zeros(lengths[0]), torch.ones(lengths[1])]).long()[None]
    positions = torch.cat([torch.arange(lengths[0]), torch.arange(lengths[1])])[None]
    with torch.no_grad():
        separate = model(ids, pixels, attention_mask=mask)
        together = model(packed, pixels, position_ids=positions, document_ids=documents)
    assert (together[0, : lengths[0]] - separate[0, : lengths[0]]).abs().max() <= 1e-4
    assert (together[0, lengths[0] :] - separate[1, : lengths[1]]).abs().max() <= 1e-4


def test_dummy_tiles_are_encoded_but_not_used(tmp_path):
    hf_model = build_hf_model("qwen2", "300m", seed=28)
    hf_model.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    ids, mask, pixels = two_sample_batch(seed=29)
    with_dummy = torch.cat([pixels[:1], torch.zeros(1, 3, 448, 448), pixels[1:]])
    flags = torch.tensor([1, 0, 1, 1, 1])
    plain = model(ids, pixels, attention_mask=mask)
    flagged = model(ids, with_dummy, attention_mask=mask, image_flags=flags)
    assert torch.allclose(plain, flagged, atol=1e-5)
    flagged.sum().backward()
    assert model.vision.embed.patch.weight.grad is not None
