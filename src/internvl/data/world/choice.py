"""Turn an open-ended sample into its multiple-choice variant (options ``A. ..``, answer = letter)."""

from __future__ import annotations

import dataclasses

import numpy as np

from internvl.data.world.sample import LETTERS, Sample


def can_be_choice(sample: Sample) -> bool:
    """A multiple-choice variant needs at least one wrong option (two-way choices are fine)."""
    return len(_wrong(sample)) >= 1 and sample.answer_type != "choice"


def _wrong(sample: Sample) -> list[str]:
    seen: list[str] = []
    for d in sample.distractors:
        if d != sample.answer and d not in seen:
            seen.append(d)
    return seen


def as_choice(sample: Sample, rng: np.random.Generator, n_options: int = 4) -> Sample:
    """The same question with ``n_options`` options (fewer if there are not enough distractors).

    Wrong options are drawn from the ``2 * (n_options - 1)`` most plausible ``distractors``, so they
    stay close to the answer. The open answer and its type stay in ``meta`` for reference.
    """
    wrong = _wrong(sample)[: 2 * (n_options - 1)]
    k = min(n_options - 1, len(wrong))
    picked = [wrong[i] for i in sorted(rng.choice(len(wrong), size=k, replace=False))]
    options = [sample.answer, *picked]
    order = rng.permutation(len(options))
    options = [options[i] for i in order]
    letter = LETTERS[options.index(sample.answer)]
    meta = {**sample.meta, "open_answer": sample.answer, "open_type": sample.answer_type}
    return dataclasses.replace(
        sample,
        answer=letter,
        answer_type="choice",
        options=options,
        answer_space=list(LETTERS[: len(options)]),
        distractors=[LETTERS[i] for i in range(len(options)) if LETTERS[i] != letter],
        meta=meta,
    )
