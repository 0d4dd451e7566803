"""Stage 2's warm-up pictures (internvl.nano.warmup): large objects in the world's palette and wording,
written as SFT data the recipe reads, with answers that match what was drawn."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from internvl.data.world.vocab import COLOURS, SHAPES
from internvl.nano.warmup import RADIUS, export_warmup, mix_meta, warmup_scene


def test_warmup_scenes_are_large_and_distinct():
    for k in range(40):
        objs, _ = warmup_scene(np.random.default_rng([7, k]))
        assert 1 <= len(objs) <= 2
        lo, hi = RADIUS[len(objs)]
        assert all(lo <= o.r <= hi for o in objs)
        assert len({o.colour for o in objs}) == len({o.shape for o in objs}) == len(objs)


def test_export_writes_sft_lines_whose_answers_match_the_picture(tmp_path):
    meta = export_warmup(tmp_path / "warm", 6, progress=False)
    entry = json.loads(meta.read_text())["nano_warmup"]
    lines = [json.loads(line) for line in open(entry["annotation"])]
    assert len(lines) == entry["length"] == 6
    for line in lines:
        turns = line["conversations"]
        objects = line["objects"]  # [shape, colour, x, y, r]
        assert turns[0]["value"].startswith("<image>\n") and all("<image>" not in t["value"] for t in turns[1:])
        assert len(turns) == 4 * len(objects)  # colour and shape of every object
        answers = [t["value"] for t in turns if t["from"] == "gpt"]
        assert sorted(answers) == sorted([o[0] for o in objects] + [o[1] for o in objects])
        picture = Image.open(entry["root"] + line["image"]).convert("RGB")
        assert picture.size == (448, 448)
        shape, colour, x, y, _ = objects[0]
        assert shape in SHAPES
        drawn = np.asarray(picture.getpixel((x, y)), dtype=float)  # the centre shows the object's colour
        assert np.abs(drawn - COLOURS[colour]).max() <= 20  # the world's colour jitter is +-14


def test_mix_meta_joins_entries(tmp_path):
    a = export_warmup(tmp_path / "a", 1, progress=False)
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"other": {"annotation": "x.jsonl", "root": "", "repeat_time": 1}}))
    mixed = json.loads(mix_meta(tmp_path / "mix.json", [b, a]).read_text())
    assert list(mixed) == ["other", "nano_warmup"]
