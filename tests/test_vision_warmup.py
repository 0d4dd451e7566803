"""The nano vision warm-up: per-patch labels from what the world drew (objects, detail items, text),
tiled like SFT tiles, train-split scenes only, and a warm-up that learns (loss falls) while touching
nothing but the vision encoder."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from internvl.config import InternVLConfig, TextConfig, VisionConfig
from internvl.data.world.splits import split_of
from internvl.data.world.vocab import COLOUR_NAMES, SHAPES, SIZE_NAMES, size_name
from internvl.model.internvl import InternVL
from internvl.nano import vision_warmup
from internvl.nano.vision_warmup import (HEADS, IGNORE, SCENE_FAMILIES, batches, label_scene, tile_scene,
                                         train_scenes, warm_up_vision)

pytestmark = pytest.mark.usefixtures("one_thread")


def labels_of(family: str, content: dict, image: Image.Image) -> tuple[list[Image.Image], list[np.ndarray]]:
    tiles, labels = tile_scene(label_scene(family, content, image), patch=28, max_tiles=6)
    return tiles, [dict(zip(HEADS, lab)) for lab in labels]


def test_object_patches_are_labelled_with_the_object_under_them():
    rows = [["square", "blue", 224, 224, 50]]  # a large square centred on the 448 canvas: side 86 px
    tiles, (labels,) = labels_of("recognition", {"objects": rows}, Image.new("RGB", (448, 448)))
    assert len(tiles) == 1 and {h: v.shape for h, v in labels.items()} == {h: (16, 16) for h in HEADS}
    centre = (7, 7)
    assert labels["colour"][centre] == 1 + COLOUR_NAMES.index("blue")
    assert labels["shape"][centre] == 1 + SHAPES.index("square")
    assert labels["size"][centre] == 1 + SIZE_NAMES.index("large")
    assert labels["item"][centre] == labels["character"][centre] == 0  # an object is neither
    assert labels["colour"][0, 0] == 0 and labels["shape"][15, 15] == 0
    covered = int((labels["colour"] > 0).sum())
    assert 9 <= covered <= 25  # 86 px spans 4-5 patches of 28 px per side, the edge ones partly
    assert (labels["colour"] > 0).sum() == (labels["shape"] > 0).sum() == (labels["size"] > 0).sum()


def test_where_objects_overlap_the_one_drawn_last_wins():
    rows = [["circle", "red", 200, 200, 50], ["star", "green", 200, 200, 30]]
    _, (labels,) = labels_of("recognition", {"objects": rows}, Image.new("RGB", (448, 448)))
    assert labels["colour"][7, 7] == 1 + COLOUR_NAMES.index("green")  # the star is drawn on top
    assert labels["colour"][5, 7] == 1 + COLOUR_NAMES.index("red")  # the circle's rim above the star


def test_detail_items_are_labelled_in_native_tiles_and_only_by_colour_in_the_thumbnail():
    from internvl.data.world.families import FAMILIES

    rng = np.random.default_rng(5)
    scene = FAMILIES["detail"].draw(rng, False)
    while scene.content["items"][0]["kind"] != "pattern":
        scene = FAMILIES["detail"].draw(rng, False)
    width, height = scene.content["canvas"]
    tiles, labels = labels_of("detail", scene.content, FAMILIES["detail"].build(scene, rng).images[0])
    cols = width // 448
    assert len(tiles) == cols * (height // 448) + 1  # native tiles + thumbnail
    for item in scene.content["items"]:
        cx, cy = item["x"] + item["w"] // 2, item["y"] + item["h"] // 2
        tile = labels[(cy // 448) * cols + cx // 448]
        row, col = (cy % 448) // 28, (cx % 448) // 28
        assert tile["item"][row, col] == 1 + HEADS["item"].index(item["pattern"])
        assert tile["colour"][row, col] == 1 + COLOUR_NAMES.index(item["frame"])
    thumbnail = labels[-1]
    assert (thumbnail["colour"] > 0).any()
    for head in ("shape", "size", "item", "character"):
        assert set(np.unique(thumbnail[head])) <= {0, IGNORE}


def test_reading_patches_are_labelled_with_their_characters():
    content = {"items": [{"shown": "Ab7", "size": 56, "x": 100, "y": 200, "colour": "red"}]}
    _, (labels,) = labels_of("reading", content, Image.new("RGB", (448, 448)))
    found = {HEADS["character"][c - 1] for c in np.unique(labels["character"]) if c > 0}
    assert found == {"a", "b", "7"}  # upper case is read as its letter
    assert set(np.unique(labels["colour"])) == {0, 1 + COLOUR_NAMES.index("red")}
    assert labels["character"][:, :3].max() == 0  # nothing left of the text (x < 100)


@pytest.mark.parametrize("radius, name", [(14, "small"), (19, "small"), (26, "medium"), (34, "medium"),
                                          (46, "large"), (58, "large"), (22, "small"), (40, "medium")])
def test_size_name_picks_the_nearest_size_class(radius, name):
    assert size_name(radius) == name


def test_warm_up_scenes_are_train_split_only(monkeypatch):
    from internvl.nano import vision_warmup as module

    seen = []
    monkeypatch.setattr(module, "label_scene", lambda family, content, image: seen.append(content) or family)
    scenes = train_scenes(seed=3)
    families = [next(scenes) for _ in range(2 * len(SCENE_FAMILIES))]
    assert families == [*SCENE_FAMILIES, *SCENE_FAMILIES]
    assert all(split_of(content) == "train" for content in seen)


def small_model() -> InternVL:
    """448 px tiles with 56 px patches (an 8x8 grid) keep the warm-up test fast."""
    vision = VisionConfig(hidden_size=48, num_layers=1, num_heads=2, intermediate_size=96, image_size=448,
                          patch_size=56, qkv_bias=True, qk_norm=False, norm_type="layer_norm")
    text = TextConfig(family="qwen2", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                      num_kv_heads=1, attention_bias=True, max_position_embeddings=128)
    torch.manual_seed(0)
    return InternVL(InternVLConfig(vision=vision, text=text, image_token_id=5))


def test_warm_up_fits_a_batch_and_changes_only_the_vision_encoder():
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = next(batches(6, patch=56, seed=0))  # one batch again and again: the loss must fall far
    history = warm_up_vision(model, steps=30, lr=3e-3, progress=False, source=itertools.repeat(batch))
    assert len(history) == 30
    assert history[-1]["loss"] < 0.3 * history[0]["loss"], (history[0]["loss"], history[-1]["loss"])
    assert history[-1]["colour"] > 0.5  # on the patches with an object (from 0.1 at random)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("vision.") for k in changed)


def test_command_updates_the_checkpoint_in_place_keeping_its_layout(tmp_path, monkeypatch, capsys):
    model = small_model()
    model.save_pretrained(tmp_path, layout="hf")
    (tmp_path / "tokenizer.json").write_text("{}")
    monkeypatch.setattr(sys, "argv", ["warmup", "--model", str(tmp_path), "--steps", "2", "--batch-size", "2"])
    vision_warmup.main()
    assert "vision warm-up: 2 steps" in capsys.readouterr().out
    reloaded = InternVL.from_pretrained(tmp_path)
    assert reloaded.image_token_id == 5  # still the hf layout, which records it
    assert (tmp_path / "tokenizer.json").read_text() == "{}"
    assert not torch.equal(reloaded.vision.embed.patch.weight, model.vision.embed.patch.weight)
    assert torch.equal(reloaded.language.embed.weight, model.language.embed.weight)


def test_a_family_without_labels_is_refused_by_name():
    with pytest.raises(ValueError, match="no labels for family 'charts'"):
        label_scene("charts", {}, Image.new("RGB", (448, 448)))


@pytest.mark.parametrize("argv, message", [(["--steps", "0"], "--steps must be at least 1, got 0"),
                                           ([], "no config.json in the checkpoint folder")])
def test_command_refuses_bad_input_in_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setattr(sys, "argv", ["warmup", "--model", str(tmp_path / "missing"), *argv])
    with pytest.raises(SystemExit) as stop:
        vision_warmup.main()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
