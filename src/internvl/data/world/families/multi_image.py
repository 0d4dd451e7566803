"""Multi-image: questions across 2-4 images ("Which image has the most triangles?").

Answers name an image as the prompt labels it, ``Image-2`` (``Image-1: <image>`` ..., docs/images-and-video.md#multiple-images),
or, for totals, are a number. ``draw`` picks the question first and makes the images to suit;
``ask`` finds the questions a set of images already made answers unambiguously.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from internvl.data.world.families.base import Family, Scene, draft, number_distractors, obj_rows, pick
from internvl.data.world.families.objects import object_style, render_objects
from internvl.data.world.render import TILE, Obj, grid_positions
from internvl.data.world.sample import Sample
from internvl.data.world.vocab import IN_PAIRS, OOD_PAIRS, plural

SIZE = TILE // 2  # small pictures (each still becomes one tile) keep 2-4 images cheap to make and store
KINDS = ("most", "fewest", "contains", "total")
PHRASES = {
    "most": (
        "Which image has the most {what}?",
        "In which image are there the most {what}?",
        "Which picture contains the largest number of {what}?",
    ),
    "fewest": (
        "Which image has the fewest {what}?",
        "In which image are there the fewest {what}?",
        "Which picture contains the smallest number of {what}?",
    ),
    "contains": (
        "Which image contains a {what}?",
        "In which image can you find a {what}?",
        "Which picture shows a {what}?",
    ),
    "total": (
        "How many {what} are there in all the images together?",
        "Counting every image, how many {what} are there?",
        "What is the total number of {what} across the images?",
    ),
}


def _unique_extreme(counts: list[int], kind: str) -> bool:
    best = max(counts) if kind == "most" else min(counts)
    return counts.count(best) == 1


def task_of(images: list[list[list[Any]]], kind: str, colour: str, shape: str) -> dict[str, Any]:
    """The task with its per-image ``counts`` read off the rows: the (colour, shape) pair for
    "contains", the shape in any colour otherwise (then ``colour`` is None: the question ignores it)."""
    if kind == "contains":
        counts = [sum((c, s) == (colour, shape) for s, c, *_ in rows) for rows in images]
        return {"kind": kind, "colour": colour, "shape": shape, "counts": counts}
    counts = [sum(s == shape for s, *_ in rows) for rows in images]
    return {"kind": kind, "colour": None, "shape": shape, "counts": counts}


def ask(content: dict[str, Any], rng: np.random.Generator, ood: bool) -> dict[str, Any]:
    """A kind picked uniformly among those with a question, then one of them.

    "most"/"fewest" need a unique extreme, "contains" a pair found in exactly one image. In test-ood
    only "contains" of a held-out pair is asked (as in ``draw``); in training only in-distribution pairs.
    """
    images = content["images"]
    present = sorted({(c, s) for rows in images for s, c, *_ in rows})
    pairs = [p for p in present if (p in OOD_PAIRS) == ood]
    shapes = sorted({s for _, s in IN_PAIRS})
    options: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for colour, shape in pairs:
        task = task_of(images, "contains", colour, shape)
        if sum(n > 0 for n in task["counts"]) == 1:
            options["contains"].append(task)
    for kind in ("most", "fewest", "total") if not ood else ():
        for shape in shapes:
            task = task_of(images, kind, "", shape)
            if kind == "total" or _unique_extreme(task["counts"], kind):
                options[kind].append(task)
    kinds = [kind for kind in KINDS if options[kind]]
    if not kinds:
        raise ValueError("no multi-image question these images answer unambiguously")
    return pick(rng, options[pick(rng, kinds)])


def draw(rng: np.random.Generator, ood: bool) -> Scene:
    n = int(rng.integers(2, 5))
    kind = "contains" if ood else pick(rng, KINDS)
    colour, shape = sorted(OOD_PAIRS)[int(rng.integers(len(OOD_PAIRS)))] if ood else pick(rng, IN_PAIRS)
    # "most"/"fewest"/"total" count a shape in any colour; "contains" looks for one colour-shape pair
    if kind == "contains":
        counts = [0] * n
        counts[int(rng.integers(n))] = 1
        hits = [(colour, shape)]
        misses = [p for p in IN_PAIRS if (p[0] == colour) != (p[1] == shape)]  # shares exactly one attribute
    else:
        while True:
            counts = [int(v) for v in rng.integers(0, 5, size=n)]
            if kind == "total" or _unique_extreme(counts, kind):
                break
        hits = [p for p in IN_PAIRS if p[1] == shape]
        misses = [p for p in IN_PAIRS if p[1] != shape]
    images = []
    for count in counts:
        styles = [pick(rng, hits) for _ in range(count)] + [pick(rng, misses) for _ in range(int(rng.integers(1, 5)))]
        radii = [float(rng.uniform(9, 14)) for _ in styles]
        centres = grid_positions(rng, len(styles), SIZE, SIZE, cols=4, rows=4, radius=14)
        images.append(obj_rows([Obj(s, c, x, y, r) for (c, s), (x, y), r in zip(styles, centres, radii)]))
    task = task_of(images, kind, colour, shape)
    assert task["counts"] == counts, "clutter never holds what the question counts"
    return Scene(content={"images": images}, task=task, style={"images": [object_style(rng) for _ in range(n)]})


def build(scene: Scene, rng: np.random.Generator) -> Sample:
    kind, colour, shape, counts = (scene.task[k] for k in ("kind", "colour", "shape", "counts"))
    images = [
        render_objects(rows, style, SIZE, SIZE) for rows, style in zip(scene.content["images"], scene.style["images"])
    ]
    what = f"{colour} {shape}" if kind == "contains" else plural(shape)
    question = pick(rng, PHRASES[kind]).format(what=what)
    meta: dict[str, Any] = {"images": scene.content["images"], "kind": kind, "counts": counts}
    if kind == "total":
        total = sum(counts)
        return draft(
            "multi_image",
            question,
            str(total),
            "number",
            images=images,
            distractors=number_distractors(rng, total, 0),
            meta=meta,
        )
    if kind == "contains":
        best = next(i for i, n in enumerate(counts) if n > 0)  # the only image holding the pair
    else:
        best = counts.index(max(counts) if kind == "most" else min(counts))
    space = [f"Image-{i + 1}" for i in range(len(counts))]
    answer = space[best]
    ranked = sorted(range(len(counts)), key=lambda i: -counts[i] if kind != "fewest" else counts[i])
    return draft(
        "multi_image",
        question,
        answer,
        "image",
        images=images,
        answer_space=space,
        distractors=[space[i] for i in ranked if i != best],
        meta=meta,
    )


FAMILY = Family("multi_image", draw, ask, build, ood="the image to find holds an unseen colour-shape pair")
