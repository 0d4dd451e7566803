"""A starting point for users: fine-tune the shipped nano model on a small visual-question set that is
not the world, then score it on that set's held-out split.

    python benchmarks/finetune_shapes.py [--train 12000] [--steps 3400] [--out runs/shapes] [--append]

The set: one to three shapes drawn with PIL on a plain background, in words the world never uses
(colours crimson, navy, lime, gold, teal, magenta; shapes oval, rectangle, pentagon, cross, ring,
arrow) and questions of its own. It is written in the official SFT format (a JSONL of conversations
and a meta.json), fine-tuned with `internvl train sft` (configs/nano_finetune_shapes.yaml, starting
from the embedded model), and scored by exact match on held-out pictures, next to the shipped model
before fine-tuning (the baseline, same pictures, same run).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parent))

COLOURS = {
    "crimson": (200, 20, 60),
    "navy": (20, 30, 120),
    "lime": (120, 220, 40),
    "gold": (230, 180, 20),
    "teal": (0, 128, 128),
    "magenta": (220, 0, 160),
}
SHAPES = ("oval", "rectangle", "pentagon", "cross", "ring", "arrow")
SUFFIX = "\nAnswer with one word."
QUESTIONS = {
    "colour": ("Which paint was used for the {shape}?", "The {shape} is painted in which colour?"),
    "shape": ("Which figure is painted {colour}?", "What is the {colour} figure called?"),
    "count": ("How many figures are drawn?",),
}
NUMBERS = ("zero", "one", "two", "three")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float, fill: tuple[int, int, int]) -> None:
    if shape == "oval":
        draw.ellipse([x - r, y - 0.6 * r, x + r, y + 0.6 * r], fill=fill)
    elif shape == "rectangle":
        draw.rectangle([x - r, y - 0.5 * r, x + r, y + 0.5 * r], fill=fill)
    elif shape == "pentagon":
        draw.polygon(
            [
                (
                    x + r * math.cos(-math.pi / 2 + 2 * math.pi * k / 5),
                    y + r * math.sin(-math.pi / 2 + 2 * math.pi * k / 5),
                )
                for k in range(5)
            ],
            fill=fill,
        )
    elif shape == "cross":
        draw.rectangle([x - r, y - 0.3 * r, x + r, y + 0.3 * r], fill=fill)
        draw.rectangle([x - 0.3 * r, y - r, x + 0.3 * r, y + r], fill=fill)
    elif shape == "ring":
        draw.ellipse([x - r, y - r, x + r, y + r], outline=fill, width=max(4, int(r / 3)))
    else:  # arrow, pointing right
        draw.polygon(
            [
                (x - r, y - 0.25 * r),
                (x + 0.2 * r, y - 0.25 * r),
                (x + 0.2 * r, y - 0.6 * r),
                (x + r, y),
                (x + 0.2 * r, y + 0.6 * r),
                (x + 0.2 * r, y + 0.25 * r),
                (x - r, y + 0.25 * r),
            ],
            fill=fill,
        )


def make_picture(rng: np.random.Generator) -> tuple[Image.Image, list[tuple[str, str]]]:
    """One to three figures with distinct colours and shapes, side by side on a plain background."""
    n = int(rng.integers(1, 4))
    colours = [str(c) for c in rng.permutation(list(COLOURS))[:n]]
    shapes = [str(s) for s in rng.permutation(list(SHAPES))[:n]]
    grey = int(rng.integers(225, 256))
    image = Image.new("RGB", (448, 448), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    slots = rng.permutation(4)[:n]  # quadrants: never overlapping
    for (colour, shape), slot in zip(zip(colours, shapes), slots):
        r = float(rng.uniform(45, 75))
        cx, cy = 112 + 224 * (slot % 2), 112 + 224 * (slot // 2)
        x, y = (cx + float(rng.uniform(-100 + r, 100 - r)), cy + float(rng.uniform(-100 + r, 100 - r)))
        draw_shape(draw, shape, x, y, r, COLOURS[colour])
    return image, list(zip(colours, shapes))


def questions(rng: np.random.Generator, figures: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(question, answer) pairs about a picture: each figure's colour and shape, and the count."""
    out = []
    for colour, shape in figures:
        out.append((str(rng.choice(QUESTIONS["colour"])).format(shape=shape), colour))
        out.append((str(rng.choice(QUESTIONS["shape"])).format(colour=colour), shape))
    out.append((QUESTIONS["count"][0], NUMBERS[len(figures)]))
    return [out[int(i)] for i in rng.permutation(len(out))]


def write_split(out: Path, name: str, n: int, seed: int) -> list[dict]:
    """Pictures under OUT/images/NAME and OUT/NAME.jsonl (official SFT format: one conversation per picture),
    image paths relative to OUT: the layout README's "Fine-tune on your own data" describes."""
    rng = np.random.default_rng(seed)
    (out / "images" / name).mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        image, figures = make_picture(rng)
        path = f"images/{name}/{i:05d}.png"
        image.save(out / path)
        turns = []
        for k, (question, answer) in enumerate(questions(rng, figures)):
            turns += [
                {"from": "human", "value": ("<image>\n" if k == 0 else "") + question + SUFFIX},
                {"from": "gpt", "value": answer},
            ]
        records.append({"id": f"{name}-{i}", "image": path, "conversations": turns})
    (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return records


def kind_of(answer: str) -> str:
    return "colour" if answer in COLOURS else "shape" if answer in SHAPES else "count"


def score(chat, out: Path, records: list[dict]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Exact-match accuracy over every question of the held-out pictures, each asked alone: overall
    ("all") and by kind of question (colour, shape, count)."""
    right: dict[str, int] = {}
    total: dict[str, int] = {}
    for record in records:
        image = Image.open(out / record["image"]).convert("RGB")
        turns = record["conversations"]
        asked = [turns[k]["value"].removeprefix("<image>\n") for k in range(0, len(turns), 2)]
        answers = chat.ask_batch(asked, images=[[image]] * len(asked), max_new_tokens=6)
        for said, turn in zip(answers, turns[1::2]):
            for kind in ("all", kind_of(turn["value"])):
                right[kind] = right.get(kind, 0) + (said.strip().lower().rstrip(".") == turn["value"])
                total[kind] = total.get(kind, 0) + 1
    return {kind: right[kind] / total[kind] for kind in total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/shapes"))
    parser.add_argument("--train", type=int, default=12000, help="training pictures")
    parser.add_argument("--test", type=int, default=100, help="held-out pictures")
    parser.add_argument("--steps", type=int, default=3400, help="optimiser steps of the fine-tune")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()

    from common import machine_line, publish  # benchmarks/common.py

    from internvl.chat import load
    from internvl.train.sft import export_model, load_config, run

    start = time.perf_counter()
    write_split(args.out, "train", args.train, seed=1)
    test = write_split(args.out, "test", args.test, seed=2)
    meta = {
        "shapes_train": {
            "root": str(args.out.resolve()) + "/",
            "annotation": str((args.out / "train.jsonl").resolve()),
            "repeat_time": 1,
            "length": args.train,
            "max_dynamic_patch": 1,
        }
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    made = time.perf_counter() - start

    def row(accuracy: dict[str, float]) -> str:
        return " | ".join(f"{100 * accuracy[kind]:.1f}" for kind in ("all", "colour", "shape", "count"))

    before = score(load(), args.out, test)
    config = load_config(
        Path(__file__).parents[1] / "configs" / "nano_finetune_shapes.yaml",
        [
            "model.path=nano",  # the shipped model by name; the tokenizer defaults to the model's own
            f"data.options.meta_path={args.out / 'meta.json'}",
            f"output_dir={args.out / 'run'}",
            f"train.max_steps={args.steps}",
        ],
    )
    tuned_at = time.perf_counter()
    result = run(config)
    minutes = (time.perf_counter() - tuned_at) / 60
    model = export_model(result["checkpoint"], args.out / "model")
    after = score(load(str(model)), args.out, test)
    publish(
        [
            "## Fine-tuning the nano model on a PIL shapes set (benchmarks/finetune_shapes.py)",
            "",
            machine_line(),
            "",
            f"Its own words; {args.train} training pictures, {args.test} held out; data made in {made:.0f} s.",
            "",
            "| model | held-out exact match % | colour | shape | count | fine-tune minutes |",
            "|---|---:|---:|---:|---:|---:|",
            f"| shipped nano, no fine-tune | {row(before)} | - |",
            f"| fine-tuned, {args.steps} steps | {row(after)} | {minutes:.1f} |",
        ],
        append=args.append,
    )


if __name__ == "__main__":
    main()
