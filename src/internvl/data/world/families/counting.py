"""Counting: how many objects of a kind (0-9 in training, 10-12 in test-ood), among clutter.

Clutter shares the colour or the shape of the counted kind, so counting needs the conjunction.
``draw`` picks the kind and count first and makes the picture to suit; ``ask`` picks another kind
for a picture already made, with a count in the split's range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from internvl.data.world.families.base import Family, Scene, draft, number_distractors, obj_rows, pick
from internvl.data.world.families.objects import object_style, render_objects
from internvl.data.world.render import TILE, Obj, grid_positions
from internvl.data.world.sample import Sample
from internvl.data.world.vocab import IN_PAIRS, plural

TRAIN_MAX, OOD_RANGE = 9, (10, 12)
KINDS = ("shape", "colour", "both")
PHRASES = (
    "How many {what} are there?",
    "How many {what} are in the image?",
    "Count the {what}.",
    "How many {what} can you see?",
    "What is the number of {what} in the picture?",
)


def _what(kind: str, colour: str, shape: str) -> str:
    if kind == "shape":
        return plural(shape)
    if kind == "colour":
        return f"{colour} objects"
    return f"{colour} {plural(shape)}"


def _matches(kind: str, colour: str, shape: str, c: str, s: str) -> bool:
    return {"shape": s == shape, "colour": c == colour, "both": c == colour and s == shape}[kind]


def task_of(objects: list[list[Any]], kind: str, colour: str, shape: str) -> dict[str, Any]:
    """The task counting ``kind`` of (colour, shape) among ``objects``, its count read off the rows."""
    count = sum(_matches(kind, colour, shape, c, s) for s, c, *_ in objects)
    return {"kind": kind, "colour": colour, "shape": shape, "count": count}


def ask(content: dict[str, Any], rng: np.random.Generator, ood: bool) -> dict[str, Any]:
    """A kind picked uniformly, then a count picked uniformly among those that kind offers in range.

    Why by count: most colour-shape pairs are absent, and picking questions uniformly would make
    "0" the usual answer. The range is 0-9 in training and 10-12 in test-ood, as in ``draw``.
    """
    lo, hi = OOD_RANGE if ood else (0, TRAIN_MAX)
    tasks: dict[str, dict[str, Any]] = {}  # one per distinct question (the "what" it counts)
    for kind in KINDS:
        for colour, shape in IN_PAIRS:
            task = task_of(content["objects"], kind, colour, shape)
            if lo <= task["count"] <= hi:
                tasks.setdefault(_what(kind, colour, shape), task)
    kinds = [k for k in KINDS if any(t["kind"] == k for t in tasks.values())]
    if not kinds:
        raise ValueError(f"no counting question with a count in {lo}-{hi} for this picture")
    kind = pick(rng, kinds)
    counts = sorted({t["count"] for t in tasks.values() if t["kind"] == kind})
    count = pick(rng, counts)
    return pick(rng, [t for t in tasks.values() if t["kind"] == kind and t["count"] == count])


def draw(rng: np.random.Generator, ood: bool) -> Scene:
    kind = pick(rng, KINDS)
    colour, shape = pick(rng, IN_PAIRS)
    count = int(rng.integers(OOD_RANGE[0], OOD_RANGE[1] + 1)) if ood else int(rng.integers(0, TRAIN_MAX + 1))
    hits = [p for p in IN_PAIRS if _matches(kind, colour, shape, *p)]
    misses = [p for p in IN_PAIRS if not _matches(kind, colour, shape, *p)]
    # half of the clutter is a near miss: same colour or same shape as the counted kind
    near = [p for p in misses if p[0] == colour or p[1] == shape] or misses
    n_clutter = int(rng.integers(2, 7))
    styles = [pick(rng, hits) for _ in range(count)]
    styles += [pick(rng, near if rng.random() < 0.5 else misses) for _ in range(n_clutter)]
    radii = [float(rng.uniform(11, 24)) for _ in styles]
    centres = grid_positions(rng, len(styles), TILE, TILE, cols=5, rows=5, radius=24)
    objs = [Obj(shape=s, colour=c, x=x, y=y, r=r) for (c, s), (x, y), r in zip(styles, centres, radii)]
    rows = obj_rows(objs)
    task = task_of(rows, kind, colour, shape)
    assert task["count"] == count, "clutter never matches the counted kind"
    return Scene(content={"objects": rows}, task=task, style=object_style(rng, scribbles=(0, 6)))


def build(scene: Scene, rng: np.random.Generator) -> Sample:
    kind, colour, shape, count = (scene.task[k] for k in ("kind", "colour", "shape", "count"))
    question = pick(rng, PHRASES).format(what=_what(kind, colour, shape))
    return draft(
        "counting",
        question,
        str(count),
        "number",
        images=[render_objects(scene.content["objects"], scene.style, TILE, TILE)],
        distractors=number_distractors(rng, count, 0, max(TRAIN_MAX, count + 3)),
        meta={"objects": scene.content["objects"], "kind": kind, "colour": colour, "shape": shape, "count": count},
    )


FAMILY = Family("counting", draw, ask, build, ood=f"count in {OOD_RANGE[0]}-{OOD_RANGE[1]} (training 0-{TRAIN_MAX})")
