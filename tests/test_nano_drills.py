"""Option drills (internvl.nano.drills): every choice question of a world export, its answer stated before
the world's prompt and its letter as the target, grouped into text-only conversations for the SFT recipe."""

from __future__ import annotations

import json

import pytest

from internvl.data.world.export import export_sft
from internvl.data.world.sample import LETTERS
from internvl.errors import InputError
from internvl.nano.drills import choice_samples, drill_turn, export_drills


def test_a_drill_states_the_answer_and_targets_its_letter(tmp_path):
    export_sft(tmp_path / "world", 40, questions_per_image=3, progress=False)
    records = [json.loads(line) for line in open(tmp_path / "world" / "train.jsonl")]
    samples = [s for r in records for s in choice_samples(r)]
    assert samples, "40 world pictures with 3 questions each hold some choice questions"
    for sample in samples:
        human, gpt = drill_turn(sample)
        option = sample.options[LETTERS.index(gpt["value"])]
        assert human["value"].startswith(f"The answer is {option}.\n{sample.question}\n")
        assert human["value"].endswith("Answer with the option's letter from the given choices directly.")
        assert "<image>" not in human["value"]


def test_export_groups_turns_into_text_only_conversations(tmp_path):
    export_sft(tmp_path / "world", 40, questions_per_image=3, progress=False)
    meta = json.loads(export_drills(tmp_path / "world", tmp_path / "drills", turns=2).read_text())[
        "world_option_drills"
    ]
    lines = [json.loads(line) for line in open(meta["annotation"])]
    assert 0 < len(lines) == meta["length"]
    for line in lines:
        assert "image" not in line and "video" not in line
        assert [t["from"] for t in line["conversations"]] == ["human", "gpt"] * 2
        assert all(t["value"] in LETTERS for t in line["conversations"][1::2])


def test_a_folder_that_is_not_a_world_export_is_named(tmp_path):
    (tmp_path / "data").mkdir()
    line = {"id": "x", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "A"}]}
    (tmp_path / "data" / "a.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(InputError, match="no 'world' field"):
        export_drills(tmp_path / "data", tmp_path / "out")
    with pytest.raises(InputError, match="--turns"):
        export_drills(tmp_path / "data", tmp_path / "out", turns=0)
