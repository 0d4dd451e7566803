"""SFT data as evaluation data (internvl.eval.sft_items): a meta JSON or a JSONL of conversations gives one
item per question, asked with the line's images, scored against the gpt turn."""

from __future__ import annotations

import json

import pytest

from internvl.errors import InputError
from internvl.eval.formats import load_items
from tests.inputs_fixtures import make_image


def write_lines(folder, lines):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def conversation(*pairs):
    turns = []
    for question, answer in pairs:
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return turns


def test_meta_json_gives_one_item_per_question(tmp_path):
    make_image(64, 64).save(tmp_path / "a.png")
    annotation = write_lines(
        tmp_path / "data",
        [
            {
                "id": "x",
                "image": "a.png",
                "conversations": conversation(("<image>\nWhat colour?", "red"), ("Shape?", "star")),
            },
            {
                "image": ["a.png", "a.png"],
                "conversations": conversation(("Image-1: <image>\nImage-2: <image>\nSame?", "yes")),
            },
        ],
    )
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"shapes": {"root": str(tmp_path), "annotation": str(annotation)}}))
    items = load_items(meta)
    assert [i.id for i in items] == ["x#0", "x#1", "test-2#0"]
    assert [i.prompt for i in items] == ["What colour?", "Shape?", "Same?"]  # the answerer places the images
    assert [i.answer for i in items] == ["red", "star", "yes"]
    assert [len(i.images) for i in items] == [1, 1, 2]
    assert {i.category for i in items} == {"shapes"} and {i.metric for i in items} == {"exact"}


def test_bare_sft_jsonl_resolves_media_beside_it_and_names_bad_lines(tmp_path):
    make_image(64, 64).save(tmp_path / "a.png")
    good = write_lines(tmp_path, [{"id": 1, "image": "a.png", "conversations": conversation(("<image>\nQ", "A"))}])
    assert [(i.id, i.category) for i in load_items(good)] == [("1#0", "sft")]
    missing = write_lines(tmp_path / "m", [{"image": "nope.png", "conversations": conversation(("Q", "A"))}])
    with pytest.raises(InputError, match=r"test.jsonl:1: image .*nope.png' not found"):
        load_items(missing)
    video = write_lines(tmp_path / "v", [{"video": "c.mp4", "conversations": conversation(("Q", "A"))}])
    with pytest.raises(InputError, match="test.jsonl:1: video lines"):
        load_items(video)
