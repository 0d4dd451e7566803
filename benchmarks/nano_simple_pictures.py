"""Simple pictures: one large shape of a basic colour on a plain background, drawn with PIL (not by the
world's renderer). Does a nano model name both its colour and its shape?

    python benchmarks/nano_simple_pictures.py [--model FOLDER]     # default: the shipped model

The bar of the issue "The nano InternVL that sees" is 18 of 20; once a shipped model meets it, this
becomes a test that loads the shipped model.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from PIL import Image, ImageDraw

from internvl.chat import load

# PIL's own named colours (ImageColor), not the world's palette
BASIC_COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "orange": (255, 140, 0),
    "purple": (128, 0, 128),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon")
SUFFIX = "\nAnswer the question using a single word or phrase."


def polygon(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    """Regular outlines, drawn our own way (the world shifts its triangle and shrinks its square)."""

    def ring(n: int, radius: float, start: float) -> list[tuple[float, float]]:
        return [
            (x + radius * math.cos(start + 2 * math.pi * k / n), y + radius * math.sin(start + 2 * math.pi * k / n))
            for k in range(n)
        ]

    corners = {
        "square": lambda: ring(4, r, math.pi / 4),
        "diamond": lambda: ring(4, r, 0.0),
        "triangle": lambda: ring(3, r, -math.pi / 2),
        "hexagon": lambda: ring(6, r, math.pi / 6),
        "star": lambda: [
            p for pair in zip(ring(5, r, -math.pi / 2), ring(5, 0.4 * r, -math.pi / 2 + math.pi / 5)) for p in pair
        ],
    }
    return corners[shape]()


def simple_picture(rng: np.random.Generator, colour: str, shape: str) -> Image.Image:
    grey = int(rng.integers(235, 256))
    image = Image.new("RGB", (448, 448), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    r = float(rng.uniform(50, 65))
    x, y = (float(v) for v in rng.uniform(r + 40, 448 - r - 40, size=2))
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=BASIC_COLOURS[colour])
    else:
        draw.polygon(polygon(shape, x, y, r), fill=BASIC_COLOURS[colour])
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: the shipped nano model)")
    args = parser.parse_args()
    chat = load(args.model)
    rng = np.random.default_rng(0)
    both_right = 0
    for i in range(20):
        colour, shape = list(BASIC_COLOURS)[i % 6], SHAPES[(i + i // 6) % 6]  # every colour with several shapes
        image = simple_picture(rng, colour, shape)
        said_shape = chat.ask("What shape is shown in the image?" + SUFFIX, images=[image], max_new_tokens=8)
        said_colour = chat.ask(f"What colour is the {shape}?" + SUFFIX, images=[image], max_new_tokens=8)
        right = shape in said_shape.lower() and colour in said_colour.lower()
        both_right += right
        print(f"{colour:>6} {shape:<8} -> colour {said_colour!r}, shape {said_shape!r}{'' if right else '  (wrong)'}")
    print(f"colour and shape both right: {both_right} of 20")


if __name__ == "__main__":
    main()
