"""Drawing primitives: noisy backgrounds, shapes, text, placement and box normalisation.

Everything draws with PIL and numpy from an explicit ``numpy.random.Generator``, so a picture is a
pure function of its scene. Noise is drawn in small blocks rather than per pixel: it still breaks
flat colour, but PNG compresses it about 8x better and it is several times faster to make.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from internvl.data.world.vocab import COLOURS

TILE = 448  # the InternVL tile side; single-image families render at TILE x TILE


@dataclass(frozen=True)
class Obj:
    """One drawn shape: centre, radius (half extent) and names, in canvas pixels."""

    shape: str
    colour: str
    x: float
    y: float
    r: float

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def background_style(rng: np.random.Generator) -> dict:
    """Draw the nuisance parameters of a background (they never decide a split)."""
    tint = rng.uniform(-15, 15, size=3)
    return {
        "base": [float(v) for v in rng.uniform(182, 228) + tint],
        "kind": str(rng.choice(["flat", "gradient", "stripes", "checker"])),
        "axis": int(rng.integers(2)),
        "amplitude": float(rng.uniform(8, 22)),
        "period": int(rng.integers(18, 64)),
        "noise": int(rng.integers(4, 15)),
        "block": int(rng.integers(3, 5)),  # noise block side in px: coarse blocks keep PNGs small and fast
        "noise_seed": int(rng.integers(2**31)),
    }


def background(style: dict, width: int, height: int) -> Image.Image:
    """A pale, textured, noisy RGB canvas described by ``style`` (see :func:`background_style`).

    Built at the noise-block resolution (``block`` px per cell) with numpy and enlarged with
    nearest-neighbour: the texture and noise look the same as per-pixel work at a fraction of the
    cost, and the repeated rows make the PNG small and fast (see ``png.py``).
    """
    rng = np.random.default_rng(style["noise_seed"])
    b, amp, period = style["block"], style["amplitude"], style["period"] / style["block"]
    rows, cols = -(-height // b), -(-width // b)
    n = cols if style["axis"] == 0 else rows
    t = np.arange(n, dtype=np.float32)
    if style["kind"] == "gradient":
        ramp = (t / max(n - 1, 1) - 0.5) * 2 * amp
    elif style["kind"] == "stripes":
        ramp = amp * 0.5 * np.sin(2 * math.pi * t / period)
    else:
        ramp = np.zeros(n, dtype=np.float32)
    field = ramp[None, :] if style["axis"] == 0 else ramp[:, None]  # (1, cols) or (rows, 1)
    if style["kind"] == "checker":
        field = field + ((np.arange(rows)[:, None] // period + np.arange(cols)[None, :] // period) % 2) * (amp / 2)
    noise = rng.integers(-style["noise"], style["noise"] + 1, size=(rows, cols, 1))  # grey noise
    cells = np.asarray(style["base"], dtype=np.float32) + (field[:, :, None] if field.ndim == 2 else field) + noise
    small = Image.fromarray(np.clip(cells, 0, 255).astype(np.uint8), "RGB")  # (rows, cols, 3)
    return small.resize((cols * b, rows * b), Image.Resampling.NEAREST).crop((0, 0, width, height))


def shape_points(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of ``shape`` centred at (x, y) with half extent ``r`` (circles: none)."""

    def ring(n: int, radius: float, start: float) -> list[tuple[float, float]]:
        return [
            (x + radius * math.cos(start + 2 * math.pi * k / n), y + radius * math.sin(start + 2 * math.pi * k / n))
            for k in range(n)
        ]

    if shape == "circle":
        return []
    if shape == "square":
        h = 0.86 * r
        return [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]
    if shape == "diamond":
        return ring(4, r, -math.pi / 2)
    if shape == "triangle":
        pts = ring(3, r * 1.1, -math.pi / 2)
        return [(px, py + 0.25 * r) for px, py in pts]  # centre the triangle's box vertically
    if shape == "hexagon":
        return ring(6, r, 0.0)
    if shape == "star":
        outer, inner = ring(5, r, -math.pi / 2), ring(5, 0.45 * r, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    raise ValueError(f"unknown shape {shape!r}")


def shape_box(obj: Obj) -> tuple[float, float, float, float]:
    """Tight (x1, y1, x2, y2) pixel box of a drawn shape."""
    pts = shape_points(obj.shape, obj.x, obj.y, obj.r)
    if not pts:
        return (obj.x - obj.r, obj.y - obj.r, obj.x + obj.r, obj.y + obj.r)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


def draw_obj(
    draw: ImageDraw.ImageDraw, obj: Obj, fill: tuple[int, int, int] | None = None, outline: bool = False
) -> None:
    """Draw one shape; ``fill`` defaults to the named colour, ``outline`` adds a dark 2 px edge."""
    colour = fill if fill is not None else COLOURS[obj.colour]
    edge = (30, 30, 30) if outline else None
    pts = shape_points(obj.shape, obj.x, obj.y, obj.r)
    if pts:
        draw.polygon(pts, fill=colour, outline=edge, width=2 if outline else 1)
    else:
        draw.ellipse(shape_box(obj), fill=colour, outline=edge, width=2 if outline else 1)


def draw_scribbles(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int, n: int) -> None:
    """Thin grey lines as clutter that never looks like a shape."""
    for _ in range(n):
        x1, x2 = rng.uniform(0, width, 2)
        y1, y2 = rng.uniform(0, height, 2)
        g = int(rng.integers(90, 170))
        draw.line([(x1, y1), (x2, y2)], fill=(g, g, g), width=1)


@functools.lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` px (Pillow >= 10.1 with FreeType); no font file needed."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the fixed-size bitmap font exists
        return ImageFont.load_default()


def text_box(text: str, size: int) -> tuple[int, int, int, int]:
    """Ink box of ``text`` drawn at the origin, as (x1, y1, x2, y2)."""
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    x1, y1, x2, y2 = probe.textbbox((0, 0), text, font=font(size))
    return int(x1), int(y1), int(x2), int(y2)


def grid_positions(
    rng: np.random.Generator, n: int, width: int, height: int, cols: int, rows: int, radius: float, margin: float = 3.0
) -> list[tuple[float, float]]:
    """Centres for ``n`` objects of half extent <= ``radius`` that can never overlap.

    Why a jittered grid: one random cell per object (without replacement) and a jitter that keeps
    the object inside its cell is overlap-free by construction and needs no rejection loop.
    """
    if n > cols * rows:
        raise ValueError(f"{n} objects do not fit a {cols}x{rows} grid")
    cw, ch = width / cols, height / rows
    slack_x, slack_y = max(0.0, cw / 2 - radius - margin), max(0.0, ch / 2 - radius - margin)
    cells = rng.permutation(cols * rows)[:n]
    out = []
    for c in cells:
        cx, cy = (c % cols + 0.5) * cw, (c // cols + 0.5) * ch
        out.append((float(cx + rng.uniform(-slack_x, slack_x)), float(cy + rng.uniform(-slack_y, slack_y))))
    return out


def to_box1000(box: tuple[float, float, float, float], width: int, height: int) -> list[int]:
    """Pixel box -> integer [x1, y1, x2, y2] in 0..1000 (the ``<box>`` convention, docs/prompts.md#special-tokens)."""
    x1, y1, x2, y2 = box
    return [
        int(round(min(max(v, 0.0), float(s)) / s * 1000))
        for v, s in ((x1, width), (y1, height), (x2, width), (y2, height))
    ]


def box_text(box: list[int]) -> str:
    """``[[x1, y1, x2, y2]]`` as InternVL writes it inside ``<box>``."""
    return "[[" + ", ".join(str(v) for v in box) + "]]"


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
