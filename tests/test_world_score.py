"""The world's scorers on hand-checked replies, and step-by-step checking of reasoning."""

from __future__ import annotations

import numpy as np
import pytest

from internvl.data.world import FAMILIES, SCORERS, Sample, check_steps, first_wrong_step, generate_samples, score
from internvl.data.world.families.reasoning import flawed_solution, solve
from internvl.data.world.pairs import rejected_response
from internvl.data.world.sample import solution_text
from internvl.data.world.score import parse_box, parse_number
from internvl.data.world.vocab import COLOUR_NAMES


def make(answer: str, answer_type: str, family: str = "recognition", **fields) -> Sample:
    return Sample(id="t", family=family, split="test", question="q", answer=answer, answer_type=answer_type, **fields)


def check(sample: Sample, right: list[str], wrong: list[str]) -> None:
    for reply in right:
        assert SCORERS[sample.family](reply, sample) == 1.0, reply
    for reply in wrong:
        assert SCORERS[sample.family](reply, sample) == 0.0, reply


def test_every_family_has_a_scorer():
    assert set(SCORERS) == set(FAMILIES)  # the long-context ones (named only) too


def test_numbers():
    check(
        make("3", "number", "counting"),
        right=[
            "3",
            "The answer is 3.",
            "three",
            "There are 3 red circles.",
            "**3**",
            "Final answer: 3",
            "3.0",
            "I count 2 on the left and 1 on the right, so the answer is 3.",
        ],
        wrong=["4", "thirteen", "30", "", "many", "The answer is 4; not 3", "There are 3 circles and 4 squares."],
    )
    check(make("0", "number", "counting"), right=["0", "zero", "none", "There are no triangles."], wrong=["1", "one"])
    check(make("12", "number", "counting"), right=["twelve", "12 stars"], wrong=["1", "2"])
    assert parse_number("1,000 dots") == 1000


def test_closed_words():
    colour = make("red", "word", answer_space=list(COLOUR_NAMES))
    check(
        colour,
        right=["red", "Red.", "It is red.", "The circle is **red**", "reds"],
        wrong=["blue", "red or blue", "reddish", "orange-red", "", "Final answer: pink"],
    )
    size = make("large", "word", answer_space=["small", "medium", "large"])
    check(size, right=["large", "It's big.", "LARGE"], wrong=["medium-sized", "small", "not small but medium"])
    direction = make("right", "word", "video", answer_space=["left", "right", "up", "down"])
    check(
        direction,
        right=["right", "It moves to the right.", "rightwards", "from left to right"],
        wrong=["left", "it goes up and right", "from right to left", "bright"],
    )
    relation = make("below", "word", "spatial", answer_space=["above", "below"])
    check(relation, right=["below", "It is below the square.", "underneath"], wrong=["above", "on top of it"])


def test_text_read_from_the_image():
    word = make("apple", "text", "reading", distractors=["maple", "ample"])
    check(
        word,
        right=["apple", "APPLE", "The word is \u201capple\u201d.", "It says 'apple'"],
        wrong=["apples", "maple", "apple or maple", "pineapple", ""],
    )
    code = make("427", "text", "detail", distractors=["421", "927"])
    check(code, right=["427", "The tag reads 427."], wrong=["4 2 7", "4270", "421", "It is 427 or 421"])


def test_objects_corners_and_images():
    check(
        make("red circle", "object", "video"),
        right=["red circle", "The red circle moves.", "the RED circles"],
        wrong=["red square", "blue circle", "circle", "red circle and blue square"],
    )
    check(
        make("top-left", "corner", "spatial"),
        right=["top-left", "Top left corner", "upper left", "left top"],
        wrong=["top-right", "bottom-left", "top", "left"],
    )
    check(
        make("Image-2", "image", "multi_image", answer_space=["Image-1", "Image-2", "Image-3"]),
        right=["Image-2", "image 2", "2", "The second image.", "In Image-2."],
        wrong=["Image-1", "1", "image 2 and image 3", "twelve", "Image-12"],
    )


def test_multiple_choice():
    mc = make("B", "choice", options=["red", "blue", "green", "yellow"])
    check(
        mc,
        right=[
            "B",
            "B.",
            "(B)",
            "B. blue",
            "b",
            "The answer is B.",
            "Answer: (B)",
            "blue",
            "Option B",
            "Final answer: B",
        ],
        wrong=["A", "A. red", "red", "A red circle", "blue or green", "", "The answer is C."],
    )
    numbers = make("C", "choice", options=["1", "10", "12", "3"])
    check(numbers, right=["C", "12"], wrong=["1", "10", "A"])


def test_boxes():
    box = make("[[100, 100, 300, 300]]", "box", "grounding", ref="blue circle", box=[100, 100, 300, 300])
    check(
        box,
        right=[
            "<ref>blue circle</ref><box>[[100, 100, 300, 300]]</box>",
            "[[110,90,310,305]]",
            "The box is [120, 120, 320, 320].",
        ],
        wrong=["<box>[[300, 300, 500, 500]]</box>", "[[100, 100, 300]]", "top left", "", "[[100, 100, 200, 200]]"],
    )  # IoU 0.25
    assert parse_box("<ref>a</ref><box>[[1, 2, 3, 4]]</box> then [[9, 9, 9, 9]]") == [1, 2, 3, 4]


def test_reasoning_final_answer_and_steps():
    facts = {"values": [3, 5, 8]}
    steps, answer = solve("cards-sum", facts)
    assert steps == ["The cards show 3, 5 and 8.", "3 + 5 = 8.", "8 + 8 = 16."] and answer == 16
    sample = make("16", "number", "reasoning", steps=steps, meta={"task": "cards-sum", "facts": facts})
    reply = solution_text(steps, "16")
    assert score(reply, sample) == 1.0 and check_steps(reply, sample) == [True, True, True]
    assert first_wrong_step(reply, sample) is None
    slipped = "The cards show 3, 5 and 8.\n\n3 + 5 = 9.\n\n9 + 8 = 17.\n\nFinal answer: 17"
    assert score(slipped, sample) == 0.0 and check_steps(slipped, sample) == [True, False, False]
    assert first_wrong_step(slipped, sample) == 1
    reordered = "The cards show 8, 3 and 5.\n\n3 + 5 = 8.\n\n8 + 8 = 16.\n\nFinal answer: 16"
    assert check_steps(reordered, sample) == [True, True, True]
    short = "The cards show 3, 5 and 8.\n\nFinal answer: 16"
    assert score(short, sample) == 1.0 and first_wrong_step(short, sample) == 1  # a missing step counts
    assert score("\\boxed{16}", sample) == 1.0


def test_generated_answers_score_one_and_rejected_answers_score_zero():
    rng = np.random.default_rng(0)
    for split in ("train", "test-ood"):
        for s in generate_samples(120, split, seed=2):
            assert SCORERS[s.family](s.response, s) == 1.0, (s.id, s.response)
            assert SCORERS[s.family](s.answer_text, s) == 1.0 or s.answer_type == "box", (s.id, s.answer_text)
            rejected, wrong_step = rejected_response(s, rng)
            assert SCORERS[s.family](rejected, s) == 0.0, (s.id, rejected)
            if s.steps:
                assert check_steps(s.response, s) == [True] * len(s.steps)
                assert first_wrong_step(rejected, s) == wrong_step


@pytest.mark.parametrize(
    "task,facts",
    [
        ("cards-range", {"values": [3, 9, 5]}),
        ("bars-diff", {"a": "owls", "b": "eels", "va": 8, "vb": 4}),
        ("bars-total", {"a": "owls", "b": "eels", "va": 8, "vb": 4}),
        ("count-sum", {"a": "circle", "b": "star", "na": 1, "nb": 4}),
    ],
)
def test_flawed_solutions_are_wrong_from_their_recorded_step(task, facts):
    steps, answer = solve(task, facts)
    sample = make(str(answer), "number", "reasoning", steps=steps, meta={"task": task, "facts": facts})
    for seed in range(10):
        bad_steps, bad_answer, wrong = flawed_solution(sample, np.random.default_rng(seed))
        assert bad_answer != str(answer) and bad_steps[:wrong] == steps[:wrong] and bad_steps[wrong] != steps[wrong]
        verdicts = check_steps(solution_text(bad_steps, bad_answer), sample)
        assert verdicts[:wrong] == [True] * wrong and not verdicts[wrong]
