"""The sample: one picture (or several, or a video), one question and an exactly checkable answer.

A :class:`Sample` carries everything a scorer, an exporter or a preference-pair builder needs, so
none of them has to re-render the scene. The prompt and the ideal response are derived from the
fields in one place (:func:`prompt_text`, :func:`response_text`) so SFT, TSV and pair files agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from internvl.inputs.prompt import media_lines
from internvl.inputs.tokens import BOX_END, BOX_START, REF_END, REF_START, VIDEO_PLACEHOLDER

SPLITS: tuple[str, ...] = ("train", "val", "test", "test-ood")

# What kind of string ``Sample.answer`` is; each has one parser in ``score.py``.
ANSWER_TYPES: tuple[str, ...] = (
    "choice",  # an option letter "A".."D"
    "number",  # an integer written in digits, e.g. "7"
    "word",  # one member of ``answer_space`` (colour, shape, size, label, relation, direction)
    "text",  # free text read from the image (OCR), compared case-insensitively
    "object",  # "<colour> <shape>"
    "corner",  # "top-left" | "top-right" | "bottom-left" | "bottom-right"
    "image",  # an image as the prompt labels it, "Image-2" (1-based)
    "box",  # "[[x1, y1, x2, y2]]" in 0..1000
)


SHORT_SUFFIX = "Answer the question using a single word or phrase."
CHOICE_SUFFIX = "Answer with the option's letter from the given choices directly."
# The MMPR `en` chain-of-thought instruction (docs/preference-and-rewards.md#reasoning-instruction), so reasoning answers end in "Final answer: ..".
COT_PREFIX = (
    "Your task is to answer the question below. Give step by step reasoning before you answer, "
    'and when you\'re ready to answer, please use the format "Final answer: .."\n\nQuestion:\n\n'
)
FINAL_ANSWER = "Final answer:"
LETTERS = "ABCDEFGH"


@dataclass
class Sample:
    """One question about one scene.

    ``images`` and ``frames`` hold PIL images when generated and relative paths when read back from a
    file; ``video`` is the exported video path (an ``.mp4`` file or a frame folder ending in ``/``).
    For multiple choice ``answer`` is the letter and ``options`` the texts in letter order.
    ``answer_space`` lists every admissible answer for closed-vocabulary questions (a scorer rejects a
    prediction naming another member), ``distractors`` plausible wrong answers (best first).
    ``steps`` is the step-by-step solution of reasoning samples (one claim per step).
    ``box`` is the target box in 0..1000 and ``ref`` its referring expression (grounding).
    ``max_dynamic_patch`` is the tile budget the sample needs (docs/images-and-video.md#dynamic-tiling; >1 only for detail).
    ``meta`` holds scene facts (objects, values, sub-task) and ``meta["ood"]``, the held-out feature.
    """

    id: str
    family: str
    split: str
    question: str
    answer: str
    answer_type: str
    images: list[Any] = field(default_factory=list)
    frames: list[Any] = field(default_factory=list)
    video: str | None = None
    options: list[str] = field(default_factory=list)
    answer_space: list[str] = field(default_factory=list)
    distractors: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    box: list[int] | None = None
    ref: str | None = None
    max_dynamic_patch: int = 1
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return prompt_text(self)

    @property
    def response(self) -> str:
        return response_text(self)

    @property
    def answer_text(self) -> str:
        """The answer as words: the chosen option's text for multiple choice, else ``answer``."""
        if self.answer_type == "choice":
            return self.options[LETTERS.index(self.answer)]
        return self.answer

    def to_record(self) -> dict[str, Any]:
        """JSON-able dict (shallow: fields are plain data); images/frames must already be paths."""
        for key in ("images", "frames"):
            if any(not isinstance(p, str) for p in getattr(self, key)):
                raise TypeError(f"Sample.{key} must hold paths before to_record(); export the images first")
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Sample":
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})


def options_block(options: list[str]) -> str:
    """``A. red\\nB. blue`` ..."""
    return "\n".join(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options))


def prompt_text(sample: Sample) -> str:
    """The user turn without media placeholders: question, options, and the answer-format instruction."""
    body = sample.question
    if sample.options:
        body += "\n" + options_block(sample.options)
    if sample.steps:
        return COT_PREFIX + body
    if sample.answer_type in ("box", "description"):  # free-form answers: no short-answer instruction
        return body
    return body + "\n" + (CHOICE_SUFFIX if sample.options else SHORT_SUFFIX)


def solution_text(steps: list[str], answer: str) -> str:
    """Steps separated by blank lines (the PRM step separator, docs/preference-and-rewards.md#prm-steps), then the final answer."""
    return "\n\n".join([*steps, f"{FINAL_ANSWER} {answer}"])


def response_text(sample: Sample) -> str:
    """What a perfect assistant answers: the SFT target and the 'chosen' side of a pair."""
    if sample.steps:
        return solution_text(sample.steps, sample.answer)
    if sample.answer_type == "box":
        return f"{REF_START}{sample.ref}{REF_END}{BOX_START}{sample.answer}{BOX_END}"
    return sample.answer


def media_prefix(n_images: int, has_video: bool) -> str:
    """The placeholders that open the first human turn (docs/images-and-video.md#multiple-images, docs/images-and-video.md#video, docs/sft.md#annotation-lines)."""
    if has_video:
        return f"{VIDEO_PLACEHOLDER}\n"
    return media_lines(n_images)
