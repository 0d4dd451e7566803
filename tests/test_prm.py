"""VisualPRM: the step split, the Monte-Carlo step scores and the official conversation format of
`internvl data prm`, plain SFT on its output, and `ProcessRewardModel` scoring (one forward pass for a
batch of candidates) checked against the training-side encoding of the same conversation."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from internvl.data import prm as prm_data
from internvl.data.mmpr import read_questions
from internvl.errors import InputError
from internvl.reward import PRM_SYSTEM_PROMPT, ProcessRewardModel, combine, prm_record, split_steps
from tests.tiny import build_chat_model_folder


def test_split_steps_merges_as_the_official_split_response():
    text = "a\n\nb\n\nc\n\nd\n\ne"
    assert split_steps(text) == ["a", "b", "c", "d", "e"]
    assert split_steps(text, max_steps=2) == ["a\n\nb\n\nc", "d\n\ne"]  # ceil(5 / 2) = 3 pieces per step
    assert split_steps(text, max_steps=5) == ["a", "b", "c", "d", "e"]
    assert split_steps("one step", max_steps=12) == ["one step"]
    # blank pieces are no steps: a PRM turn cannot be empty (a sampled answer made one fail a whole item)
    assert split_steps("a\n\n\n\nb\n\n") == ["a", "b"]
    assert split_steps("") == [""]


def test_prm_record_is_the_official_conversation():
    record = prm_record("Q?", ["s1", "s2"], [True, False], {"image": "a.png"})
    assert record == {
        "image": "a.png",
        "conversations": [
            {"from": "system", "value": PRM_SYSTEM_PROMPT},
            {"from": "human", "value": "### Question:\nQ?\n\n### Solution Process:\ns1"},
            {"from": "gpt", "value": "+"},
            {"from": "human", "value": "s2"},
            {"from": "gpt", "value": "-"},
        ],
    }
    assert PRM_SYSTEM_PROMPT.startswith("You are an advanced AI assistant, designed to serve as a process")


def test_combine():
    assert combine([1.0, 0.5, 0.0]) == 0.5
    assert combine([1.0, 0.5, 0.2], "min") == 0.2
    assert combine([1.0, 0.5, 0.2], "last") == 0.2
    with pytest.raises(InputError, match="unknown way"):
        combine([1.0], "max")  # type: ignore[arg-type]


class FakeChat:
    """Solutions: a right one, one that goes wrong at its second step, and one with no final answer.
    A continuation is right unless its prefix holds the word "wrong"; 3 of 4 continuations are right."""

    solutions = [
        "Look at it.\n\nIt is red.\n\nFinal answer: red",
        "Look at it.\n\nIt is wrong blue.\n\nFinal answer: blue",
        "Look at it.\n\nNo idea.",
    ]

    def __init__(self) -> None:
        self.continued: list[str] = []

    def ask_batch_messages(self, conversations, images, **generation):
        assert generation["temperature"] == 1.0 and generation["top_k"] == 50
        return [self.solutions[k % 3] for k in range(len(conversations))]

    def continue_batch(self, conversations, images, prefixes, **generation):
        self.continued += prefixes
        out = []
        for k, prefix in enumerate(prefixes):
            answer = "blue" if "wrong" in prefix or k % 4 == 3 else "red"
            out.append(f"{prefix}\n\nSo.\n\nFinal answer: {answer}")
        return out


@pytest.fixture()
def questions(tmp_path):
    Image.new("RGB", (112, 112), "red").save(tmp_path / "red.png")
    line = {"image": "red.png", "question": "<image>\nWhat colour is it?", "answer": "red"}
    (tmp_path / "q.jsonl").write_text(json.dumps(line) + "\n" + json.dumps({**line, "question": "Colour?"}) + "\n")
    return read_questions(tmp_path / "q.jsonl")


def test_monte_carlo_scores_labels_and_early_stop(questions, tmp_path):
    settings = prm_data.PRMDataSettings(solutions_per_question=3, continuations_per_step=4)
    chat = FakeChat()
    scored = prm_data.score_question(chat, questions[0], tmp_path, settings, seed=0)
    scores = [[s["score"] for s in solution["steps_with_score"]] for solution in scored]
    assert scores == [[0.75, 0.75, 0.75], [0.75, 0.0, 0.0], [0.75, 0.75]]
    # early stop: after the 0 of solution 2's second step, its third step is not sampled
    assert not any(p.endswith("Final answer: blue") for p in chat.continued)
    assert scored[1]["steps_with_score"][2]["num_mc_total"] == 0

    out = tmp_path / "out"
    samples = prm_data.sample_and_score(chat, questions, tmp_path, out, settings, progress=False)
    again = FakeChat()
    prm_data.sample_and_score(again, questions, tmp_path, out, settings, progress=False)
    assert again.continued == []  # resumed: nothing left to do
    summary = prm_data.build_records(questions, samples, out, tmp_path, settings)
    assert summary["solutions"] == 6 and summary["solutions_last_step_plus"] == 4
    lines = [json.loads(t) for t in (out / "prm.jsonl").read_text().splitlines()]
    labels = [[t["value"] for t in line["conversations"] if t["from"] == "gpt"] for line in lines[:3]]
    assert labels == [["+", "+", "+"], ["+", "-"], ["+", "+"]]  # nothing after the first "-" (early stop)
    first = lines[0]["conversations"][1]["value"]
    assert first.startswith("### Question:\n<image>\nYour task is to answer the question below.")
    orm = [json.loads(t) for t in (out / "orm.jsonl").read_text().splitlines()]
    assert [line["conversations"][-1]["value"] for line in orm[:3]] == ["+", "-", "+"]
    meta = json.loads((out / "meta_prm.json").read_text())
    assert meta["prm"]["length"] == 6 and meta["prm"]["root"] == str(tmp_path.resolve()) + "/"


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    import internvl

    return internvl.load(build_chat_model_folder(tmp_path_factory.mktemp("prm") / "model"), max_tiles=1)


def test_continue_batch_starts_with_the_prefix_and_without_one_is_ask(chat):
    conversation = [{"role": "user", "content": "Say something."}]
    plain = chat.ask_batch_messages([conversation] * 2, [[], []], max_new_tokens=6)
    assert chat.continue_batch([conversation] * 2, [[], []], ["", ""], max_new_tokens=6) == plain
    continued = chat.continue_batch([conversation], [[]], ["The red"], max_new_tokens=4)
    assert continued[0].startswith("The red")


def test_scores_equal_the_training_encoding_of_the_same_conversation(chat, tmp_path):
    """The slots the scorer reads are the positions SFT supervises "+" at, and a batch of candidates
    (padded) scores as each candidate alone."""
    from internvl.data.sft import DatasetSpec, SampleSettings, SupervisedDataset

    Image.new("RGB", (112, 112), "red").save(tmp_path / "red.png")
    prm = ProcessRewardModel.around(chat)
    question = "<image>\nWhat colour is it?"
    candidates = ["It is a picture.\n\nIt is red.\n\nFinal answer: red", "Final answer: blue"]
    batch = prm.step_scores(question, [str(tmp_path / "red.png")], candidates)
    alone = [prm.step_scores(question, [str(tmp_path / "red.png")], [c])[0] for c in candidates]
    assert [len(s) for s in batch] == [3, 1]
    for a, b in zip(batch, alone):
        assert a == pytest.approx(b, abs=1e-5)

    steps = split_steps(candidates[0], 12)
    (tmp_path / "prm.jsonl").write_text(
        json.dumps(prm_record(question, steps, [True] * 3, {"image": "red.png"})) + "\n"
    )
    spec = DatasetSpec(name="prm", root=str(tmp_path) + "/", annotation=str(tmp_path / "prm.jsonl"))
    settings = SampleSettings(num_image_token=chat.model.config.num_image_token, tile_size=112, max_tiles=1)
    sample = SupervisedDataset(spec, chat.tokenizer, settings)[0]
    slots = [t - 1 for t in range(1, len(sample.labels)) if int(sample.labels[t]) == prm.plus_id]
    assert len(slots) == 3
    with torch.no_grad():
        hidden = chat.model(sample.input_ids[None], sample.pixel_values, return_hidden=True)[0]
        logits = chat.model.language.lm_head(hidden[slots]).float()[:, [prm.plus_id, prm.minus_id]]
    expected = torch.softmax(logits, dim=-1)[:, 0].tolist()
    assert batch[0] == pytest.approx(expected, abs=1e-5)
    assert prm.score(question, [str(tmp_path / "red.png")], candidates, "last")[1] == pytest.approx(batch[1][0])


def test_prm_data_command_and_plain_sft_on_it(tmp_path):
    """`internvl data prm` end to end on a tiny model, then `train sft` on its meta: the supervised
    tokens are exactly the "+"/"-" labels and each label's end token."""
    from internvl.cli import main
    from internvl.data.loader import packed_batches
    from internvl.inputs.prompt import IGNORE_INDEX
    from internvl.inputs.tokens import load_tokenizer
    from internvl.weights import read_config

    model = build_chat_model_folder(tmp_path / "model")
    Image.new("RGB", (112, 112), "red").save(tmp_path / "red.png")
    line = {"image": "red.png", "question": "<image>\nWhat colour is it?", "answer": "red"}
    (tmp_path / "q.jsonl").write_text(json.dumps(line) + "\n")
    args = ["data", "prm", "--model", str(model), "--data", str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "out")]
    args += ["--solutions", "2", "--continuations", "2", "--max-new-tokens", "12", "--max-tiles", "1", "--no-progress"]
    assert main(args) == 0
    lines = (tmp_path / "out" / "prm.jsonl").read_text().splitlines()
    assert len(lines) == 2

    tokenizer = load_tokenizer(model)
    config, _ = read_config(model)
    options = {"meta_path": str(tmp_path / "out" / "meta_prm.json"), "tokenizer": str(model), "max_tiles": 1}
    batch = next(iter(packed_batches(options, config, rank=0, world_size=1, seed=0)))
    supervised = batch["labels"][batch["labels"] != IGNORE_INDEX].tolist()
    allowed = {tokenizer.convert_tokens_to_ids(t) for t in ("+", "-", "<|im_end|>")}
    assert supervised and set(supervised) <= allowed
