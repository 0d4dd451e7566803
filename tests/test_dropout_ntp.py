"""`internvl data dropout-ntp`: the chosen answer's first half continued without the image becomes the
rejected answer (MMPR's dropout next-token prediction); the pairs train with `internvl train mpo`."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from internvl.data import dropout_ntp
from internvl.errors import InputError
from tests.tiny import build_chat_model_folder


def test_truncate_keeps_the_first_share_of_words_as_the_official_prefix():
    assert dropout_ntp.truncate("one two three four five", 0.5) == "one two"
    assert dropout_ntp.truncate("one two three four", 0.5) == "one two"
    assert dropout_ntp.blind_question("Image-1: <image>\nImage-2: <image>\nWhat differs?") == "What differs?"
    assert dropout_ntp.blind_question("<image>\nWhat is it?") == "What is it?"


class FakeChat:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def continue_batch(self, conversations, images, prefixes, **generation):
        self.calls.append((conversations, images, prefixes, generation))
        return [p + " and something made up" for p in prefixes]


def test_pairs_are_made_blind_resumably_and_in_the_mpo_format(tmp_path):
    lines = [
        {"image": "a.png", "question": "<image>\nDescribe it.", "chosen": "A red circle on a grey ground."},
        {
            "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Blue."}],
            "image": "b.png",
        },
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    questions = dropout_ntp.read_chosen(tmp_path / "in.jsonl")
    chat = FakeChat()
    path = dropout_ntp.make_pairs(chat, questions, tmp_path, tmp_path / "out", batch=1, progress=False, temperature=0.7)
    conversations, images, prefixes, generation = chat.calls[0]
    assert conversations == [[{"role": "user", "content": "Describe it."}]] and images == [[]]
    assert prefixes == ["A red circle"] and generation["temperature"] == 0.7
    pairs = [json.loads(t) for t in path.read_text().splitlines()]
    assert pairs[0] == {
        "image": "a.png",
        "question": "<image>\nDescribe it.",
        "chosen": "A red circle on a grey ground.",
        "rejected": "A red circle and something made up",
        "source": f"{tmp_path / 'in.jsonl'}:1",
    }
    again = FakeChat()
    dropout_ntp.make_pairs(again, questions, tmp_path, tmp_path / "out", progress=False)
    assert again.calls == []  # nothing left to do
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["pairs_dropout_ntp"]["length"] == 2


def test_a_line_without_a_chosen_answer_is_named(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(InputError, match=r"in.jsonl:1: a line needs a string 'question' and 'chosen'"):
        dropout_ntp.read_chosen(tmp_path / "in.jsonl")


def test_the_command_end_to_end_and_mpo_on_its_pairs(tmp_path):
    from internvl.cli import main
    from internvl.train import mpo
    from internvl.train.metrics import read_metrics
    from tests.test_mmpr import tiny_mpo_recipe

    model = build_chat_model_folder(tmp_path / "model")
    Image.new("RGB", (112, 112), "red").save(tmp_path / "red.png")
    line = {"image": "red.png", "question": "<image>\nWhat colour is it?", "chosen": "It is red, all of it."}
    (tmp_path / "in.jsonl").write_text(json.dumps(line) + "\n" + json.dumps({**line, "chosen": "Red it is."}) + "\n")
    out = tmp_path / "out"
    args = ["data", "dropout-ntp", "--model", str(model), "--data", str(tmp_path / "in.jsonl"), "--out", str(out)]
    assert main([*args, "--max-new-tokens", "6", "--no-progress"]) == 0
    pairs = [json.loads(t) for t in (out / dropout_ntp.PAIRS_FILE).read_text().splitlines()]
    assert [p["rejected"].startswith(p["chosen"].split(" ")[0]) for p in pairs] == [True, True]
    config = tiny_mpo_recipe(model, out / "meta.json", tmp_path / "run", steps=1)
    mpo.run(config)
    assert len(read_metrics(tmp_path / "run")) == 1


@pytest.mark.parametrize(
    "flags,message",
    [
        (["dropout-ntp", "--start-ratio", "1.5"], "--start-ratio must be between 0 and 1, got 1.5"),
        (["dropout-ntp", "--temperature", "0"], "--temperature must be above 0"),
        (["prm", "--solutions", "0"], "--solutions, --continuations and --max-steps must be at least 1"),
        (["prm", "--temperature", "0"], "--temperature must be above 0 (sampling)"),
    ],
)
def test_bad_sampling_flags_are_one_line_before_the_model_loads(tmp_path, capsys, flags, message):
    from internvl.cli import main

    (tmp_path / "in.jsonl").write_text(json.dumps({"question": "q", "chosen": "a", "answer": "a"}) + "\n")
    command, *rest = flags
    args = ["data", command, "--data", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), *rest]
    assert main(args) == 2
    assert message in capsys.readouterr().err
