"""Reading (OCR): words and numbers rendered in the image, one text or two told apart by colour.

Training reads words from ``IN_WORDS`` and numbers of 1-4 digits; test-ood reads held-out words and
5-digit numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import ImageDraw

from internvl.data.world.families.base import Family, Scene, draft, pick
from internvl.data.world.families.objects import object_style
from internvl.data.world.render import TILE, background, draw_scribbles, font, text_box
from internvl.data.world.sample import Sample
from internvl.data.world.vocab import IN_WORDS, OOD_WORDS, TEXT_COLOURS

PHRASES = {
    "word": (
        "What word is written in the image?",
        "What does the text in the image say?",
        "Read the word shown in the picture.",
        "Which word appears in the image?",
    ),
    "number": (
        "What number is written in the image?",
        "Which number is shown in the picture?",
        "Read the number in the image.",
        "What is the number displayed?",
    ),
    "two": (
        "What does the {colour} text say?",
        "What is written in {colour}?",
        "Read the {colour} text.",
        "Which word or number is printed in {colour}?",
    ),
}


def _text(rng: np.random.Generator, ood: bool) -> tuple[str, str]:
    """(kind, canonical text): a word or a number."""
    if rng.random() < 0.6:
        words = sorted(OOD_WORDS) if ood else IN_WORDS
        return "word", pick(rng, words)
    digits = 5 if ood else int(rng.integers(1, 5))
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    return "number", str(int(rng.integers(lo, 10**digits)))


def _shown(rng: np.random.Generator, text: str) -> str:
    """The text as drawn: words in lower, upper or title case."""
    return pick(rng, (text, text.upper(), text.capitalize()))


def draw(rng: np.random.Generator, ood: bool) -> Scene:
    n = 1 if rng.random() < 0.6 else 2
    colours = [str(c) for c in rng.permutation(list(TEXT_COLOURS))[:n]]
    items = []
    for i in range(n):
        kind, text = _text(rng, ood and i == 0)
        shown = _shown(rng, text)
        size = int(rng.integers(22, 57))
        x1, y1, x2, y2 = text_box(shown, size)
        band_top, band_h = (0, TILE) if n == 1 else (i * TILE // 2, TILE // 2)
        x = int(rng.integers(8, max(9, TILE - 8 - x2)))
        y = int(rng.integers(band_top + 8 - y1, max(band_top + 9 - y1, band_top + band_h - 8 - y2)))
        items.append({"kind": kind, "text": text, "shown": shown, "size": size, "x": x, "y": y, "colour": colours[i]})
    content = {"items": items}
    return Scene(content=content, task=ask(content, rng, ood), style=object_style(rng, scribbles=(0, 3)))


def ask(content: dict[str, Any], rng: np.random.Generator, ood: bool) -> dict[str, Any]:
    """Either text; in test-ood the first one, the held-out word or number."""
    return {"target": 0 if ood else int(rng.integers(len(content["items"])))}


def _similar(rng: np.random.Generator, item: dict, others: list[str]) -> list[str]:
    """Plausible misreadings: the other text, then look-alike words or numbers one digit off."""
    text = item["text"]
    if item["kind"] == "number":
        alts = {str(int(text[:i] + d + text[i + 1 :])) for i in range(len(text)) for d in "0123456789"}
        alts.discard(text)
        near = sorted(sorted(alts), key=lambda a: (len(a) != len(text), rng.random()))[:6]  # sets are unordered
    else:
        pool = [w for w in IN_WORDS if w != text]
        near = sorted(pool, key=lambda w: (abs(len(w) - len(text)) + (w[0] != text[0]), rng.random()))[:6]
    return list(dict.fromkeys([o for o in others if o != text] + near))


def build(scene: Scene, rng: np.random.Generator) -> Sample:
    items = scene.content["items"]
    image = background(scene.style["background"], TILE, TILE)
    draw_ = ImageDraw.Draw(image)
    draw_scribbles(draw_, np.random.default_rng(scene.style["jitter_seed"]), TILE, TILE, scene.style["scribbles"])
    for it in items:
        draw_.text((it["x"], it["y"]), it["shown"], fill=TEXT_COLOURS[it["colour"]], font=font(it["size"]))
    t = scene.task["target"]
    item = items[t]
    if len(items) == 1:
        question = pick(rng, PHRASES[item["kind"]])
    else:
        question = pick(rng, PHRASES["two"]).format(colour=item["colour"])
    others = [it["text"] for i, it in enumerate(items) if i != t]
    return draft(
        "reading",
        question,
        item["text"],
        "text",
        images=[image],
        distractors=_similar(rng, item, others),
        meta={"items": items, "target": t},
    )


FAMILY = Family("reading", draw, ask, build, ood="held-out words and 5-digit numbers (training: 1-4 digits)")
