"""Scenes made of coloured shapes on a noisy background, shared by several families.

The picture is fixed by ``content["objects"]`` (rows [shape, colour, x, y, r]) and the nuisance
``style`` (background, outline, colour jitter, scribbles), so every object family renders alike.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from internvl.data.world.families.base import rows_obj
from internvl.data.world.render import Obj, background, background_style, draw_obj, draw_scribbles
from internvl.data.world.vocab import COLOURS


def object_style(rng: np.random.Generator, scribbles: tuple[int, int] = (0, 4)) -> dict[str, Any]:
    """Nuisance parameters of an object scene."""
    return {
        "background": background_style(rng),
        "outline": bool(rng.random() < 0.3),
        "jitter_seed": int(rng.integers(2**31)),
        "scribbles": int(rng.integers(scribbles[0], scribbles[1] + 1)),
    }


def paint_objects(image: Image.Image, objs: Sequence[Obj], style: dict[str, Any]) -> Image.Image:
    """Draw ``objs`` (in order, later on top) onto ``image`` in place and return it."""
    rng = np.random.default_rng(style["jitter_seed"])
    draw = ImageDraw.Draw(image)
    draw_scribbles(draw, rng, image.width, image.height, style["scribbles"])
    for obj in objs:
        fill = tuple(int(min(255, max(0, c + d))) for c, d in zip(COLOURS[obj.colour], rng.integers(-14, 15, 3)))
        draw_obj(draw, obj, fill=fill, outline=style["outline"])  # type: ignore[arg-type]
    return image


def render_objects(rows: Sequence[Sequence[Any]], style: dict[str, Any], width: int, height: int) -> Image.Image:
    """The whole picture of an object scene."""
    return paint_objects(background(style["background"], width, height), rows_obj(rows), style)


def scatter(
    rng: np.random.Generator,
    radii: Sequence[float],
    width: int,
    height: int,
    gap: float = 6.0,
    fixed: Sequence[Obj] = (),
    tries: int = 400,
) -> list[tuple[float, float]] | None:
    """Random non-overlapping centres for objects of the given radii, avoiding ``fixed`` objects.

    Returns None when it cannot place them (the caller draws a new scene).
    """
    placed: list[tuple[float, float, float]] = [(o.x, o.y, o.r) for o in fixed]
    out: list[tuple[float, float]] = []
    for r in radii:
        for _ in range(tries):
            x, y = rng.uniform(r + 3, width - r - 3), rng.uniform(r + 3, height - r - 3)
            if all((x - px) ** 2 + (y - py) ** 2 >= (r + pr + gap) ** 2 for px, py, pr in placed):
                placed.append((x, y, r))
                out.append((float(x), float(y)))
                break
        else:
            return None
    return out
