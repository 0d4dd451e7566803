"""Preference pairs (docs/preference-and-rewards.md#mpo-pairs): chosen = the correct response, rejected = a plausible wrong one.

For reasoning samples the rejected response is a full solution with one slip (a misread value or an
arithmetic error) carried through to a wrong final answer, and ``wrong_step`` records the index of
its first wrong step (steps split on blank lines, as the process reward model reads them, docs/preference-and-rewards.md#prm-steps).
For the other families it is a plausible wrong short answer: a wrong option letter, another object's
box, a number one or two off, a colour or word present in the scene.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from internvl.data.world.families.reasoning import flawed_solution
from internvl.data.world.sample import Sample, solution_text
from internvl.inputs.tokens import BOX_END, BOX_START, REF_END, REF_START


def rejected_response(sample: Sample, rng: np.random.Generator) -> tuple[str, int | None]:
    """(rejected response text, index of its first wrong step or None for short answers)."""
    if sample.steps:
        steps, answer, wrong_step = flawed_solution(sample, rng)
        return solution_text(steps, answer), wrong_step
    wrong = [d for d in sample.distractors if d != sample.answer]
    if not wrong:
        raise ValueError(f"sample {sample.id} has no distractor to build a rejected answer from")
    pick = wrong[int(rng.integers(min(3, len(wrong))))]  # one of the three most plausible
    if sample.answer_type == "box":
        return f"{REF_START}{sample.ref}{REF_END}{BOX_START}{pick}{BOX_END}", None
    return pick, None


def make_pair(sample: Sample, rng: np.random.Generator, question: str, media: dict[str, Any]) -> dict[str, Any]:
    """One MPO JSONL line: media fields, ``question`` (with placeholders), chosen, rejected, answer_gt."""
    rejected, wrong_step = rejected_response(sample, rng)
    line: dict[str, Any] = {
        "id": sample.id,
        **media,
        "question": question,
        "chosen": sample.response,
        "rejected": rejected,
        "answer_gt": sample.answer,
    }
    if wrong_step is not None:
        line["wrong_step"] = wrong_step
    line["world"] = sample.to_record()
    return line
