"""Grounding: "Where is the blue circle?" answered as ``<ref>blue circle</ref><box>[[x1, y1, x2, y2]]</box>``.

Boxes are tight around the drawn shape, in integer 0..1000 coordinates (docs/prompts.md#special-tokens), scored by
IoU >= 0.5. The reverse task names the object inside a given box.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from internvl.data.world.families.base import Family, Scene, draft, obj_rows, pick, rows_obj
from internvl.data.world.families.objects import object_style, render_objects
from internvl.data.world.render import TILE, Obj, box_text, grid_positions, iou, shape_box, to_box1000
from internvl.data.world.sample import Sample
from internvl.data.world.vocab import SIZES, distinct_styles
from internvl.inputs.tokens import REF_END, REF_START

PHRASES = {
    "box": (
        "Where is the {ref}?",
        "Please provide the bounding box coordinate of the region this sentence describes: "
        + REF_START
        + "{ref}"
        + REF_END,
        "Locate the {ref} in the image.",
        "Give the bounding box of the {ref}.",
    ),
    "caption": (
        "What object is inside <box>{box}</box>?",
        "Which shape is in the region <box>{box}</box>?",
        "Name the object in <box>{box}</box>.",
    ),
}


def draw(rng: np.random.Generator, ood: bool) -> Scene:
    n = int(rng.integers(2, 6))
    styles = distinct_styles(rng, n, ood=ood)
    radii = [float(rng.uniform(SIZES["small"][0], SIZES["large"][1])) for _ in range(n)]
    centres = grid_positions(rng, n, TILE, TILE, cols=3, rows=3, radius=SIZES["large"][1])
    objs = [Obj(s, c, x, y, r) for (c, s), (x, y), r in zip(styles, centres, radii)]
    content = {"objects": obj_rows(objs)}
    return Scene(content=content, task=ask(content, rng, ood), style=object_style(rng))


def ask(content: dict[str, Any], rng: np.random.Generator, ood: bool) -> dict[str, Any]:
    """Any object, boxed (3 in 4) or named; in test-ood the first, the one with the held-out pair."""
    target = 0 if ood else int(rng.integers(len(content["objects"])))
    return {"target": target, "kind": "box" if rng.random() < 0.75 else "caption"}


def shifted_boxes(rng: np.random.Generator, box: list[int], n: int) -> list[list[int]]:
    """Boxes near ``box`` with IoU < 0.5: plausible near-misses."""
    w = box[2] - box[0]
    out: list[list[int]] = []
    for _ in range(1000):
        if len(out) == n:
            break
        dx, dy = (int(v) for v in rng.integers(-2 * max(w, 20), 2 * max(w, 20) + 1, size=2))
        cand = [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]
        if min(cand) >= 0 and max(cand) <= 1000 and iou(cand, box) < 0.5:
            out.append(cand)
    return out


def build(scene: Scene, rng: np.random.Generator) -> Sample:
    objs = rows_obj(scene.content["objects"])
    t = scene.task["target"]
    boxes = [to_box1000(shape_box(o), TILE, TILE) for o in objs]
    image = render_objects(scene.content["objects"], scene.style, TILE, TILE)
    ref = objs[t].name
    meta = {"objects": scene.content["objects"], "target": t, "boxes": boxes}
    if scene.task["kind"] == "caption":
        question = pick(rng, PHRASES["caption"]).format(box=box_text(boxes[t]))
        names = [o.name for o in objs]
        return draft(
            "grounding",
            question,
            ref,
            "object",
            images=[image],
            answer_space=names,
            distractors=[nm for nm in names if nm != ref],
            box=boxes[t],
            ref=ref,
            meta=meta,
        )
    others = [box_text(b) for i, b in enumerate(boxes) if i != t]
    near = [box_text(b) for b in shifted_boxes(rng, boxes[t], 2)]
    return draft(
        "grounding",
        pick(rng, PHRASES["box"]).format(ref=ref),
        box_text(boxes[t]),
        "box",
        images=[image],
        distractors=others + near,
        box=boxes[t],
        ref=ref,
        meta=meta,
    )


FAMILY = Family(
    "grounding", draw, ask, build, choice_rate=0.2, ood="the object to locate is an unseen colour-shape pair"
)
