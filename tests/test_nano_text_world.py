"""Stage 1b's text world (internvl.nano.text_world): each picture's description in the picture's place, the
picture's questions after it, ready for the SFT recipe (which reads it as text-only samples)."""

from __future__ import annotations

import json

import pytest

from internvl.data.world.describe import PROMPT
from internvl.data.world.export import export_sft
from internvl.errors import InputError
from internvl.nano.text_world import LM_PROMPT, export_text, lm_conversation, strip_media, text_conversation


def test_media_lines_are_removed():
    assert strip_media("<image>\nWhat colour?") == "What colour?"
    assert strip_media("Image-1: <image>\nImage-2: <image>\nWhich image?") == "Which image?"
    assert strip_media("<video>\nWhat moves?") == "What moves?"
    assert strip_media("Frame1: <image>\nFrame2: <image>\nWhat moves?") == "What moves?"


def test_the_description_replaces_the_picture_and_its_turn_is_dropped():
    record = {
        "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the circle?"},
            {"from": "gpt", "value": "red"},
            {"from": "human", "value": "How many squares?"},
            {"from": "gpt", "value": "0"},
            {"from": "human", "value": PROMPT},
            {"from": "gpt", "value": "large red circle at the centre"},
        ]
    }
    assert text_conversation(record) == [
        {"from": "human", "value": "Picture: large red circle at the centre\nWhat colour is the circle?"},
        {"from": "gpt", "value": "red"},
        {"from": "human", "value": "How many squares?"},
        {"from": "gpt", "value": "0"},
    ]
    assert text_conversation({"conversations": record["conversations"][:4]}) is None  # no description
    assert lm_conversation(record) == [
        {"from": "human", "value": LM_PROMPT},
        {
            "from": "gpt",
            "value": "Picture: large red circle at the centre\n\nQuestion: What colour is the circle?\nAnswer: red"
            "\n\nQuestion: How many squares?\nAnswer: 0",
        },
    ]


def test_export_from_a_world_folder(tmp_path):
    export_sft(tmp_path / "world", 20, questions_per_image=2, describe=True, progress=False)
    meta = json.loads(export_text(tmp_path / "world", tmp_path / "text").read_text())["world_text"]
    lines = [json.loads(line) for line in open(meta["annotation"])]
    assert 0 < len(lines) == meta["length"] <= 20
    for line in lines:
        turns = line["conversations"]
        assert "image" not in line and "video" not in line
        assert turns[0]["value"].startswith("Picture: ")
        assert not any("<image>" in t["value"] or "<video>" in t["value"] or t["value"] == PROMPT for t in turns)
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)


def test_lm_export_has_one_supervised_turn_per_picture(tmp_path):
    export_sft(tmp_path / "world", 6, questions_per_image=2, describe=True, progress=False)
    meta = json.loads(export_text(tmp_path / "world", tmp_path / "lm", lm=True).read_text())["world_text_lm"]
    for line in map(json.loads, open(meta["annotation"])):
        human, gpt = line["conversations"]
        assert human["value"] == LM_PROMPT and gpt["value"].startswith("Picture: ") and "Question: " in gpt["value"]


def test_a_world_without_descriptions_is_refused(tmp_path):
    export_sft(tmp_path / "world", 4, progress=False)
    with pytest.raises(InputError, match="--describe"):
        export_text(tmp_path / "world", tmp_path / "text")
