"""Stage 1 of the nano recipe, vision pre-training: per-patch labels from what the world drew (objects
and their centres, detail items, texts, chart bars), tiled like SFT tiles, train-split scenes only,
batches that are a pure function of the step, heads that learn, an exact resume, and an export that
`nano.init --vision` starts from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from internvl.config import VisionConfig
from internvl.data.world.families.charts import bar_x, value_y
from internvl.data.world.splits import split_of
from internvl.data.world.vocab import COLOUR_NAMES, SHAPES, SIZE_NAMES, size_name
from internvl.model.vit import InternViT
from internvl.nano import vision_pretrain
from internvl.nano.vision_pretrain import (
    HEADS,
    IGNORE,
    SCENE_FAMILIES,
    PatchHeads,
    batch_at,
    draw_scene,
    label_scene,
    load_encoder,
    patch_loss,
    tile_scene,
)
from internvl.weights import load_model

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
    assert labels["item"][centre] == labels["character"][centre] == labels["bar"][centre] == 0  # an object is neither
    assert labels["centre"][8, 8] == 1 and labels["centre"].sum() == 1  # (224, 224) lies in patch (8, 8) only
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
    for head in ("shape", "size", "item", "character", "bar"):
        assert set(np.unique(thumbnail[head])) <= {0, IGNORE}
    clutter = scene.content["clutter"]
    assert sum(int(tile["centre"].sum()) for tile in labels[:-1]) == len(clutter)  # each centre in one native tile
    assert int(thumbnail["centre"].sum()) <= len(clutter)  # and in the thumbnail (two may share a patch)


def test_reading_patches_are_labelled_with_their_characters():
    content = {"items": [{"shown": "Ab7", "size": 56, "x": 100, "y": 200, "colour": "red"}]}
    _, (labels,) = labels_of("reading", content, Image.new("RGB", (448, 448)))
    found = {HEADS["character"][c - 1] for c in np.unique(labels["character"]) if c > 0}
    assert found == {"a", "b", "7"}  # upper case is read as its letter
    assert set(np.unique(labels["colour"])) == {0, 1 + COLOUR_NAMES.index("red")}
    assert labels["character"][:, :3].max() == 0  # nothing left of the text (x < 100)


@pytest.mark.parametrize(
    "radius, name",
    [
        (14, "small"),
        (19, "small"),
        (26, "medium"),
        (34, "medium"),
        (46, "large"),
        (58, "large"),
        (22, "small"),
        (40, "medium"),
    ],
)
def test_size_name_picks_the_nearest_size_class(radius, name):
    assert size_name(radius) == name


def test_chart_bars_are_labelled_with_their_value_and_colour_and_labels_with_their_letters():
    content = {
        "labels": ["owls", "pigs", "rams"],
        "values": [9, 3, 6],
        "colours": ["red", "blue", "green"],
        "annotated": False,
        "title": "",
    }
    _, (labels,) = labels_of("charts", content, Image.new("RGB", (448, 448)))
    for i, (value, colour) in enumerate(zip(content["values"], content["colours"])):
        left, right = bar_x(i, 3)
        row, col = int((value_y(value) + 392) / 2) // 28, int((left + right) / 2) // 28  # middle of the bar
        assert labels["bar"][row, col] == value
        assert labels["colour"][row, col] == 1 + COLOUR_NAMES.index(colour)
    found = {HEADS["character"][c - 1] for c in np.unique(labels["character"]) if c > 0}
    # one label per patch: a 28 px patch over a 15 px label holds 2-3 letters and is labelled with the one
    # covering most of it; every label and the tick column still name some of theirs
    assert all(set(word) & found for word in content["labels"]) and len(set("0246810") & found) >= 3
    assert labels["shape"].max() == 0 and labels["centre"].max() == 0


def test_a_family_without_labels_is_refused_by_name():
    with pytest.raises(ValueError, match="no labels for family 'video'"):
        label_scene("video", {}, Image.new("RGB", (448, 448)))


def test_scenes_come_from_the_asked_split_and_every_labelled_family(monkeypatch):
    seen = []
    real = vision_pretrain.label_scene
    monkeypatch.setattr(
        vision_pretrain,
        "label_scene",
        lambda family, content, image: seen.append((family, content)) or real(family, content, image),
    )
    rng = np.random.default_rng(3)
    for _ in range(60):
        draw_scene(rng, "train")
    assert {family for family, _ in seen} == set(SCENE_FAMILIES)
    assert all(split_of(content) == "train" for _, content in seen)
    seen.clear()
    draw_scene(rng, "val")
    assert split_of(seen[0][1]) == "val"


def test_a_batch_is_a_pure_function_of_seed_and_step():
    a, b, c = batch_at(0, 5, 4, patch=56), batch_at(0, 5, 4, patch=56), batch_at(0, 6, 4, patch=56)
    assert len(a.pixels) >= 4 and a.pictures >= 1
    assert torch.equal(a.pixels, b.pixels) and all(torch.equal(a.labels[h], b.labels[h]) for h in HEADS)
    assert a.pixels.shape != c.pixels.shape or not torch.equal(a.pixels, c.pixels)


def tiny_encoder() -> VisionConfig:
    """448 px tiles with 56 px patches (an 8x8 grid) keep the stage's tests fast."""
    return VisionConfig(
        hidden_size=48,
        num_layers=1,
        num_heads=2,
        intermediate_size=96,
        image_size=448,
        patch_size=56,
        qkv_bias=True,
        qk_norm=False,
        norm_type="layer_norm",
    )


def test_the_heads_fit_a_batch():
    torch.manual_seed(0)
    vision, heads = InternViT(tiny_encoder()), PatchHeads(48)
    optimizer = torch.optim.AdamW([*vision.parameters(), *heads.parameters()], lr=1e-3)
    batch = batch_at(0, 0, 6, patch=56)  # one batch again and again: the loss must fall far
    losses = []
    for _ in range(30):
        loss, accuracy = patch_loss(vision, heads, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])
    assert accuracy["colour"] > 0.5  # on the patches with an object (from about 0.1 at random)


def stage_args(out: Path, *more: str) -> list[str]:
    recipe = Path(__file__).parents[1] / "configs" / "nano_vision.yaml"
    shape = [f"encoder.{k}={v}" for k, v in vars(tiny_encoder()).items()]
    return [
        str(recipe),
        f"output_dir={out}",
        *shape,
        "batch_size=4",
        "workers=0",
        "progress_bar=false",
        "eval_tiles=4",
        "warmup_steps=1",
        *more,
    ]


def test_the_stage_writes_a_curve_and_an_encoder_and_resumes_exactly(tmp_path, capsys):
    vision_pretrain.main(stage_args(tmp_path / "straight", "steps=4", "eval_every=2", "checkpoint_every=2"))
    assert "accuracy on val patches: colour" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert "val_colour" in records[0] and "val_colour" in records[2] and "val_colour" not in records[1]
    assert records[-1]["pictures"] >= 4 and (tmp_path / "straight" / "curve.png").is_file()

    vision_pretrain.main(stage_args(tmp_path / "resumed", "steps=4", "stop_at_step=2", "eval_every=0"))
    vision_pretrain.main(stage_args(tmp_path / "resumed", "steps=4", "eval_every=0"))
    assert "resuming from" in capsys.readouterr().err
    straight, resumed = (load_file(str(tmp_path / run / "vision.safetensors")) for run in ("straight", "resumed"))
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    shape, weights = load_encoder(tmp_path / "straight" / "vision.safetensors")
    assert shape == tiny_encoder() and set(weights) == set(InternViT(shape).state_dict())


def test_nano_init_starts_from_the_exported_encoder(tmp_path):
    from internvl.data.world import export_sft
    from internvl.nano.init import init_nano

    vision_pretrain.main(stage_args(tmp_path / "stage", "steps=1", "eval_every=0"))
    export_sft(tmp_path / "world", 8, split="train", families=["recognition"], progress=False)
    init = init_nano(
        tmp_path / "world", tmp_path / "init", vocab_size=300, vision=tmp_path / "stage" / "vision.safetensors"
    )
    model = load_model(init)
    assert model.config.vision.patch_size == 56
    _, weights = load_encoder(tmp_path / "stage" / "vision.safetensors")
    assert all(torch.equal(model.vision.state_dict()[k], v) for k, v in weights.items())


def test_bad_input_ends_in_one_line(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as stop:
        vision_pretrain.main([str(tmp_path / "missing.yaml")])
    assert stop.value.code == 2 and "missing.yaml: no such recipe file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        vision_pretrain.main(stage_args(tmp_path / "x", "steps=0"))
    assert stop.value.code == 2 and "steps and batch_size must be at least 1" in capsys.readouterr().err

    from internvl.nano import init

    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "init",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--vision",
            str(tmp_path / "bad.safetensors"),
        ],
    )
    with pytest.raises(SystemExit) as stop:
        init.main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "bad.safetensors: not an encoder" in err and err.count("\n") == 1


def test_bf16_precision_computes_in_bf16_and_keeps_fp32_weights(tmp_path):
    for precision in ("fp32", "bf16"):
        vision_pretrain.main(stage_args(tmp_path / precision, "steps=2", "eval_every=0", f"precision={precision}"))
    full, mixed = (load_file(str(tmp_path / run / "vision.safetensors")) for run in ("fp32", "bf16"))
    assert all(v.dtype == torch.float32 for v in mixed.values())
    gaps = [float((full[k] - mixed[k]).abs().max()) for k in full]
    assert 0 < max(gaps) < 1e-2  # the same step, rounded differently


def test_the_committed_encoder_asset_loads_as_a_nano_encoder():
    """src/internvl/assets/nano-vision.safetensors: stage 1's output, the starting point of
    `train_nano.sh --vision-asset` (at most 10 MB, bf16, the recipe's encoder shape)."""
    from internvl.settings import load_settings

    asset = Path(vision_pretrain.__file__).parents[1] / "assets" / "nano-vision.safetensors"
    assert asset.stat().st_size <= 10 * 2**20
    shape, weights = load_encoder(asset)
    recipe = load_settings(
        vision_pretrain.VisionPretrainSettings, Path(__file__).parents[1] / "configs" / "nano_vision.yaml"
    )
    assert shape == recipe.encoder and {v.dtype for v in weights.values()} == {torch.bfloat16}
    InternViT(shape).load_state_dict(weights)  # strict: every tensor present, none extra
