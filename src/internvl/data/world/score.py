"""Scorers: ``score(prediction, sample) -> float in [0, 1]``, tolerant of ordinary phrasing.

One parser per answer type (see ``sample.ANSWER_TYPES``). Every scorer first keeps the text after
the last ``Final answer:`` (or inside the last ``\\boxed{}``) when there is one, so chain-of-thought
replies score like short ones. Closed-vocabulary answers are right only when the reply names the
answer and no other member of the answer space ("red" is right, "red or blue" is not).

``SCORERS[family]`` is the registry the evaluation harness calls; ``check_steps`` judges the steps
of a reasoning reply one by one.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Sequence

from internvl.data.world.families import ALL_FAMILY_NAMES
from internvl.data.world.render import iou
from internvl.data.world.sample import FINAL_ANSWER, LETTERS, Sample
from internvl.data.world.vocab import COLOUR_NAMES, NUMBER_WORDS, SHAPES
from internvl.inputs.tokens import BOX_START

Scorer = Callable[[str, Sample], float]

SYNONYMS: dict[str, tuple[str, ...]] = {
    "left": ("leftward", "leftwards"),
    "right": ("rightward", "rightwards"),
    "up": ("upward", "upwards"),
    "down": ("downward", "downwards"),
    "above": ("over", "on top of", "higher than"),
    "below": ("under", "beneath", "underneath", "lower than"),
    "large": ("big",),
    "small": ("tiny",),
    "purple": ("violet",),
    "stripes": ("striped", "stripe", "vertical lines"),
    "checkerboard": ("checker", "checkered", "chequered", "checkerboard pattern", "checks"),
    "bricks": ("brick", "brick pattern"),
}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4}
_NUM = r"-?\d+(?:\.\d+)?"


def normalize(text: str) -> str:
    """Lower case, no markdown emphasis or quotes, single spaces, no trailing full stop."""
    t = text.replace("**", "").replace("`", "").replace("\u201c", '"').replace("\u201d", '"').replace("\u2019", "'")
    t = re.sub(r"[\"']", " ", t.lower())
    t = re.sub(r"\s+", " ", t).strip()
    return t.rstrip(".!?;, ").strip()


def final_answer(text: str) -> str:
    """The text after the last ``Final answer:`` (its first line), else the last ``\\boxed{..}``, else all."""
    idx = text.lower().rfind(FINAL_ANSWER.lower())
    if idx >= 0:
        rest = text[idx + len(FINAL_ANSWER) :].strip()
        return rest.splitlines()[0] if rest else ""
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return boxed[-1] if boxed else text


def mentions(text: str, term: str) -> bool:
    """``term`` occurs in ``text`` as whole words (both already normalised)."""
    return re.search(rf"(?<![a-z0-9]){re.escape(term)}(?![a-z0-9])", text) is not None


def _forms(word: str) -> tuple[str, ...]:
    return (word, word + "s", word + "es", *SYNONYMS.get(word, ()))


def named(text: str, space: Sequence[str]) -> set[str]:
    """Members of ``space`` that ``text`` names (plurals and synonyms count)."""
    return {w for w in space if any(mentions(text, f) for f in _forms(w))}


# ---------------------------------------------------------------------------- parsers


def parse_number(text: str) -> float | None:
    """The number a reply gives: after "answer is"/"answer:" if present, else the only or the last one."""
    t = normalize(final_answer(text))
    if t in ("none", "no", "nothing", "zero"):
        return 0.0
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 1,000 -> 1000
    for i, w in enumerate(NUMBER_WORDS):
        t = re.sub(rf"(?<![a-z]){w}(?![a-z])", str(i), t)
    m = list(re.finditer(r"answer(?: is|:)", t))
    tail = t[m[-1].end() :] if m else t
    nums = re.findall(_NUM, tail) or re.findall(_NUM, t)
    if not nums:
        return 0.0 if re.search(r"\b(?:none|no)\b", t) else None  # "there are no triangles"
    return float(nums[0] if m else nums[-1])


def parse_choice(text: str, options: Sequence[str]) -> str | None:
    """The option letter a reply picks: "B", "(B)", "B. red", "The answer is B", or a unique option text."""
    letters = LETTERS[: len(options)]
    t = final_answer(text).replace("**", "").strip()
    patterns = (
        r"^\(?([A-H])\)?[.:)]?$",
        r"^\(?([A-H])[.):]\s",
        r"(?i:answer|option|choice)(?: (?i:is))?\s*:?\s*\(?([A-H])\b",
        r"\(([A-H])\)",
    )
    for p in patterns:
        m = re.search(p, t)
        if m and m.group(1) in letters:
            return m.group(1)
    if len(t) == 1 and t.upper() in letters:
        return t.upper()
    nt = normalize(t)
    hits = [letters[i] for i, opt in enumerate(options) if mentions(nt, normalize(opt))]
    return hits[0] if len(hits) == 1 else None


def parse_box(text: str) -> list[float] | None:
    """The first ``[[x1, y1, x2, y2]]`` (after ``<box>`` if present); single brackets are accepted."""
    start = text.find(BOX_START)
    t = text[start:] if start >= 0 else text
    m = re.search(rf"\[\[?\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]", t)
    return [float(v) for v in m.groups()] if m else None


def parse_image_index(text: str) -> int | None:
    """The one image a reply names: "Image-2", "image 2", "the second image", "2"."""
    t = normalize(final_answer(text))
    found = {int(v) for v in re.findall(r"image[\s\-_#:]*(\d+)", t)}
    found |= {n for w, n in _ORDINALS.items() if mentions(t, w)}
    if not found:
        found = {int(v) for v in re.findall(r"(?<![\d.])\d+(?![\d.])", t)}
    return found.pop() if len(found) == 1 else None


def parse_corner(text: str) -> str | None:
    t = normalize(final_answer(text))
    vertical = {
        v
        for v, words in (("top", ("top", "upper")), ("bottom", ("bottom", "lower")))
        if any(mentions(t, w) for w in words)
    }
    horizontal = {h for h in ("left", "right") if mentions(t, h)}
    if len(vertical) == 1 and len(horizontal) == 1:
        return f"{vertical.pop()}-{horizontal.pop()}"
    return None


# ---------------------------------------------------------------------------- scorers by answer type


def score_number(prediction: str, answer: str) -> float:
    value = parse_number(prediction)
    return float(value is not None and abs(value - float(answer)) < 1e-6)


def score_word(prediction: str, answer: str, space: Sequence[str]) -> float:
    t = normalize(final_answer(prediction))
    t = re.sub(r"\bfrom (?:the )?(?:left|right|top|bottom|up|down)\b", " ", t)  # "from left to right" -> right
    if not space:
        return float(t == normalize(answer) or mentions(t, normalize(answer)))
    return float(named(t, space) == {answer})


def score_text(prediction: str, answer: str, distractors: Sequence[str]) -> float:
    """Read text: the answer as whole words, case-insensitive, and none of the plausible misreadings."""
    t = normalize(final_answer(prediction))
    a = normalize(answer)
    if t == a:
        return 1.0
    return float(mentions(t, a) and not any(mentions(t, normalize(d)) for d in distractors if normalize(d) != a))


def score_object(prediction: str, answer: str) -> float:
    """ "<colour> <shape>": exactly that colour and that shape are named."""
    colour, shape = answer.split(" ", 1)
    t = normalize(final_answer(prediction))
    return float(named(t, COLOUR_NAMES) == {colour} and named(t, SHAPES) == {shape})


def score_box(prediction: str, answer: str) -> float:
    pred, gold = parse_box(prediction), parse_box(answer)
    return float(pred is not None and gold is not None and iou(pred, gold) >= 0.5)


def score(prediction: str, sample: Sample) -> float:
    """Score one reply against one sample by the sample's answer type; never raises on odd text."""
    kind = sample.answer_type
    if kind == "choice":
        return float(parse_choice(prediction, sample.options) == sample.answer)
    if kind == "number":
        return score_number(prediction, sample.answer)
    if kind == "word":
        return score_word(prediction, sample.answer, sample.answer_space)
    if kind == "text":
        return score_text(prediction, sample.answer, sample.distractors)
    if kind == "object":
        return score_object(prediction, sample.answer)
    if kind == "corner":
        return float(parse_corner(prediction) == sample.answer)
    if kind == "image":
        index = parse_image_index(prediction)
        return float(index is not None and f"Image-{index}" == sample.answer)
    if kind == "box":
        return score_box(prediction, sample.answer)
    raise ValueError(f"unknown answer type {kind!r} in sample {sample.id}")


# ---------------------------------------------------------------------------- reasoning steps


def _equations_hold(text: str) -> bool:
    for a, op, b, c in re.findall(r"(-?\d+)\s*([+\-*x\u00d7])\s*(-?\d+)\s*=\s*(-?\d+)", text):
        x, y = int(a), int(b)
        value = x + y if op == "+" else x - y if op == "-" else x * y
        if value != int(c):
            return False
    return True


def step_ok(step: str, reference: str) -> bool:
    """A step is right when it states the reference step's numbers (any order) and its equations hold."""
    numbers = Counter(re.findall(r"-?\d+", step))
    return numbers == Counter(re.findall(r"-?\d+", reference)) and _equations_hold(step)


def split_steps(response: str) -> list[str]:
    """Steps of a reply: blank-line separated pieces (docs/preference-and-rewards.md#prm-steps), the final-answer line left out."""
    pieces = [p.strip() for p in response.split("\n\n") if p.strip()]
    return [p for p in pieces if not p.lower().startswith(FINAL_ANSWER.lower())]


def check_steps(response: str, sample: Sample) -> list[bool]:
    """Judge each step of ``response`` against the sample's reference step at the same position."""
    steps = split_steps(response)
    return [i < len(sample.steps) and step_ok(s, sample.steps[i]) for i, s in enumerate(steps)]


def first_wrong_step(response: str, sample: Sample) -> int | None:
    """Index of the first wrong step (a missing step counts as wrong), or None if all are right."""
    verdicts = check_steps(response, sample)
    for i, ok in enumerate(verdicts):
        if not ok:
            return i
    return None if len(verdicts) >= len(sample.steps) else len(verdicts)


# ---------------------------------------------------------------------------- registry


# All families share the typed dispatcher: the answer type, not the family, decides the parser.
# The registry is what callers use, so that a family can get its own rule without changing them.
SCORERS: dict[str, Scorer] = {family: score for family in ALL_FAMILY_NAMES}
