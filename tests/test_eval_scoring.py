"""Scorers against hand-checked cases (every expected value below was worked out by hand)."""

import pytest

from internvl.eval.scoring import (
    ScoringSettings,
    anls,
    box_iou,
    exact_match,
    extract_choice,
    extract_final_answer,
    extract_number,
    extract_yes_no,
    find_final_answer,
    levenshtein,
    mcq_score,
    normalize_text,
    numeric_score,
    parse_boxes,
    parse_number,
    score_answer,
)

OPTIONS = {"A": "cat", "B": "dog", "C": "bird", "D": "hot dog"}


# --- final answer -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, expected",
    [
        ("The answer is (B).", "(B)"),
        ("Answer: D", "D"),
        ("**Answer:** C", "C"),
        ("Reasoning...\nFinal answer: 42 cm.\n", "42 cm"),
        ("Final Answer:\n\nParis", "Paris"),
        ("so x = \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("Answer: 3. Then: final answer: 4", "4"),  # the last marker counts
        ("<think>the answer is A</think>\nThe answer is B", "B"),
        ("答案：C", "C"),
        ("It is a dog.", None),
        ("I cannot answer this", None),  # "answer" without ":" or "is" is no marker
    ],
)
def test_find_final_answer(response, expected):
    assert find_final_answer(response) == expected


def test_extract_final_answer_without_marker_is_the_stripped_response():
    assert extract_final_answer("  a dog \n") == "a dog"
    assert extract_final_answer("<think>hmm</think>  yes") == "yes"


# --- normalisation and exact match ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Paris.", "paris"),
        ("  The Eiffel   Tower! ", "eiffel tower"),
        ("1,000", "1000"),
        ("3.5", "3.5"),
        ("-5", "-5"),
        ("45%", "45%"),
        ("3/4", "3/4"),
        ("two", "2"),
        ("don't", "dont"),
        ("A", "a"),  # a lone article stays: the answer "A" is not the empty string
        ("e-mail", "e mail"),
    ],
)
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    "prediction, answers, expected",
    [
        ("Paris.", ["Paris"], 1.0),  # trailing punctuation
        ("paris", ["PARIS"], 1.0),
        ("The answer is Paris.", ["Paris"], 1.0),
        ("The Eiffel Tower", ["eiffel tower"], 1.0),
        ("two", ["2"], 1.0),
        ("London", ["Paris", "London"], 1.0),  # any accepted answer
        ("Paris, France", ["Paris"], 0.0),
        ("-5", ["5"], 0.0),
        ("", ["A"], 0.0),
    ],
)
def test_exact_match(prediction, answers, expected):
    assert exact_match(prediction, answers).value == expected


# --- multiple choice ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, expected",
    [
        ("B", "B"),
        ("b", "B"),
        ("(C)", "C"),
        ("C.", "C"),
        ("D)", "D"),
        ("The answer is (B).", "B"),
        ("Answer: D", "D"),
        ("B. dog", "B"),
        ("B. cat", "B"),  # the letter wins over the text after it
        ("(A) cat", "A"),
        ("dog", "B"),  # option text only
        ("Dog.", "B"),
        ("A dog.", "B"),  # "A" is the article here, "dog" the option text
        ("It is a hot dog", "D"),  # "dog" lies inside "hot dog": the longer option wins
        ("I think B", "B"),  # "I" is the pronoun
        ("Option A is right", "A"),
        ("A is correct", "A"),
        ("A is wrong, C is wrong, so the answer is (B).", "B"),  # several letters, one after the marker
        ("the answer is B, not C", "B"),
        ("Final answer: \\boxed{A}", "A"),
        ("<think>maybe A</think>\nC", "C"),
        ("A or B", None),  # several letters, no marker: ambiguous
        ("B is plausible but C fits better", None),
        ("cat or dog", None),  # two option texts
        ("a fish", None),
        ("", None),
        ("E", None),  # not an option
    ],
)
def test_extract_choice(response, expected):
    assert extract_choice(response, OPTIONS) == expected


def test_mcq_score():
    assert mcq_score("The answer is (B).", "B", OPTIONS).value == 1.0
    assert mcq_score("The answer is (B).", "C", OPTIONS).value == 0.0
    assert mcq_score("A or B", "A", OPTIONS).value == 0.0  # ambiguous is wrong
    assert mcq_score("dog", "B", OPTIONS).extracted == "B"


def test_more_than_four_options():
    options = {letter: f"option {letter.lower()}" for letter in "ABCDEFGH"}
    assert extract_choice("(G)", options) == "G"
    assert extract_choice("option f", options) == "F"


# --- yes / no -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, expected",
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("No, there is no dog.", "no"),
        ("There is no dog in the image.", "no"),
        ("Answer: Yes", "yes"),
        ("Maybe", None),
        ("I would say yes and also no", None),
    ],
)
def test_extract_yes_no(response, expected):
    assert extract_yes_no(response) == expected


# --- numbers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("12", 12.0),
        ("12 cm", 12.0),
        ("12cm", 12.0),
        ("$1,200", 1200.0),
        ("1,234.5 kg", 1234.5),
        ("-3.5", -3.5),
        ("−2", -2.0),  # unicode minus
        (".5", 0.5),
        ("3/4", 0.75),
        ("1.5e3", 1500.0),
        ("seven", 7.0),
        ("12.", 12.0),
    ],
)
def test_parse_number(text, value):
    number = parse_number(text)
    assert number is not None and number.value == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "no number here", "3 or 4", "v2"])
def test_parse_number_needs_exactly_one_number(text):
    assert parse_number(text) is None


def test_extract_number_prefers_the_marked_answer_else_the_last_number():
    assert extract_number("There are 3 apples and 2 oranges, so 5 fruits.").value == 5.0
    assert extract_number("Final answer: 12 cm (about 5 inches)").value == 12.0
    assert extract_number("Step 1: 4 + 4 = 8.\nThe answer is 8.").value == 8.0
    assert extract_number("nothing") is None


@pytest.mark.parametrize(
    "prediction, answer, rel_tol, expected",
    [
        ("12 cm", "12", 1e-6, 1.0),  # units
        ("The answer is 42 cm.", "42", 1e-6, 1.0),
        ("1,200", "1200", 1e-6, 1.0),  # thousands comma
        ("45%", "0.45", 1e-6, 1.0),  # percent read as 45 and as 0.45
        ("0.45", "45%", 1e-6, 1.0),
        ("45", "45%", 1e-6, 1.0),
        ("3.1416", "3.14", 1e-6, 0.0),
        ("3.1416", "3.14", 1e-3, 1.0),  # tolerance
        ("104", "100", 0.05, 1.0),  # ChartQA-style 5 %
        ("106", "100", 0.05, 0.0),
        ("3.5", "-3.5", 0.5, 0.0),
        ("two", "2", 1e-6, 1.0),
        ("0", "0", 1e-6, 1.0),
        ("0.0000000001", "0", 1e-6, 1.0),  # absolute tolerance at zero
        ("no idea", "7", 1e-6, 0.0),
        ("12.", "12", 1e-6, 1.0),  # trailing punctuation
    ],
)
def test_numeric_score(prediction, answer, rel_tol, expected):
    assert numeric_score(prediction, [answer], rel_tol=rel_tol).value == expected


def test_numeric_score_falls_back_to_exact_match_for_non_numbers():
    assert numeric_score("Paris", ["Paris"]).value == 1.0
    assert numeric_score("7", ["Paris", "7"]).value == 1.0


def test_per_item_tolerance_overrides_the_config():
    config = ScoringSettings(numeric_rel_tol=0.0)
    assert score_answer("numeric", "104", ["100"], config=config).value == 0.0
    assert score_answer("numeric", "104", ["100"], config=config, tolerance=0.05).value == 1.0


# --- ANLS ---------------------------------------------------------------------------------------------------


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0


@pytest.mark.parametrize(
    "prediction, answers, expected",
    [
        ("Paris", ["Paris"], 1.0),
        ("paris", ["PARIS"], 1.0),  # case-insensitive
        ("  Paris  Texas ", ["paris texas"], 1.0),  # whitespace collapsed
        ("Paris.", ["Paris"], 1 - 1 / 6),  # trailing punctuation costs one edit (standard ANLS)
        ("abcxy", ["abcde"], 1 - 2 / 5),  # NED 0.4 < 0.5: 1 - NED, not NED (docs/evaluation.md#anls)
        ("abef", ["abcd"], 0.0),  # NED 0.5 is not below the threshold
        ("London", ["Paris"], 0.0),
        ("Pari", ["London", "Paris"], 1 - 1 / 5),  # max over accepted answers
        ("The answer is Paris.", ["Paris"], 1.0),  # marked final answer
        ("", ["Paris"], 0.0),
    ],
)
def test_anls(prediction, answers, expected):
    assert anls(prediction, answers).value == pytest.approx(expected)


def test_anls_threshold_is_a_parameter():
    assert anls("abef", ["abcd"], threshold=0.6).value == pytest.approx(0.5)


# --- boxes --------------------------------------------------------------------------------------------------


def test_parse_boxes():
    assert parse_boxes("<ref>dog</ref><box>[[10, 20, 300, 400]]</box>") == [(10, 20, 300, 400)]
    assert parse_boxes("[[1,2,3,4],[5,6,7,8]]") == [(1, 2, 3, 4), (5, 6, 7, 8)]
    assert parse_boxes("[[300, 400, 10, 20]]") == [(10, 20, 300, 400)]  # corners put in order
    assert parse_boxes("[[1.5, 2, 3, 4]]") == [(1.5, 2, 3, 4)]
    assert parse_boxes("no box [1, 2]") == []


def test_box_iou():
    assert box_iou((0, 0, 100, 100), (0, 0, 100, 100)) == 1.0
    assert box_iou((0, 0, 100, 100), (50, 0, 150, 100)) == pytest.approx(5000 / 15000)
    assert box_iou((0, 0, 100, 100), (200, 200, 300, 300)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # degenerate


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("<ref>dog</ref><box>[[0, 0, 100, 100]]</box>", 1.0),
        ("[[0, 0, 100, 50]]", 1.0),  # IoU exactly 0.5 counts
        ("[[50, 0, 150, 100]]", 0.0),  # IoU 1/3
        ("the dog is on the left", 0.0),
    ],
)
def test_iou_score(prediction, expected):
    assert score_answer("iou", prediction, ["[[0, 0, 100, 100]]"]).value == expected


# --- dispatch -------------------------------------------------------------------------------------------------


def test_score_answer_without_ground_truth_is_unscored():
    assert score_answer("exact", "anything", []).value is None


def test_score_answer_rejects_judge_and_unknown_metrics():
    with pytest.raises(ValueError):
        score_answer("judge", "x", ["y"])
    with pytest.raises(ValueError):
        score_answer("bleu", "x", ["y"])
