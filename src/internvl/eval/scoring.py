"""Scorers: pure functions from (model response, accepted answers) to a score in [0, 1].

Rules, so that a reader can predict every score:

* Final-answer span (`find_final_answer`). Text after a `</think>` is all that counts. If the
  response holds `\\boxed{...}`, the last box's content is the final answer; otherwise the text after
  the *last* marker "Final answer:", "The answer is", "Answer:", "答案:" (and close variants), up to
  the end of that line, with a sentence-final period removed. No marker: the whole response.
* exact: `normalize_text` of the final-answer span equals that of any accepted answer (lower case,
  punctuation dropped except inside numbers, articles dropped, "two" -> "2", "1,000" -> "1000").
* mcq (`extract_choice`): on the final-answer span, in order:
  1. the span is a lone letter, maybe bracketed or followed by ".", ":" or ")": "b", "(C)", "B." -> it;
  2. the span starts with a letter followed by ".", ":" or ")": "B. dog", "(B) dog" -> that letter
     (the letter wins over the text after it);
  3. letters written as options elsewhere in the span ("(B)", "B.", "option B", a bare capital "B";
     a bare "A" before a lower-case word is the article ("A dog"), unless that word cannot follow
     an article ("A or B", "A is right"); a bare "I" before a lower-case word is the pronoun):
     one distinct letter -> it; several -> the first one if the span came after an explicit
     final-answer marker ("the answer is B, not C" -> B), otherwise **ambiguous -> no answer**;
  4. no letter: option text. The span equal to one option's text, else exactly one option text
     found in the span as whole words (an option whose text lies inside another found option's
     text, like "dog" inside "hot dog", is dropped first) -> its letter; otherwise no answer.
  No answer scores 0.
* yorn: the first word of the span if it is yes/no, else the only one of yes/no present, else 0.
* numeric: the number in the span (first number after a marker, else the last number in the
  response); units, "$", thousands commas, fractions "3/4", number words up to twenty understood;
  "45%" counts as 45 and as 0.45. Correct when |pred - gold| <= max(abs_tol, rel_tol * |gold|).
  An accepted answer that is not a single number is compared with `exact` instead.
* anls: 1 - NED (Levenshtein distance / longer length) on lower-cased, whitespace-collapsed text,
  0 when NED >= threshold (0.5), max over accepted answers. This is the standard ANLS (DocVQA);
  the official MMPR `check_answer` scores `NED` itself, a bug we do not copy (docs/evaluation.md#anls).
* iou: the first box `[[x1, y1, x2, y2]]` of the response (inside `<box>...</box>` when present,
  InternVL's 0-1000 coordinates) against the accepted box(es); 1 when IoU >= threshold (0.5).
* judge: scored by an LLM, see `internvl.eval.judge`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

METRICS = ("exact", "mcq", "yorn", "numeric", "anls", "iou", "judge")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Score:
    """A score in [0, 1] (None: not scored, e.g. no ground truth) and what was read from the response."""

    value: float | None
    extracted: str | None = None


@dataclass(frozen=True)
class ScoringSettings:
    """Knobs of the rule-based scorers; a per-item numeric tolerance overrides `numeric_rel_tol`."""

    numeric_rel_tol: float = 1e-6
    numeric_abs_tol: float = 1e-9
    anls_threshold: float = 0.5
    iou_threshold: float = 0.5


# --- final answer and text normalisation --------------------------------------------------------------

_MARKER = re.compile(
    r"final\s+answer\s*(?:is\s*)?[:：]?"
    r"|(?:the\s+)?(?:correct\s+|right\s+|best\s+)?(?:answer|option|choice)\s+(?:is|would\s+be|should\s+be)\s*[:：]?"
    r"|answer\s*[:：]"
    r"|答案\s*(?:是|为)?\s*[:：]?",
    re.IGNORECASE,
)


def strip_think(text: str) -> str:
    """The part of a response after the last `</think>` (reasoning models), stripped."""
    return text.rpartition("</think>")[2].strip()


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (braces matched), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def find_final_answer(text: str) -> str | None:
    """The explicitly marked final answer of a response, or None when nothing marks one."""
    text = strip_think(text)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    matches = list(_MARKER.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    line = next((line for line in rest.splitlines() if line.strip(" *")), "")
    line = line.strip().strip("*$` ").strip()
    if line.endswith((".", "。")) and not line[:-1].endswith((".", "。")):
        line = line[:-1].rstrip()
    return line


def extract_final_answer(text: str) -> str:
    """The marked final answer if any, else the whole response (after `</think>`), stripped."""
    marked = find_final_answer(text)
    return marked if marked is not None else strip_think(text)


_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_ARTICLES = frozenset({"a", "an", "the"})


def _keep_punctuation(match: re.Match[str]) -> str:
    """Punctuation that is part of a number stays ("3.5", "-2", "45%", "3/4"); the rest becomes space."""
    s, i, ch = match.string, match.start(), match.group()
    before = s[i - 1] if i > 0 else ""
    after = s[i + 1] if i + 1 < len(s) else ""
    if ch in "./" and before.isdigit() and after.isdigit():
        return ch
    if ch == "-" and after.isdigit() and not (before.isalnum() or before == "_"):
        return ch
    if ch == "%" and before.isdigit():
        return ch
    if ch in "'’`":
        return ""
    return " "


def normalize_text(text: str) -> str:
    """Lower case, punctuation dropped (except inside numbers), articles dropped, number words as digits."""
    s = unicodedata.normalize("NFKC", text).lower().strip()
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)  # thousands separators
    s = re.sub(r"[^\w\s]", _keep_punctuation, s)
    tokens = [_NUMBER_WORDS.get(t, t) for t in s.split()]
    without_articles = [t for t in tokens if t not in _ARTICLES]
    return " ".join(without_articles or tokens)


# --- exact match --------------------------------------------------------------------------------------


def exact_match(prediction: str, answers: Sequence[str]) -> Score:
    """1 if the normalised final answer equals any normalised accepted answer."""
    extracted = extract_final_answer(prediction)
    normal = normalize_text(extracted)
    value = float(any(normal == normalize_text(a) for a in answers))
    return Score(value, extracted)


# --- multiple choice ----------------------------------------------------------------------------------

_LONE_LETTER = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:,]?")
_LEADING_LETTER = re.compile(r"[(\[]?([A-Z])(?:[)\]][.:]?|[.:])(?=\s|$)")
_LETTER = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9'’])")
_OPTION_WORD = re.compile(r"(?:option|choice|answer)(?:\s+is)?\s*[:：]?\s*$", re.IGNORECASE)
_NEXT_WORD = re.compile(r"\s+([a-z]+)")
# Words that never follow the article "a": before them a capital "A" is the option letter ("A or B").
_NOT_AFTER_ARTICLE = frozenset(
    "or and nor but is are was were seems appears looks would should could might can will must also too then "
    "vs versus because since".split()
)


def _is_word_not_letter(letter: str, rest: str) -> bool:
    """A bare "A" before a lower-case word is the article ("A dog"), a bare "I" the pronoun ("I think")."""
    following = _NEXT_WORD.match(rest)
    if following is None or letter not in "AI":
        return False
    return letter == "I" or following.group(1) not in _NOT_AFTER_ARTICLE


def _letters_in(span: str, letters: Sequence[str]) -> list[str]:
    """Distinct option letters written in the span, in order of appearance (rule 3)."""
    found: list[str] = []
    for match in _LETTER.finditer(span):
        letter = match.group(1)
        if letter not in letters or letter in found:
            continue
        start, end = match.span(1)
        bracketed = start > 0 and span[start - 1] in "([" and end < len(span) and span[end] in ")]"
        named = _OPTION_WORD.search(span[:start]) is not None
        if bracketed or named or not _is_word_not_letter(letter, span[end:]):
            found.append(letter)
    return found


def _option_by_text(span: str, options: Mapping[str, str]) -> str | None:
    """Rule 4: the letter of the one option whose text the span equals or contains."""
    normal = normalize_text(span)
    texts = {letter: normalize_text(text) for letter, text in options.items()}
    equal = [letter for letter, text in texts.items() if text and text == normal]
    if len(equal) == 1:
        return equal[0]
    found = [
        letter
        for letter, text in texts.items()
        if text and re.search(rf"(?<!\w){re.escape(text)}(?!\w)", normal) is not None
    ]
    found = [a for a in found if not any(a != b and texts[a] in texts[b] for b in found)]
    return found[0] if len(found) == 1 else None


def extract_choice(prediction: str, options: Mapping[str, str]) -> str | None:
    """The option letter a response chooses, or None (no answer or ambiguous); rules in the module doc."""
    letters = list(options)
    marked = find_final_answer(prediction)
    span = (marked if marked is not None else strip_think(prediction)).strip().strip("*`'\" ")
    lone = _LONE_LETTER.fullmatch(span)
    if lone and lone.group(1).upper() in letters:
        return lone.group(1).upper()
    leading = _LEADING_LETTER.match(span)
    if leading and leading.group(1) in letters:
        return leading.group(1)
    found = _letters_in(span, letters)
    if len(found) == 1 or (found and marked is not None):
        return found[0]
    if found:
        return None
    return _option_by_text(span, options)


def mcq_score(prediction: str, answer: str, options: Mapping[str, str]) -> Score:
    """1 if the chosen option letter is the answer letter."""
    choice = extract_choice(prediction, options)
    return Score(float(choice == answer.strip().upper()), choice)


# --- yes / no -----------------------------------------------------------------------------------------


def extract_yes_no(prediction: str) -> str | None:
    """ "yes", "no" or None: the first word if it is one of them, else the only one present."""
    words = normalize_text(extract_final_answer(prediction)).split()
    if words and words[0] in ("yes", "no"):
        return words[0]
    present = {w for w in words if w in ("yes", "no")}
    return present.pop() if len(present) == 1 else None


def yes_no_score(prediction: str, answers: Sequence[str]) -> Score:
    """1 if the response's yes/no equals the accepted one."""
    said = extract_yes_no(prediction)
    return Score(float(said is not None and any(said == normalize_text(a) for a in answers)), said)


# --- numbers ------------------------------------------------------------------------------------------

_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])(?P<sign>[-+−])?\$?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?P<dec>\.\d+)?(?P<exp>[eE][-+]?\d+)?"
    r"(?:\s*/\s*(?P<den>\d+))?(?P<pct>\s*%)?"
)
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class Number:
    """A number read from text; `percent` when written with "%" (then it also stands for value/100)."""

    value: float
    percent: bool = False

    def candidates(self) -> tuple[float, ...]:
        return (self.value, self.value / 100) if self.percent else (self.value,)


def find_numbers(text: str) -> list[Number]:
    """Every number in the text, in order (digits first; number words only when there are no digits)."""
    numbers: list[Number] = []
    for m in _NUMBER.finditer(text):
        if m.group("int") is None and m.group("dec") is None:
            continue
        value = float((m.group("int") or "0").replace(",", "") + (m.group("dec") or "") + (m.group("exp") or ""))
        if m.group("den") is not None:
            if int(m.group("den")) == 0:
                continue
            value /= int(m.group("den"))
        if m.group("sign") in ("-", "−"):
            value = -value
        if math.isfinite(value):
            numbers.append(Number(value, m.group("pct") is not None))
    if not numbers:
        numbers = [Number(float(_NUMBER_WORDS[w.lower()])) for w in _NUMBER_WORD.findall(text)]
    return numbers


def parse_number(text: str) -> Number | None:
    """The number an accepted answer states ("12 cm", "1,234", "45%", "3/4"), or None if not exactly one."""
    numbers = find_numbers(text)
    return numbers[0] if len(numbers) == 1 else None


def extract_number(prediction: str) -> Number | None:
    """The number a response answers: the first after a final-answer marker, else the last one."""
    marked = find_final_answer(prediction)
    numbers = find_numbers(marked if marked is not None else strip_think(prediction))
    if not numbers:
        return None
    return numbers[0] if marked is not None else numbers[-1]


def numbers_close(a: Number, b: Number, rel_tol: float, abs_tol: float) -> bool:
    """True when any reading of `a` is within tolerance of any reading of `b` (gold = `b`)."""
    return any(abs(x - y) <= max(abs_tol, rel_tol * abs(y)) for x in a.candidates() for y in b.candidates())


def numeric_score(prediction: str, answers: Sequence[str], rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> Score:
    """1 if the response's number is within tolerance of an accepted number (see module doc)."""
    said = extract_number(prediction)
    extracted = None if said is None else f"{said.value:g}{'%' if said.percent else ''}"
    for answer in answers:
        gold = parse_number(answer)
        if gold is None:
            if exact_match(prediction, [answer]).value:
                return Score(1.0, extract_final_answer(prediction))
        elif said is not None and numbers_close(said, gold, rel_tol, abs_tol):
            return Score(1.0, extracted)
    return Score(0.0, extracted)


# --- ANLS ---------------------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> Score:
    """Average Normalised Levenshtein Similarity of one response: max over answers of 1 - NED (0 if NED >= threshold)."""
    said = " ".join(extract_final_answer(prediction).lower().split())
    best = 0.0
    for answer in answers:
        gold = " ".join(answer.lower().split())
        longest = max(len(said), len(gold))
        distance = levenshtein(said, gold) / longest if longest else 0.0
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return Score(best, said)


# --- boxes --------------------------------------------------------------------------------------------

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_BOX = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")
_BOX_TAG = re.compile(r"<box>(.*?)</box>", re.DOTALL)


def parse_boxes(text: str) -> list[Box]:
    """Boxes `[x1, y1, x2, y2]` in text (inside the first `<box>...</box>` when there is one)."""
    tag = _BOX_TAG.search(text)
    region = tag.group(1) if tag else text
    boxes: list[Box] = []
    for m in _BOX.finditer(region):
        x1, y1, x2, y2 = (float(v) for v in m.groups())
        boxes.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    return boxes


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (corners in any one coordinate system)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, width) * max(0.0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_score(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> Score:
    """1 if the response's first box overlaps an accepted box with IoU >= threshold."""
    boxes = parse_boxes(prediction)
    if not boxes:
        return Score(0.0, None)
    said = boxes[0]
    best = max((box_iou(said, gold) for answer in answers for gold in parse_boxes(answer)), default=0.0)
    shown = "[[" + ", ".join(f"{v:g}" for v in said) + f"]] IoU={best:.3f}"
    return Score(float(best >= threshold), shown)


# --- dispatch -----------------------------------------------------------------------------------------


def score_answer(
    metric: str,
    prediction: str,
    answers: Sequence[str],
    options: Mapping[str, str] | None = None,
    config: ScoringSettings = ScoringSettings(),
    tolerance: float | None = None,
) -> Score:
    """Score one response with a rule-based metric; no accepted answer -> Score(None)."""
    if not answers:
        return Score(None, None)
    if metric == "exact":
        return exact_match(prediction, answers)
    if metric == "mcq":
        return mcq_score(prediction, answers[0], options or {})
    if metric == "yorn":
        return yes_no_score(prediction, answers)
    if metric == "numeric":
        rel_tol = config.numeric_rel_tol if tolerance is None else tolerance
        return numeric_score(prediction, answers, rel_tol, config.numeric_abs_tol)
    if metric == "anls":
        return anls(prediction, answers, config.anls_threshold)
    if metric == "iou":
        return iou_score(prediction, answers, config.iou_threshold)
    if metric == "judge":
        raise ValueError("metric 'judge' is scored by internvl.eval.judge, not by score_answer")
    raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
