"""Spatial relations: left/right and above/below between two named objects, and which corner.

``draw`` places objects 0 (and 1) to suit the question it picks; ``ask`` finds the other relations
a picture already made supports with the same margins (never a borderline relation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from internvl.data.world.families.base import Family, Scene, draft, obj_rows, pick, word_distractors
from internvl.data.world.families.objects import object_style, render_objects, scatter
from internvl.data.world.render import TILE, Obj
from internvl.data.world.sample import Sample
from internvl.data.world.vocab import distinct_styles

KINDS = ("horizontal", "vertical", "corner")
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
MIN_OFFSET = 90  # px between the two centres along the asked axis: the relation is never borderline
CORNER_MARGIN = 50  # px between a corner object's centre and the image's centre lines

PHRASES = {
    "horizontal": (
        "Is the {a} to the left or to the right of the {b}?",
        "Is the {a} on the left or on the right of the {b}?",
        "Relative to the {b}, is the {a} on the left or on the right?",
    ),
    "vertical": (
        "Is the {a} above or below the {b}?",
        "Is the {a} located above or below the {b}?",
        "Relative to the {b}, is the {a} above it or below it?",
    ),
    "corner": (
        "In which corner of the image is the {a}?",
        "Which corner of the picture is the {a} in?",
        "Where is the {a}: top-left, top-right, bottom-left or bottom-right?",
    ),
}


def _place_pair(rng: np.random.Generator, kind: str, ra: float, rb: float) -> tuple[tuple[float, float], ...]:
    lo, hi = 40.0, TILE - 40.0
    while True:
        a = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
        b = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
        axis = 0 if kind == "horizontal" else 1
        if abs(a[axis] - b[axis]) >= MIN_OFFSET and (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 > (ra + rb + 8) ** 2:
            return a, b


def _place_corner(rng: np.random.Generator, corner: str, r: float) -> tuple[float, float]:
    half = TILE / 2
    x = rng.uniform(r + 4, half - CORNER_MARGIN)
    y = rng.uniform(r + 4, half - CORNER_MARGIN)
    if corner.endswith("right"):
        x = TILE - x
    if corner.startswith("bottom"):
        y = TILE - y
    return float(x), float(y)


def draw(rng: np.random.Generator, ood: bool) -> Scene:
    kind = pick(rng, KINDS)
    n_named = 1 if kind == "corner" else 2
    n_clutter = int(rng.integers(0, 3))
    styles = distinct_styles(rng, n_named + n_clutter, ood=ood)
    radii = [float(rng.uniform(16, 34)) for _ in styles]
    corner = pick(rng, CORNERS)
    while True:
        if kind == "corner":
            named = [_place_corner(rng, corner, radii[0])]
        else:
            named = list(_place_pair(rng, kind, radii[0], radii[1]))
        fixed = [Obj(s, c, x, y, r) for (c, s), (x, y), r in zip(styles, named, radii)]
        rest = scatter(rng, radii[n_named:], TILE, TILE, fixed=fixed)
        if rest is not None:
            break
    objs = fixed + [Obj(s, c, x, y, r) for (c, s), (x, y), r in zip(styles[n_named:], rest, radii[n_named:])]
    task = {"kind": kind, "a": 0, "corner": corner} if kind == "corner" else {"kind": kind, "a": 0, "b": 1}
    return Scene(content={"objects": obj_rows(objs)}, task=task, style=object_style(rng))


def corner_of(row: list[Any]) -> str | None:
    """The corner an object sits in, or None when it is within ``CORNER_MARGIN`` of a centre line."""
    dx, dy = row[2] - TILE / 2, row[3] - TILE / 2
    if min(abs(dx), abs(dy)) < CORNER_MARGIN:
        return None
    return ("top-" if dy < 0 else "bottom-") + ("left" if dx < 0 else "right")


def ask(content: dict[str, Any], rng: np.random.Generator, ood: bool) -> dict[str, Any]:
    """A kind picked uniformly among those the picture supports, then one of its questions.

    Pairs need ``MIN_OFFSET`` px along the asked axis, corners ``CORNER_MARGIN`` px from the centre
    lines. In test-ood object 0 (the held-out pair) is always one of the named objects.
    """
    rows = content["objects"]
    named = [0] if ood else range(len(rows))
    options: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for i in range(len(rows)):
        for j in range(len(rows)):
            if i == j or (i not in named and j not in named):
                continue
            for kind, axis in (("horizontal", 2), ("vertical", 3)):
                if abs(rows[i][axis] - rows[j][axis]) >= MIN_OFFSET:
                    options[kind].append({"kind": kind, "a": i, "b": j})
    for i in named:
        corner = corner_of(rows[i])
        if corner is not None:
            options["corner"].append({"kind": "corner", "a": i, "corner": corner})
    kinds = [kind for kind in KINDS if options[kind]]
    if not kinds:
        raise ValueError("no spatial question this picture answers without a borderline relation")
    return pick(rng, options[pick(rng, kinds)])


def build(scene: Scene, rng: np.random.Generator) -> Sample:
    rows = scene.content["objects"]
    kind, i = scene.task["kind"], scene.task["a"]
    a = f"{rows[i][1]} {rows[i][0]}"
    image = render_objects(rows, scene.style, TILE, TILE)
    meta = {"objects": rows, "kind": kind}
    if kind == "corner":
        answer = scene.task["corner"]
        question = pick(rng, PHRASES["corner"]).format(a=a)
        return draft(
            "spatial",
            question,
            answer,
            "corner",
            images=[image],
            answer_space=list(CORNERS),
            distractors=word_distractors(rng, answer, CORNERS),
            meta=meta,
        )
    j = scene.task["b"]
    b = f"{rows[j][1]} {rows[j][0]}"
    if kind == "horizontal":
        answer, space = ("left" if rows[i][2] < rows[j][2] else "right"), ["left", "right"]
    else:
        answer, space = ("above" if rows[i][3] < rows[j][3] else "below"), ["above", "below"]
    question = pick(rng, PHRASES[kind]).format(a=a, b=b)
    return draft(
        "spatial",
        question,
        answer,
        "word",
        images=[image],
        answer_space=space,
        distractors=[w for w in space if w != answer],
        meta=meta,
    )


FAMILY = Family("spatial", draw, ask, build, choice_rate=0.2, ood="a named object is an unseen colour-shape pair")
