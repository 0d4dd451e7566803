"""Descriptions of whole pictures (the training conversations' describe turn)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from internvl.data.world import export_sft
from internvl.data.world.describe import PROMPT, describe, motion, place
from internvl.data.world.families import FAMILIES, FAMILY_NAMES
from internvl.data.world.generate import generate_conversation


def test_objects_are_described_in_reading_order_with_size_colour_shape_and_place():
    content = {
        "objects": [["square", "blue", 400, 400, 30], ["triangle", "cyan", 84, 216, 54], ["star", "red", 300, 20, 16]],
        "sizes": ["medium", "large", "small"],
    }
    assert describe("recognition", content) == (
        "small red star at the top right; large cyan triangle at the middle left; "
        "medium blue square at the bottom right"
    )
    assert describe("counting", content).startswith("red star at the top right;")  # counting: no sizes


@pytest.mark.parametrize(
    "x, y, name",
    [
        (10, 10, "top left"),
        (224, 224, "centre"),
        (447, 447, "bottom right"),
        (224, 10, "top centre"),
        (10, 300, "bottom left"),
    ],
)
def test_place_is_one_of_nine_regions(x, y, name):
    assert place(x, y, 448, 448) == name


@pytest.mark.parametrize(
    "start, end, words",
    [
        ([100, 100], [200, 110], "moves right"),
        ([100, 100], [100, 20], "moves up"),
        ([100, 100], [103, 98], "stays still"),
    ],
)
def test_motion_words(start, end, words):
    assert motion({"start": start, "end": end}) == words


def test_every_family_describes_its_scenes_or_says_none():
    rng = np.random.default_rng(0)
    for name in FAMILY_NAMES:
        for _ in range(10):
            content = FAMILIES[name].draw(rng, False).content
            text = describe(name, content)
            assert text is None or (isinstance(text, str) and text)
            if "objects" in content and name != "reasoning":
                assert text is not None and text.count(";") == len(content["objects"]) - 1


def test_conversation_ends_with_a_description_turn():
    plain = generate_conversation("spatial", "train", 3, questions=2)
    described = generate_conversation("spatial", "train", 3, questions=2, describe=True)
    assert len(described) == 3
    assert described[:2] == plain  # the questions are unchanged
    turn = described[2]
    assert turn.prompt == PROMPT and turn.answer == describe("spatial", {"objects": plain[0].meta["objects"]})
    assert turn.images == plain[0].images and turn.answer_type == "description"


def test_export_writes_the_description_turn(tmp_path):
    export_sft(tmp_path, 2, families=["recognition"], progress=False, questions_per_image=2, describe=True)
    line = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    values = [turn["value"] for turn in line["conversations"]]
    assert len(values) == 6 and values[0].startswith("<image>\n") and values[4] == PROMPT
    assert " at the " in values[5]
