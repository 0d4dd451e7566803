"""Recognition: the colour, shape or size of one object among up to three on a noisy background."""

from __future__ import annotations

from typing import Any

import numpy as np

from internvl.data.world.families.base import Family, Scene, draft, obj_rows, pick, rows_obj, word_distractors
from internvl.data.world.families.objects import object_style, render_objects
from internvl.data.world.render import TILE, Obj, grid_positions
from internvl.data.world.sample import Sample
from internvl.data.world.vocab import COLOUR_NAMES, SHAPES, SIZE_NAMES, SIZES, distinct_styles

ATTRIBUTES = ("colour", "shape", "size")

PHRASES = {
    "colour": (
        "What colour is the {shape}?",
        "Which colour does the {shape} have?",
        "What is the colour of the {shape}?",
        "Name the colour of the {shape} in the picture.",
        "What color is the {shape}?",
    ),
    "shape": (
        "What shape is the {colour} object?",
        "Which shape is drawn in {colour}?",
        "What is the shape of the {colour} object?",
        "Name the shape of the {colour} figure.",
    ),
    "size": (
        "What size is the {colour} {shape}: small, medium or large?",
        "Is the {colour} {shape} small, medium or large?",
        "How big is the {colour} {shape} (small, medium or large)?",
    ),
}
# With one object in the picture, the question need not name it.
ALONE = {
    "colour": ("What colour is shown in the image?", "What color is the shape in the picture?"),
    "shape": ("What shape is shown in the image?", "Which shape is in the picture?"),
    "size": ("Is the shape in the picture small, medium or large?",),
}


def draw(rng: np.random.Generator, ood: bool) -> Scene:
    n = int(rng.integers(1, 4))
    styles = distinct_styles(rng, n, ood=ood)
    sizes = [pick(rng, SIZE_NAMES) for _ in range(n)]
    radii = [float(rng.uniform(*SIZES[s])) for s in sizes]
    centres = grid_positions(rng, n, TILE, TILE, cols=3, rows=3, radius=max(SIZES["large"]))
    objs = [Obj(shape=s, colour=c, x=x, y=y, r=r) for (c, s), (x, y), r in zip(styles, centres, radii)]
    content = {"objects": obj_rows(objs), "sizes": sizes}
    return Scene(content=content, task=ask(content, rng, ood), style=object_style(rng))


def ask(content: dict[str, Any], rng: np.random.Generator, ood: bool) -> dict[str, Any]:
    """Any object and attribute; in test-ood the first object, the one with the held-out pair."""
    target = 0 if ood else int(rng.integers(len(content["objects"])))
    return {"target": target, "attribute": pick(rng, ATTRIBUTES)}


def build(scene: Scene, rng: np.random.Generator) -> Sample:
    objs = rows_obj(scene.content["objects"])
    sizes = scene.content["sizes"]
    t = scene.task["target"]
    target, attribute = objs[t], scene.task["attribute"]
    phrases = PHRASES[attribute] + (ALONE[attribute] if len(objs) == 1 else ())
    question = pick(rng, phrases).format(shape=target.shape, colour=target.colour)
    if attribute == "colour":
        answer, space, present = target.colour, COLOUR_NAMES, [o.colour for o in objs]
    elif attribute == "shape":
        answer, space, present = target.shape, SHAPES, [o.shape for o in objs]
    else:
        answer, space, present = sizes[t], SIZE_NAMES, list(sizes)
    return draft(
        "recognition",
        question,
        answer,
        "word",
        images=[render_objects(scene.content["objects"], scene.style, TILE, TILE)],
        answer_space=list(space),
        distractors=word_distractors(rng, answer, space, present),
        meta={"objects": scene.content["objects"], "target": t, "attribute": attribute},
    )


FAMILY = Family("recognition", draw, ask, build, ood="target is an unseen colour-shape pair")
