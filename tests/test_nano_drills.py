"""Drills (internvl.nano.drills): every choice question of a world export with its answer stated before the
world's prompt and its letter as the target, every reasoning question with its facts stated and its solution
as the target, grouped into text-only conversations for the SFT recipe."""

from __future__ import annotations

import json

import pytest

from internvl.data.world.export import export_sft, line_samples
from internvl.data.world.sample import LETTERS
from internvl.errors import InputError
from internvl.nano.drills import drill_kind, drill_turn, export_drills


def test_a_drill_states_the_answer_and_targets_its_letter(tmp_path):
    export_sft(tmp_path / "world", 40, questions_per_image=3, progress=False)
    records = [json.loads(line) for line in open(tmp_path / "world" / "train.jsonl")]
    samples = [s for r in records for s in line_samples(r) if drill_kind(s) == "option"]
    assert samples, "40 world pictures with 3 questions each hold some choice questions"
    for sample in samples:
        human, gpt = drill_turn(sample)
        option = sample.options[LETTERS.index(gpt["value"])]
        assert human["value"].startswith(f"The answer is {option}.\n{sample.question}\n")
        assert human["value"].endswith("Answer with the option's letter from the given choices directly.")
        assert "<image>" not in human["value"]


def test_a_chain_drill_states_the_facts_and_targets_the_solution(tmp_path):
    export_sft(tmp_path / "world", 60, questions_per_image=3, families=["reasoning"], progress=False)
    records = [json.loads(line) for line in open(tmp_path / "world" / "train.jsonl")]
    samples = [s for r in records for s in line_samples(r) if drill_kind(s) == "chain"]
    assert samples
    for sample in samples:
        human, gpt = drill_turn(sample)
        facts = [step for step in sample.steps if "=" not in step]
        assert facts and human["value"].startswith("Facts: " + " ".join(facts) + "\nYour task is to answer")
        assert gpt["value"] == "\n\n".join([*sample.steps, f"Final answer: {sample.answer}"])


def test_export_groups_turns_into_text_only_conversations(tmp_path):
    export_sft(tmp_path / "world", 40, questions_per_image=3, progress=False)
    drills = export_drills(tmp_path / "world", tmp_path / "drills", turns=2, kinds=("option",))
    meta = json.loads(drills.read_text())["world_drills"]
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
    with pytest.raises(InputError, match="--kinds"):
        export_drills(tmp_path / "data", tmp_path / "out", kinds=("letters",))
