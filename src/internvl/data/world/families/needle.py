"""Needle: many small images, one of which holds the colour-shape pair asked for ("Which image shows a red
star?"), for long multimodal contexts (V2PE, docs/architecture.md#v2pe).

`needle` draws 4-16 images: with the nano model (64 tokens a tile, one tile per image) its prompts stay
within 2048 tokens, the training length. `needle_x2`, `needle_x4` and `needle_x8` draw 2, 4 and 8 times the
most images `needle` has, to test answers over contexts longer than training. They are not in the default
mix of `internvl world generate`: name them with `--families`.

Every image holds one to three objects; the other images hold pairs that share at most one attribute with
the target (a red circle, a blue star), so only the image with both answers. test-ood asks for a held-out
colour-shape pair, as `multi_image` does.

`needle_colour` (and `needle_colour_x2`, `_x4`, `_x8`) asks the other way round, "What colour is the
star?": the shape asked for is drawn once among all the images, every other object has another shape, and
the answer is a colour, whatever the number of images. Finding the image by its content is then the whole
task, with no image number to copy from the prompt: the retrieval that long contexts put to the test.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from internvl.data.world.families.base import Family, Scene, draft, obj_rows, pick, word_distractors
from internvl.data.world.families.objects import object_style, render_objects
from internvl.data.world.render import TILE, Obj, grid_positions
from internvl.data.world.sample import Sample
from internvl.data.world.vocab import COLOUR_NAMES, IN_PAIRS, OOD_PAIRS, SHAPES

SIZE = TILE // 2
MOST_IMAGES = 16  # of `needle`, the training family
PHRASES = ("Which image shows {what}?", "In which image is there {what}?", "Which picture contains {what}?")
COLOUR_PHRASES = (
    "What colour is the {shape}?",
    "One of the images shows a {shape}. What colour is it?",
    "Which colour does the {shape} have?",
)


def shares_one_attribute(pair: tuple[str, str], target: tuple[str, str]) -> bool:
    """`needle`'s other objects: a red circle or a blue star beside a red star, so only its image has both."""
    return (pair[0] == target[0]) != (pair[1] == target[1])


def has_another_shape(pair: tuple[str, str], target: tuple[str, str]) -> bool:
    """`needle_colour`'s other objects: any colour, never the target's shape."""
    return pair[1] != target[1]


def draw_scene(
    rng: np.random.Generator,
    ood: bool,
    min_images: int,
    max_images: int,
    other: Callable[[tuple[str, str], tuple[str, str]], bool],
) -> Scene:
    """`min_images`-`max_images` images of one to three objects, one of them the target pair (held out in
    test-ood), the rest pairs for which `other(pair, target)` holds."""
    n = int(rng.integers(min_images, max_images + 1))
    colour, shape = sorted(OOD_PAIRS)[int(rng.integers(len(OOD_PAIRS)))] if ood else pick(rng, IN_PAIRS)
    others = [p for p in IN_PAIRS if other(p, (colour, shape))]
    target = int(rng.integers(n))
    images = []
    for i in range(n):
        styles = [pick(rng, others) for _ in range(int(rng.integers(0 if i == target else 1, 3)))]
        if i == target:
            styles.insert(int(rng.integers(len(styles) + 1)), (colour, shape))
        centres = grid_positions(rng, len(styles), SIZE, SIZE, cols=3, rows=3, radius=18)
        radii = [float(rng.uniform(12, 18)) for _ in styles]
        images.append(obj_rows([Obj(s, c, x, y, r) for (c, s), (x, y), r in zip(styles, centres, radii)]))
    task = {"colour": colour, "shape": shape, "target": target}
    return Scene(content={"images": images}, task=task, style={"images": [object_style(rng) for _ in range(n)]})


def render_images(scene: Scene) -> list[Any]:
    return [
        render_objects(rows, style, SIZE, SIZE) for rows, style in zip(scene.content["images"], scene.style["images"])
    ]


def needle_family(name: str, min_images: int, max_images: int) -> Family:
    """A needle family whose pictures number between `min_images` and `max_images`."""

    def draw(rng: np.random.Generator, ood: bool) -> Scene:
        return draw_scene(rng, ood, min_images, max_images, shares_one_attribute)

    def ask(content: dict[str, Any], rng: np.random.Generator, ood: bool) -> dict[str, Any]:
        """A pair found in exactly one image (held out in test-ood, in-distribution otherwise)."""
        images = content["images"]
        found: dict[tuple[str, str], list[int]] = {}
        for i, rows in enumerate(images):
            for s, c, *_ in rows:
                found.setdefault((c, s), []).append(i)
        unique = sorted(p for p, where in found.items() if len(set(where)) == 1 and (p in OOD_PAIRS) == ood)
        if not unique:
            raise ValueError("no pair of these images is in exactly one of them")
        colour, shape = pick(rng, unique)
        return {"colour": colour, "shape": shape, "target": found[(colour, shape)][0]}

    def build(scene: Scene, rng: np.random.Generator) -> Sample:
        colour, shape, target = (scene.task[k] for k in ("colour", "shape", "target"))
        images = render_images(scene)
        space = [f"Image-{i + 1}" for i in range(len(images))]
        others = [space[i] for i in rng.permutation(len(space)) if i != target]
        return draft(
            name,
            pick(rng, PHRASES).format(what=f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"),
            space[target],
            "image",
            images=images,
            answer_space=space,
            distractors=others,
            meta={"images": scene.content["images"], "target": target},
        )

    return Family(name, draw, ask, build, ood="the image to find holds an unseen colour-shape pair")


def needle_colour_family(name: str, min_images: int, max_images: int) -> Family:
    """A colour needle family: one object of the shape asked for among `min_images`-`max_images` images."""

    def draw(rng: np.random.Generator, ood: bool) -> Scene:
        return draw_scene(rng, ood, min_images, max_images, has_another_shape)

    def ask(content: dict[str, Any], rng: np.random.Generator, ood: bool) -> dict[str, Any]:
        """A shape drawn exactly once in all the images, whose pair is held out in test-ood only."""
        drawn: dict[str, list[tuple[int, str]]] = {}
        for i, rows in enumerate(content["images"]):
            for s, c, *_ in rows:
                drawn.setdefault(s, []).append((i, c))
        unique = [s for s in SHAPES if len(drawn.get(s, ())) == 1 and ((drawn[s][0][1], s) in OOD_PAIRS) == ood]
        if not unique:
            raise ValueError("no shape is drawn exactly once in these images")
        shape = pick(rng, unique)
        ((target, colour),) = drawn[shape]
        return {"colour": colour, "shape": shape, "target": target}

    def build(scene: Scene, rng: np.random.Generator) -> Sample:
        colour, shape, target = (scene.task[k] for k in ("colour", "shape", "target"))
        images = render_images(scene)
        present = [c for rows in scene.content["images"] for _, c, *_ in rows]
        return draft(
            name,
            pick(rng, COLOUR_PHRASES).format(shape=shape),
            colour,
            "word",
            images=images,
            answer_space=list(COLOUR_NAMES),
            distractors=word_distractors(rng, colour, COLOUR_NAMES, present),
            meta={"images": scene.content["images"], "target": target, "shape": shape},
        )

    return Family(name, draw, ask, build, ood="the object to find is an unseen colour-shape pair")


FAMILY = needle_family("needle", 4, MOST_IMAGES)
LONGER = tuple(needle_family(f"needle_x{k}", k * MOST_IMAGES, k * MOST_IMAGES) for k in (2, 4, 8))
COLOUR = needle_colour_family("needle_colour", 4, MOST_IMAGES)
COLOUR_LONGER = tuple(needle_colour_family(f"needle_colour_x{k}", k * MOST_IMAGES, k * MOST_IMAGES) for k in (2, 4, 8))
