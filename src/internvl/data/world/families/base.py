"""What every task family provides, and small helpers the families share.

A family is three pure functions. ``draw(rng, ood)`` picks a :class:`Scene`: the ``content`` that fixes
the picture (hashed to choose the split), the ``task`` (what will be asked about it) and the ``style``
(background and other nuisance, never hashed). ``ask(content, rng, ood)`` picks a fresh task for a
content already drawn, so one picture can carry several questions (multi-turn SFT); it keeps the
family's test-ood rule. ``build(scene, rng)`` renders the scene and phrases an open-ended question;
the generator then makes some samples multiple choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from internvl.data.world.render import Obj
from internvl.data.world.sample import Sample

T = TypeVar("T")


@dataclass
class Scene:
    """``content`` decides the split (so identical pictures always share a split)."""

    content: dict[str, Any]
    task: dict[str, Any] = field(default_factory=dict)
    style: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    name: str
    draw: Callable[[np.random.Generator, bool], Scene]
    ask: Callable[[dict[str, Any], np.random.Generator, bool], dict[str, Any]]
    build: Callable[[Scene, np.random.Generator], Sample]
    choice_rate: float = 0.3  # share of samples turned into multiple choice
    ood: str = ""  # what test-ood holds out for this family (documentation and reports)


def pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    """One element, uniformly."""
    return items[int(rng.integers(len(items)))]


def draft(family: str, question: str, answer: str, answer_type: str, **fields: Any) -> Sample:
    """A sample without id and split (the generator fills them in)."""
    return Sample(id="", family=family, split="", question=question, answer=answer, answer_type=answer_type, **fields)


def number_distractors(
    rng: np.random.Generator, value: int, lo: int = 0, hi: int | None = None, n: int = 6
) -> list[str]:
    """Nearby integers, closest first (``value`` excluded)."""
    hi = value + n if hi is None else hi
    near = sorted((v for v in range(lo, hi + 1) if v != value), key=lambda v: (abs(v - value), rng.random()))
    return [str(v) for v in near[:n]]


def word_distractors(
    rng: np.random.Generator, answer: str, space: Sequence[str], first: Sequence[str] = ()
) -> list[str]:
    """Other members of ``space``: those in ``first`` (e.g. present in the scene) first, then the rest."""
    lead = [w for w in first if w != answer]
    rest = [w for w in space if w != answer and w not in lead]
    rest = [rest[i] for i in rng.permutation(len(rest))]
    return list(dict.fromkeys([*lead, *rest]))


def obj_rows(objs: Sequence[Obj]) -> list[list[Any]]:
    """Objects as JSON rows [shape, colour, x, y, r] with integer pixels (stable for hashing)."""
    return [[o.shape, o.colour, int(round(o.x)), int(round(o.y)), int(round(o.r))] for o in objs]


def rows_obj(rows: Sequence[Sequence[Any]]) -> list[Obj]:
    return [Obj(shape=r[0], colour=r[1], x=float(r[2]), y=float(r[3]), r=float(r[4])) for r in rows]
