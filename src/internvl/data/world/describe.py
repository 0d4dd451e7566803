"""What a picture shows, in words: the description turn of a training conversation.

Why: a question supervises one answer about one thing in the picture; a description supervises
every thing in it, each named with its colour, shape, size and place (the stage-1 captions of the
InternVL recipe, made exact because the world knows what it drew). It is added only to training
conversations (`internvl world generate --describe`); evaluation never asks for it.

``describe(family, content)`` returns None for scenes it has no words for (some reasoning tasks).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Sequence

from internvl.data.world.render import TILE
from internvl.data.world.vocab import size_name

PROMPT = "Describe what the picture shows."


def third(value: float, extent: float) -> int:
    """Which third of ``extent`` ``value`` falls in: 0, 1 or 2."""
    return min(2, int(3 * value / extent))


def place(x: float, y: float, width: float, height: float) -> str:
    """One of nine places on a 3x3 grid: "top left" ... "centre" ... "bottom right"."""
    row = ("top", "middle", "bottom")[third(y, height)]
    col = ("left", "centre", "right")[third(x, width)]
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


def objects(rows: Sequence[Sequence[Any]], width: float = TILE, height: float = TILE, sizes: bool = True) -> str:
    """Objects in reading order (top band first, left to right): "large cyan triangle at the top left; ..."."""
    ordered = sorted(rows, key=lambda r: (third(r[3], height), r[2]))
    return "; ".join(
        f"{size_name(r[4]) + ' ' if sizes else ''}{r[1]} {r[0]} at the {place(r[2], r[3], width, height)}"
        for r in ordered
    )


def bars(content: dict[str, Any]) -> str:
    values = ", ".join(f"{label} {value}" for label, value in zip(content["labels"], content["values"]))
    return f"a bar chart titled {content['title']}: {values}"


def texts(content: dict[str, Any]) -> str:
    return "; ".join(f"{item['colour']} text {item['text']}" for item in content["items"])


def motion(track: dict[str, Any]) -> str:
    (x0, y0), (x1, y1) = track["start"], track["end"]
    dx, dy = x1 - x0, y1 - y0
    if abs(dx) < 8 and abs(dy) < 8:
        return "stays still"
    if abs(dx) >= abs(dy):
        return "moves right" if dx > 0 else "moves left"
    return "moves down" if dy > 0 else "moves up"


def video(content: dict[str, Any]) -> str:
    return "; ".join(f"the {t['colour']} {t['shape']} {motion(t)}" for t in content["tracks"])


def images(content: dict[str, Any]) -> str:
    parts = []
    for i, rows in enumerate(content["images"], start=1):
        counts = Counter(f"{row[1]} {row[0]}" for row in rows)
        parts.append(f"Image-{i}: " + ", ".join(f"{n} {name}" for name, n in counts.items()))
    return "; ".join(parts)


def detail(content: dict[str, Any]) -> str:
    width, height = content["canvas"]
    items = sorted(content["items"], key=lambda it: (third(it["y"], height), it["x"]))
    return "; ".join(
        f"{it['frame']} frame with {it.get('pattern') or 'code ' + it['code']} at the "
        f"{place(it['x'] + it['w'] / 2, it['y'] + it['h'] / 2, width, height)}"
        for it in items
    )


def reasoning(content: dict[str, Any]) -> str | None:
    if "values" in content:
        return bars(content)
    if "objects" in content:
        return objects(content["objects"], sizes=False)
    return None


DESCRIBERS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "recognition": lambda c: objects(c["objects"]),
    "counting": lambda c: objects(c["objects"], sizes=False),
    "grounding": lambda c: objects(c["objects"]),
    "spatial": lambda c: objects(c["objects"], sizes=False),
    "reading": texts,
    "charts": bars,
    "detail": detail,
    "multi_image": images,
    "video": video,
    "reasoning": reasoning,
}


def describe(family: str, content: dict[str, Any]) -> str | None:
    """The description of a scene's content, or None where this family's scene has none."""
    return DESCRIBERS[family](content)
