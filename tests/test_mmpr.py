"""MMPR-style pairs: the `en` answer rules, checking, pairing, resumable sampling, and the pairs training
with `internvl train mpo`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from internvl.data import mmpr
from internvl.errors import InputError
from internvl.train import mpo
from internvl.train.metrics import read_metrics
from tests.test_train_support import single_thread  # noqa: F401 (fixture: one intra-op thread)
from tests.tiny import build_chat_model_folder


def right(answer: str) -> str:
    return f"I look at the picture.\n\nIt shows {answer}.\n\nFinal answer: {answer}"


def test_parse_answer_applies_the_en_rules():
    assert mmpr.parse_answer(right("7")) == "7"
    assert mmpr.parse_answer("Step one.\nStep two.\nFinal Answer: B") == "B"  # the fallback trigger
    assert mmpr.parse_answer("no trigger at all\n\n") is None
    assert mmpr.parse_answer("Final answer: 7") is None  # no rationale, fewer than two line breaks
    assert mmpr.parse_answer("a\nb\nFinal answer: 1\nFinal answer: 2\nFinal answer: 3") is None  # > 2 triggers
    assert mmpr.parse_answer("a\nb\nFinal answer: 1\nFinal answer: 2") == "2"  # the last of two
    assert mmpr.parse_answer("a\nb\nFinal answer: one\nmore") is None  # the answer spans two lines
    assert mmpr.parse_answer("a\nb\nFinal answer:   ") is None


def test_check_answer_by_text_letter_and_number():
    assert mmpr.check_answer("Red", "red")
    assert mmpr.check_answer("red.", "red")
    assert mmpr.check_answer("(B)", "B") and mmpr.check_answer("B. circle", "B")
    assert not mmpr.check_answer("C", "B")
    assert mmpr.check_answer("12.0004", "12") and mmpr.check_answer("1,000", "1000")
    assert not mmpr.check_answer("13", "12")
    assert not mmpr.check_answer("blue", "red")


def question(answer: str = "4", images: list[str] | None = None) -> mmpr.Question:
    return mmpr.Question("q.jsonl:1", images if images is not None else ["a.png"], "<image>\nHow many?", answer)


def test_pairs_follow_the_entailment_filter_cap_and_dedupe():
    responses = [right("4"), right("4"), right("5"), right("14"), "no format", right("6")]
    result = mmpr.pair_question(question(), responses, max_pairs=15, rng=np.random.default_rng(0))
    pairs = {(p["chosen"], p["rejected"]) for p in result.correctness}
    # "4" is inside "14": that wrong answer is not used as a rejected one (official entailment filter)
    assert pairs == {(right("4"), right("5")), (right("4"), right("6"))}
    assert len(result.correctness) == 2  # the duplicate right answer adds no duplicate pair
    assert [(p["chosen"], p["rejected"]) for p in result.format] == [(right("4"), "no format")]
    assert result.status == "mixed"
    line = result.correctness[0]
    assert line["image"] == "a.png" and line["answer_gt"] == "4" and line["source"] == "q.jsonl:1"
    assert line["question"].startswith("<image>\nYour task is to answer the question below.")
    assert line["question"].endswith("Question:\n\nHow many?")
    capped = mmpr.pair_question(
        question(), [right("4")] + [right(str(k)) for k in range(5, 12)], 3, np.random.default_rng(0)
    )
    assert len(capped.correctness) == 3
    assert mmpr.pair_question(question(), [right("5"), "x"], 15, np.random.default_rng(0)).status == "all-wrong"
    assert mmpr.pair_question(question(), [right("4")] * 2, 15, np.random.default_rng(0)).status == "all-right"


def test_cot_question_keeps_one_instruction_and_announces_every_image():
    wrapped = mmpr.cot_question(
        "Image-1: <image>\nImage-2: <image>\nWhich one?\nAnswer the question using a single word or phrase.", 2
    )
    assert wrapped.startswith("Image-1: <image>\nImage-2: <image>\nYour task is")
    assert wrapped.endswith("Question:\n\nWhich one?")
    assert mmpr.cot_question(wrapped, 2) == wrapped  # already wrapped: unchanged


def test_world_questions_use_the_world_scorer(tmp_path):
    from internvl.data.world import generate_sample

    sample = dataclasses.replace(generate_sample("reasoning", "train", 0, 0), images=["x.png"])
    q = mmpr.Question("w:1", ["x.png"], sample.question, sample.answer, sample.to_record())
    result = mmpr.pair_question(q, [right(sample.answer), right("no idea")], 15, np.random.default_rng(0))
    assert result.status == "mixed" and len(result.correctness) == 1


def test_reading_names_the_bad_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps({"image": "a.png", "question": "q", "answer": "a"}) + "\n" + json.dumps({"image": "a.png"}) + "\n"
    )
    with pytest.raises(InputError, match=r"q.jsonl:2: a line needs a string 'question'"):
        mmpr.read_questions(path)
    path.write_text(json.dumps({"video": "v.mp4", "question": "q", "answer": "a"}) + "\n")
    with pytest.raises(InputError, match="q.jsonl:1: video questions"):
        mmpr.read_questions(path)


class FakeChat:
    """Answers every question with a fixed cycle of responses; optionally fails on the k-th call."""

    def __init__(self, responses: list[str], fail_on_call: int | None = None) -> None:
        self.responses, self.fail_on_call, self.calls, self.asked = responses, fail_on_call, 0, []

    def ask_batch(self, prompts, images, **generation):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        assert generation["temperature"] == 0.7 and generation["top_k"] == 50
        self.asked += prompts
        return [self.responses[k % len(self.responses)] for k in range(len(prompts))]


@pytest.fixture()
def colour_questions(tmp_path):
    (tmp_path / "images").mkdir()
    lines = []
    for colour in ("red", "blue", "green"):
        Image.new("RGB", (112, 112), colour).save(tmp_path / "images" / f"{colour}.png")
        lines.append({"image": f"{colour}.png", "question": "<image>\nWhat colour is it?", "answer": "red"})
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return mmpr.read_questions(tmp_path / "q.jsonl"), tmp_path / "images"


def test_sampling_resumes_after_an_interruption_and_pairs_train_with_mpo(colour_questions, tmp_path):
    questions, media = colour_questions
    out = tmp_path / "out"
    settings = mmpr.MMPRSettings(samples_per_question=3, questions_per_batch=1)
    responses = [right("red"), right("blue"), "I do not know."]
    with pytest.raises(KeyboardInterrupt):
        mmpr.sample_responses(FakeChat(responses, fail_on_call=3), questions, media, out, settings, progress=False)
    with (out / "samples.jsonl").open("a") as f:
        f.write('{"key": "torn')  # a line cut by the interruption
    chat = FakeChat(responses)
    samples = mmpr.sample_responses(chat, questions, media, out, settings, progress=False)
    assert chat.calls == 1 and len(chat.asked) == 3  # only the third question is sampled again
    keys = [json.loads(line)["key"] for line in samples.read_text().splitlines()]
    assert keys == [q.key for q in questions]

    summary = mmpr.build_pairs(questions, samples, out, media, settings)
    assert summary == {
        "questions": 3,
        "all-right": 0,
        "all-wrong": 0,
        "mixed": 3,
        "correctness_pairs": 3,
        "format_pairs": 3,
        "samples_per_question": 3,
    }
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta) == {"pairs_correctness", "pairs_format"}

    model = build_chat_model_folder(tmp_path / "model")
    mpo.run(tiny_mpo_recipe(model, out / "meta.json", tmp_path / "run", steps=2))
    assert len(read_metrics(tmp_path / "run")) == 2
    assert len(json.loads((tmp_path / "run" / "reference_logps.json").read_text())) == 6


def tiny_mpo_recipe(model: Path, meta: Path, run: Path, steps: int) -> mpo.MPOSettings:
    """A few MPO steps on pairs named by `meta`, for checking that a pair file trains."""
    return mpo.load_config(
        None,
        [
            f"model.path={model}",
            "data.source=internvl.data.preference:pair_batches",
            f"data.options.meta_path={meta}",
            "data.options.pairs_per_batch=2",
            "data.options.max_tiles=1",
            f"output_dir={run}",
            f"train.max_steps={steps}",
            "train.precision=fp32",
            "log.progress_bar=false",
            "log.plot=false",
            "checkpoint.enabled=false",
        ],
    )
