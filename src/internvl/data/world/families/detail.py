"""Detail: a large canvas whose answer sits in a small region only dynamic tiling can resolve.

The canvas is 1344x448 or 896x896 (test-ood: 1792x448, an unseen aspect ratio). Among clutter there
are 3-5 small framed items with distinct frame colours; the question names one frame colour. The
frame colour survives squeezing the canvas into one 448 tile (so the item can be found), but what is
inside does not:

* ``tag``: a 3-digit code in 11-12 px text. Squeezed 3x (or 4x) along x, or 2x both ways, a glyph is
  2-4 px across: illegible. Native 448 tiles (grid 3x1, 4x1 or 2x2, docs/images-and-video.md#dynamic-tiling) keep it at full size.
* ``pattern``: a 20 px patch of a 1-pixel-period texture (stripes, checkerboard or bricks). Every
  texture alternates at the pixel Nyquist rate along x, so a 2x+ downscale averages each of them
  to nearly the same flat grey; at native resolution they are unmistakable.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw

from internvl.data.world.families.base import Family, Scene, draft, obj_rows, pick, rows_obj, word_distractors
from internvl.data.world.families.objects import object_style, paint_objects, scatter
from internvl.data.world.render import TILE, Obj, background, font, text_box
from internvl.data.world.sample import Sample
from internvl.data.world.vocab import COLOUR_NAMES, COLOURS, IN_PAIRS

CANVASES: tuple[tuple[int, int], ...] = ((1344, 448), (896, 896))
OOD_CANVAS = (1792, 448)
MAX_DYNAMIC_PATCH = 6  # 1344x448 -> 3x1 tiles, 896x896 -> 2x2, 1792x448 -> 4x1 (+ thumbnail)
PATCH = 20  # pattern side in px (even, so every texture has whole periods)
FRAME = 3  # frame width in px
DARK, LIGHT = 85, 185  # texture levels: the mean (135) is what survives a downscale
TAG_FONT = {896: 11}  # glyph size by canvas width; 12 px elsewhere
ALIGN = 12  # the inside of an item starts on a multiple of 2, 3 and 4 px: whole squeeze cells

PATTERNS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "stripes": lambda x, y: x % 2,
    "checkerboard": lambda x, y: (x + y) % 2,
    "bricks": lambda x, y: (x + y // 2) % 2,
}
PATTERN_NAMES = tuple(PATTERNS)

PHRASES = {
    "tag": (
        "What number is written on the {colour} tag?",
        "Read the code on the small tag with the {colour} frame.",
        "Which number is printed inside the {colour} frame?",
    ),
    "pattern": (
        "What pattern fills the small {colour} frame: stripes, checkerboard or bricks?",
        "Which texture is inside the {colour} frame (stripes, checkerboard or bricks)?",
        "Is the patch in the {colour} frame striped, a checkerboard, or bricks?",
    ),
}


def tag_font_size(canvas_width: int) -> int:
    return TAG_FONT.get(canvas_width, 12)


def item_size(item: dict[str, Any], canvas_width: int) -> tuple[int, int]:
    """Outer (width, height) of a framed item in px."""
    if item["kind"] == "pattern":
        return PATCH + 2 * FRAME, PATCH + 2 * FRAME
    x1, y1, x2, y2 = text_box(item["code"], tag_font_size(canvas_width))
    return (x2 - x1) + 2 * FRAME + 8, (y2 - y1) + 2 * FRAME + 8


def texture(name: str) -> np.ndarray:
    """(PATCH, PATCH) uint8 grey texture."""
    y, x = np.mgrid[0:PATCH, 0:PATCH]
    return np.where(PATTERNS[name](x, y).astype(bool), LIGHT, DARK).astype(np.uint8)


def draw(rng: np.random.Generator, ood: bool) -> Scene:
    width, height = OOD_CANVAS if ood else CANVASES[int(rng.integers(len(CANVASES)))]
    kind = pick(rng, ("tag", "pattern"))
    n = int(rng.integers(3, 6))
    frames = [str(c) for c in rng.permutation(list(COLOUR_NAMES))[:n]]
    items: list[dict[str, Any]] = []
    placed: list[Obj] = []
    for colour in frames:
        item: dict[str, Any] = {"kind": kind, "frame": colour}
        if kind == "tag":
            item["code"] = str(int(rng.integers(100, 1000)))
        else:
            item["pattern"] = pick(rng, PATTERN_NAMES)
        w, h = item_size(item, width)
        while True:  # inside one 448 tile (never cut by a tile edge) and clear of the other items
            tx, ty = int(rng.integers(width // TILE)), int(rng.integers(height // TILE))
            x = tx * TILE + int(rng.integers(24, TILE - 12 - w))
            y = ty * TILE + int(rng.integers(24, TILE - 12 - h))
            x, y = x - (x + FRAME) % ALIGN, y - (y + FRAME) % ALIGN  # texture on the squeeze grid
            disc = Obj("square", colour, x + w / 2, y + h / 2, max(w, h) * 0.75)
            if all((disc.x - o.x) ** 2 + (disc.y - o.y) ** 2 > (disc.r + o.r + 10) ** 2 for o in placed):
                break
        placed.append(disc)
        items.append({**item, "x": x, "y": y, "w": w, "h": h})
    n_clutter = int(rng.integers(4, 11))
    radii = [float(rng.uniform(14, 40)) for _ in range(n_clutter)]
    centres = scatter(rng, radii, width, height, gap=10, fixed=placed) or []
    clutter = [Obj(s, c, x, y, r) for (c, s), (x, y), r in zip((pick(rng, IN_PAIRS) for _ in centres), centres, radii)]
    content = {"canvas": [width, height], "items": items, "clutter": obj_rows(clutter)}
    return Scene(content=content, task=ask(content, rng, ood), style=object_style(rng, scribbles=(0, 4)))


def ask(content: dict[str, Any], rng: np.random.Generator, ood: bool) -> dict[str, Any]:
    """Any framed item (test-ood differs by its canvas, which is content)."""
    return {"target": int(rng.integers(len(content["items"])))}


def render(content: dict[str, Any], style: dict[str, Any]) -> Image.Image:
    width, height = content["canvas"]
    image = paint_objects(background(style["background"], width, height), rows_obj(content["clutter"]), style)
    d = ImageDraw.Draw(image)
    for it in content["items"]:
        x, y, w, h = it["x"], it["y"], it["w"], it["h"]
        d.rectangle([x, y, x + w - 1, y + h - 1], fill=(245, 245, 245), outline=COLOURS[it["frame"]], width=FRAME)
        if it["kind"] == "pattern":
            image.paste(Image.fromarray(texture(it["pattern"]), "L").convert("RGB"), (x + FRAME, y + FRAME))
        else:
            size = tag_font_size(width)
            tb = text_box(it["code"], size)
            d.text((x + FRAME + 4 - tb[0], y + FRAME + 4 - tb[1]), it["code"], fill=(15, 15, 15), font=font(size))
    return image


def build(scene: Scene, rng: np.random.Generator) -> Sample:
    items = scene.content["items"]
    t = scene.task["target"]
    item = items[t]
    image = render(scene.content, scene.style)
    question = pick(rng, PHRASES[item["kind"]]).format(colour=item["frame"])
    meta = {"items": items, "target": t, "canvas": scene.content["canvas"]}
    if item["kind"] == "tag":
        code = item["code"]
        near = [str(int(code[:i] + d + code[i + 1 :])) for i in range(3) for d in "0123456789"]
        near = [c for c in dict.fromkeys(near) if c != code and len(c) == 3]
        others = [it["code"] for it in items if it["code"] != code]
        distractors = list(dict.fromkeys(others + [near[i] for i in rng.permutation(len(near))[:6]]))
        return draft(
            "detail",
            question,
            code,
            "text",
            images=[image],
            distractors=distractors,
            max_dynamic_patch=MAX_DYNAMIC_PATCH,
            meta=meta,
        )
    answer = item["pattern"]
    return draft(
        "detail",
        question,
        answer,
        "word",
        images=[image],
        answer_space=list(PATTERN_NAMES),
        distractors=word_distractors(rng, answer, PATTERN_NAMES),
        max_dynamic_patch=MAX_DYNAMIC_PATCH,
        meta=meta,
    )


FAMILY = Family("detail", draw, ask, build, ood=f"canvas {OOD_CANVAS[0]}x{OOD_CANVAS[1]} (training 1344x448, 896x896)")
