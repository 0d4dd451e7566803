"""Reasoning: arithmetic over what is shown, with a step-by-step solution checkable step by step.

Sub-tasks: the sum or the range of the digits on 2-3 cards (test-ood: 4 cards), the difference or
the total of two bars of a chart (test-ood: 6-7 bars), and the total of two kinds of shapes.

Each solution is written by a solver from the scene's facts: one claim per step ("The cards show 3,
5 and 8.", "3 + 5 = 8.", ...). The same solver with a *slip* (a misread value or an arithmetic
error at a chosen step, carried through the later steps) writes the flawed solutions that preference
pairs and process-reward data need, and records the first wrong step.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from internvl.data.world.families import charts
from internvl.data.world.families.base import Family, Scene, draft, number_distractors, obj_rows, pick, rows_obj
from internvl.data.world.families.objects import object_style, paint_objects, render_objects, scatter
from internvl.data.world.render import TILE, Obj, background, font, grid_positions, text_box
from internvl.data.world.sample import LETTERS, Sample
from internvl.data.world.vocab import IN_PAIRS, SHAPES, plural

TASKS = ("cards-sum", "cards-range", "bars-diff", "bars-total", "count-sum")
OOD_TASKS = ("cards-sum", "cards-range", "bars-diff", "bars-total")
CARDS, OOD_CARDS = (2, 3), 4

PHRASES = {
    "cards-sum": (
        "What is the sum of the numbers on the cards?",
        "Add up the numbers shown on the cards. What is the total?",
        "What do the numbers on the cards add up to?",
    ),
    "cards-range": (
        "What is the difference between the largest and the smallest number on the cards?",
        "How much larger is the biggest number on the cards than the smallest one?",
    ),
    "bars-diff": (
        "How much larger is the value of {a} than the value of {b}?",
        "By how much does the {a} bar exceed the {b} bar?",
    ),
    "bars-total": ("What is the sum of the values of {a} and {b}?", "What is the total of the {a} and {b} bars?"),
    "count-sum": ("How many {a} and {b} are there in total?", "What is the total number of {a} and {b} in the image?"),
}

Slip = tuple[int, int, int]  # (step index, delta, which value for a multi-value reading step)


def _join(values: list[int]) -> str:
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _d(slip: Slip | None, step: int) -> int:
    """The error a slip adds at ``step`` (0 elsewhere)."""
    return slip[1] if slip is not None and slip[0] == step else 0


def solve(task: str, facts: dict[str, Any], slip: Slip | None = None) -> tuple[list[str], int]:
    """Steps and final integer answer; with ``slip`` the value made at step ``slip[0]`` is off by ``slip[1]``."""
    if task in ("cards-sum", "cards-range"):
        values = list(facts["values"])
        if slip is not None and slip[0] == 0:
            values[slip[2]] = min(9, max(0, values[slip[2]] + slip[1]))
        steps = [f"The cards show {_join(values)}."]
        if task == "cards-sum":
            acc = values[0]
            for i, v in enumerate(values[1:], start=1):
                res = acc + v + _d(slip, i)
                steps.append(f"{acc} + {v} = {res}.")
                acc = res
            return steps, acc
        hi, lo = max(values) + _d(slip, 1), min(values) + _d(slip, 2)
        diff = hi - lo + _d(slip, 3)
        return steps + [f"The largest number is {hi}.", f"The smallest number is {lo}.", f"{hi} - {lo} = {diff}."], diff
    if task in ("bars-diff", "bars-total"):
        va = min(charts.VMAX, max(0, facts["va"] + _d(slip, 0)))  # a misreading stays on the axis
        vb = min(charts.VMAX, max(0, facts["vb"] + _d(slip, 1)))
        op, res = ("-", va - vb) if task == "bars-diff" else ("+", va + vb)
        res += _d(slip, 2)
        return [
            f"The {facts['a']} bar has a value of {va}.",
            f"The {facts['b']} bar has a value of {vb}.",
            f"{va} {op} {vb} = {res}.",
        ], res
    if task == "count-sum":
        na, nb = max(0, facts["na"] + _d(slip, 0)), max(0, facts["nb"] + _d(slip, 1))
        res = na + nb + _d(slip, 2)

        def there(n: int, shape: str) -> str:
            return f"There is 1 {shape}." if n == 1 else f"There are {n} {plural(shape)}."

        return [there(na, facts["a"]), there(nb, facts["b"]), f"{na} + {nb} = {res}."], res
    raise ValueError(f"unknown reasoning task {task!r}")


def _draw_cards(rng: np.random.Generator, ood: bool) -> dict[str, Any]:
    n = OOD_CARDS if ood else int(rng.integers(CARDS[0], CARDS[1] + 1))
    w, h = int(rng.integers(64, 81)), int(rng.integers(90, 111))
    centres = sorted(grid_positions(rng, n, TILE, TILE, cols=4, rows=1, radius=h / 2))  # one card per column
    cards = [
        {"value": int(rng.integers(0, 10)), "x": int(cx - w / 2), "y": int(cy - h / 2), "w": w, "h": h}
        for cx, cy in centres
    ]
    discs = [Obj("square", "red", c["x"] + w / 2, c["y"] + h / 2, h * 0.6) for c in cards]
    radii = [float(rng.uniform(12, 24)) for _ in range(int(rng.integers(0, 4)))]
    spots = scatter(rng, radii, TILE, TILE, fixed=discs) or []
    clutter = [Obj(s, c, x, y, r) for (c, s), (x, y), r in zip((pick(rng, IN_PAIRS) for _ in spots), spots, radii)]
    return {"cards": cards, "font": int(rng.integers(44, 61)), "clutter": obj_rows(clutter)}


def _draw_counts(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    a, b = (str(s) for s in rng.permutation(list(SHAPES))[:2])
    na, nb = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    others = [p for p in IN_PAIRS if p[1] not in (a, b)]
    styles = [pick(rng, [p for p in IN_PAIRS if p[1] == a]) for _ in range(na)]
    styles += [pick(rng, [p for p in IN_PAIRS if p[1] == b]) for _ in range(nb)]
    styles += [pick(rng, others) for _ in range(int(rng.integers(1, 5)))]
    radii = [float(rng.uniform(12, 24)) for _ in styles]
    centres = grid_positions(rng, len(styles), TILE, TILE, cols=5, rows=5, radius=24)
    objs = [Obj(s, c, x, y, r) for (c, s), (x, y), r in zip(styles, centres, radii)]
    return {"objects": obj_rows(objs)}, {"a": a, "b": b, "na": na, "nb": nb}


def draw(rng: np.random.Generator, ood: bool) -> Scene:
    task = pick(rng, OOD_TASKS if ood else TASKS)
    style = object_style(rng, scribbles=(0, 3))
    if task.startswith("cards"):
        content = _draw_cards(rng, ood)
        return Scene(
            content=content,
            task={"task": task, "facts": {"values": [c["value"] for c in content["cards"]]}},
            style=style,
        )
    if task.startswith("bars"):
        lo, hi = charts.OOD_BARS if ood else charts.BARS
        content = charts.chart_content(rng, int(rng.integers(lo, hi + 1)), distinct_extremes=False)
        values = content["values"]
        while True:
            i, j = (int(v) for v in rng.choice(len(values), size=2, replace=False))
            if values[i] != values[j]:
                break
            content = charts.chart_content(rng, len(values), distinct_extremes=False)
            values = content["values"]
        if task == "bars-diff" and values[i] < values[j]:
            i, j = j, i
        facts = {"a": content["labels"][i], "b": content["labels"][j], "va": values[i], "vb": values[j]}
        return Scene(content=content, task={"task": task, "facts": facts}, style=charts.chart_style(rng))
    content, facts = _draw_counts(rng)
    return Scene(content=content, task={"task": task, "facts": facts}, style=style)


def ask(content: dict[str, Any], rng: np.random.Generator, ood: bool) -> dict[str, Any]:
    """Another question the same picture answers: cards, a bar chart or shapes each have their own tasks.

    ``draw`` picks the task first and makes the picture to suit; here the picture is given. Test-ood
    pictures (4 cards, 6-7 bars) carry the held-out feature themselves, so any of their tasks keeps it.
    """
    if "cards" in content:
        task = pick(rng, ("cards-sum", "cards-range"))
        return {"task": task, "facts": {"values": [c["value"] for c in content["cards"]]}}
    if "labels" in content:
        labels, values = content["labels"], content["values"]
        task = pick(rng, ("bars-diff", "bars-total"))
        pairs = [
            (i, j)
            for i in range(len(values))
            for j in range(len(values))
            if values[i] > values[j] or (task == "bars-total" and values[i] < values[j])
        ]
        i, j = pick(rng, pairs)  # bars-diff asks how much larger a is than b: a > b
        return {"task": task, "facts": {"a": labels[i], "b": labels[j], "va": values[i], "vb": values[j]}}
    counts = Counter(s for s, *_ in content["objects"])
    shapes = sorted(counts)  # only shapes in the picture: a total of 0 + n teaches little
    a, b = (shapes[int(i)] for i in rng.permutation(len(shapes))[:2])
    return {"task": "count-sum", "facts": {"a": a, "b": b, "na": counts[a], "nb": counts[b]}}


def render(task: str, content: dict[str, Any], style: dict[str, Any]) -> Image.Image:
    if task.startswith("bars"):
        return charts.render_chart(content, style)
    if task == "count-sum":
        return render_objects(content["objects"], style, TILE, TILE)
    image = paint_objects(background(style["background"], TILE, TILE), rows_obj(content["clutter"]), style)
    d = ImageDraw.Draw(image)
    size = content["font"]
    for c in content["cards"]:
        box = [c["x"], c["y"], c["x"] + c["w"], c["y"] + c["h"]]
        d.rectangle(box, fill=(248, 248, 244), outline=(60, 60, 60), width=2)
        tb = text_box(str(c["value"]), size)
        cx, cy = c["x"] + c["w"] / 2, c["y"] + c["h"] / 2  # the digit's ink centred on the card
        d.text(
            (cx - (tb[0] + tb[2]) / 2, cy - (tb[1] + tb[3]) / 2), str(c["value"]), fill=(25, 25, 25), font=font(size)
        )
    return image


def build(scene: Scene, rng: np.random.Generator) -> Sample:
    task, facts = scene.task["task"], scene.task["facts"]
    steps, answer = solve(task, facts)
    if task == "count-sum":
        question = pick(rng, PHRASES[task]).format(a=plural(facts["a"]), b=plural(facts["b"]))
    elif task.startswith("bars"):
        question = pick(rng, PHRASES[task]).format(a=facts["a"], b=facts["b"])
    else:
        question = pick(rng, PHRASES[task])
    return draft(
        "reasoning",
        question,
        str(answer),
        "number",
        images=[render(task, scene.content, scene.style)],
        steps=steps,
        distractors=number_distractors(rng, answer, 0),
        meta={"task": task, "facts": facts},
    )


def _candidate_slips(rng: np.random.Generator, facts: dict[str, Any], n_steps: int) -> list[Slip]:
    """Every (step, delta in +-1/+-2, misread value) slip, in random order."""
    n_values = len(facts.get("values", [0]))
    slips = [(s, d, w) for s in range(n_steps) for d in (-2, -1, 1, 2) for w in range(n_values if s == 0 else 1)]
    return [slips[i] for i in rng.permutation(len(slips))]


def flawed_solution(sample: Sample, rng: np.random.Generator) -> tuple[list[str], str, int]:
    """A plausible wrong solution: (steps, final answer, index of the first wrong step).

    For multiple-choice samples a slip whose result is one of the wrong options is preferred, so the
    final answer can be a letter; otherwise the wrong number itself is given.
    """
    task, facts = sample.meta["task"], sample.meta["facts"]
    right_steps, right = solve(task, facts)
    wrong_letters = {opt: LETTERS[i] for i, opt in enumerate(sample.options) if LETTERS[i] != sample.answer}
    fallback: tuple[list[str], str, int] | None = None
    for slip in _candidate_slips(rng, facts, len(right_steps)):
        steps, value = solve(task, facts, slip)
        if value == right or value < 0:
            continue
        first = next(i for i, (a, b) in enumerate(zip(steps, right_steps)) if a != b)
        if not sample.options:
            return steps, str(value), first
        if str(value) in wrong_letters:
            return steps, wrong_letters[str(value)], first
        fallback = fallback or (steps, str(value), first)
    if fallback is None:
        raise ValueError(f"no flawed solution found for {sample.id}")
    return fallback


FAMILY = Family(
    "reasoning",
    draw,
    ask,
    build,
    choice_rate=0.2,
    ood=f"{OOD_CARDS} cards (training {CARDS[0]}-{CARDS[1]}) or "
    f"{charts.OOD_BARS[0]}-{charts.OOD_BARS[1]} bars (training {charts.BARS[0]}-{charts.BARS[1]})",
)
