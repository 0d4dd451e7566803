"""Charts: bar charts with labelled bars; which bar is highest or lowest, what a bar's value is.

Values are integers 1-10 read against a 0-10 axis with grid lines; half the charts also print the
value above each bar. Training charts have 3-5 bars, test-ood charts 6-7.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from internvl.data.world.families.base import Family, Scene, draft, number_distractors, pick, word_distractors
from internvl.data.world.render import TILE, background, background_style, font, text_box
from internvl.data.world.sample import Sample
from internvl.data.world.vocab import CHART_TITLES, COLOURS, LABELS

BARS, OOD_BARS, VMAX = (3, 5), (6, 7), 10
PLOT = (52, 48, 432, 392)  # x0, y0 (top), x1, y1 (axis line) of the plotting area

PHRASES = {
    "highest": (
        "Which bar is the highest?",
        "Which category has the largest value?",
        "Which label has the tallest bar?",
    ),
    "lowest": (
        "Which bar is the lowest?",
        "Which category has the smallest value?",
        "Which label has the shortest bar?",
    ),
    "value": (
        "What is the value of the {label} bar?",
        "What value does {label} have?",
        "How high is the bar for {label}?",
    ),
}


def chart_content(rng: np.random.Generator, n_bars: int, distinct_extremes: bool = True) -> dict[str, Any]:
    """Labels, values (unique maximum and minimum) and look of a bar chart."""
    labels = [str(w) for w in rng.permutation(list(LABELS))[:n_bars]]
    while True:
        values = [int(v) for v in rng.integers(1, VMAX + 1, size=n_bars)]
        if not distinct_extremes or (values.count(max(values)) == 1 and values.count(min(values)) == 1):
            break
    palette = list(COLOURS)
    one = pick(rng, palette)
    colours = [one] * n_bars if rng.random() < 0.5 else [str(c) for c in rng.permutation(palette)[:n_bars]]
    return {
        "labels": labels,
        "values": values,
        "colours": colours,
        "annotated": bool(rng.random() < 0.5),
        "title": pick(rng, CHART_TITLES),
    }


def chart_style(rng: np.random.Generator) -> dict[str, Any]:
    bg = background_style(rng)
    bg["noise"] = min(bg["noise"], 6)  # charts are clean documents: keep the noise low
    bg["amplitude"] = min(bg["amplitude"], 10.0)
    return {"background": bg}


def bar_x(i: int, n: int) -> tuple[float, float]:
    """Left and right pixel edges of bar ``i`` of ``n``."""
    x0, _, x1, _ = PLOT
    slot = (x1 - x0) / n
    return x0 + slot * (i + 0.2), x0 + slot * (i + 0.8)


def value_y(v: float) -> float:
    _, y0, _, y1 = PLOT
    return y1 - v / VMAX * (y1 - y0)


def render_chart(content: dict[str, Any], style: dict[str, Any]) -> Image.Image:
    image = background(style["background"], TILE, TILE)
    d = ImageDraw.Draw(image)
    x0, y0, x1, y1 = PLOT
    small, mid = font(13), font(15)
    for v in range(0, VMAX + 1, 2):  # grid lines and tick labels
        y = value_y(v)
        d.line([(x0, y), (x1, y)], fill=(200, 200, 200), width=1)
        tb = text_box(str(v), 13)
        d.text((x0 - 8 - tb[2], y - (tb[1] + tb[3]) / 2), str(v), fill=(40, 40, 40), font=small)
    n = len(content["values"])
    for i, (label, v, c) in enumerate(zip(content["labels"], content["values"], content["colours"])):
        left, right = bar_x(i, n)
        d.rectangle([left, value_y(v), right, y1], fill=COLOURS[c], outline=(40, 40, 40))
        lb = text_box(label, 15)
        d.text(((left + right) / 2 - (lb[0] + lb[2]) / 2, y1 + 8), label, fill=(20, 20, 20), font=mid)
        if content["annotated"]:
            vb = text_box(str(v), 13)
            d.text(((left + right) / 2 - (vb[0] + vb[2]) / 2, value_y(v) - 18), str(v), fill=(20, 20, 20), font=small)
    d.line([(x0, y0 - 6), (x0, y1), (x1, y1)], fill=(30, 30, 30), width=2)  # axes
    if content["title"]:
        tb = text_box(content["title"], 17)
        d.text((TILE / 2 - (tb[0] + tb[2]) / 2, 14), content["title"], fill=(20, 20, 20), font=font(17))
    return image


def draw(rng: np.random.Generator, ood: bool) -> Scene:
    lo, hi = OOD_BARS if ood else BARS
    content = chart_content(rng, int(rng.integers(lo, hi + 1)))
    return Scene(content=content, task=ask(content, rng, ood), style=chart_style(rng))


def ask(content: dict[str, Any], rng: np.random.Generator, ood: bool) -> dict[str, Any]:
    """Any question (test-ood differs by its number of bars, which is content); ``bar`` only for values."""
    kind = pick(rng, tuple(PHRASES))
    bar = int(rng.integers(len(content["values"])))  # drawn for every kind: keeps the random stream fixed
    return {"kind": kind, "bar": bar} if kind == "value" else {"kind": kind}


def build(scene: Scene, rng: np.random.Generator) -> Sample:
    c = scene.content
    labels, values = c["labels"], c["values"]
    kind = scene.task["kind"]
    image = render_chart(c, scene.style)
    meta = {"labels": labels, "values": values, "kind": kind}
    if kind == "value":
        i = scene.task["bar"]
        question = pick(rng, PHRASES["value"]).format(label=labels[i])
        return draft(
            "charts",
            question,
            str(values[i]),
            "number",
            images=[image],
            distractors=number_distractors(rng, values[i], 0, VMAX),
            meta={**meta, "bar": i},
        )
    i = values.index(max(values) if kind == "highest" else min(values))
    by_rank = sorted(range(len(values)), key=lambda j: values[j], reverse=kind == "highest")
    return draft(
        "charts",
        pick(rng, PHRASES[kind]),
        labels[i],
        "word",
        images=[image],
        answer_space=list(labels),
        distractors=word_distractors(rng, labels[i], labels, [labels[j] for j in by_rank]),
        meta=meta,
    )


FAMILY = Family("charts", draw, ask, build, ood=f"{OOD_BARS[0]}-{OOD_BARS[1]} bars (training {BARS[0]}-{BARS[1]})")
