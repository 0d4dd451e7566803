"""Warm-up pictures for the nano model: one or two *large* objects on the world's backgrounds.

    python -m internvl.nano.warmup --out runs/nano/warmup --n 6000 [--mix runs/nano/world-train/meta.json]

Why: a decoder trained from scratch next to a frozen encoder must first learn to read an object's
colour and shape from the image tokens, and then to find the few tokens that hold a small object among
64. World objects cover one to four of a tile's 64 tokens, too few for the first lesson to start
(docs/nano/README.md#the-warm-up-pictures). Objects that cover a quarter of the tile or more make the
picture's average token carry the answer, so the first lesson starts at once; mixed into SFT they keep
it going while the world's small objects teach the second.

The pictures use the world's palette, shapes, backgrounds and question wording, so the warm-up
teaches nothing the world does not ask; they are drawn from their own random stream (``seed``), apart
from the world's train/val/test split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from internvl.data.world.export import write_meta
from internvl.data.world.families.base import obj_rows, pick
from internvl.data.world.families.objects import object_style, render_objects, scatter
from internvl.data.world.families.recognition import ALONE, PHRASES
from internvl.data.world.render import TILE, Obj
from internvl.data.world.sample import SHORT_SUFFIX
from internvl.data.world.vocab import distinct_styles
from internvl.errors import InputError
from internvl.inputs.tokens import IMAGE_PLACEHOLDER

RADIUS = {1: (70.0, 150.0), 2: (55.0, 95.0)}  # object radius in px by object count (world "large" is 46-58)


def warmup_scene(rng: np.random.Generator) -> tuple[list[Obj], dict[str, Any]]:
    """One or two large objects with distinct colours and shapes, and the picture's nuisance style."""
    while True:
        n = 1 + int(rng.random() < 0.4)
        radii = [float(rng.uniform(*RADIUS[n])) for _ in range(n)]
        centres = scatter(rng, radii, TILE, TILE, gap=10.0)
        if centres is not None:
            break
    styles = distinct_styles(rng, n)
    objs = [Obj(shape=s, colour=c, x=x, y=y, r=r) for (c, s), (x, y), r in zip(styles, centres, radii)]
    return objs, object_style(rng, scribbles=(0, 2))


def warmup_questions(rng: np.random.Generator, objs: list[Obj]) -> list[tuple[str, str]]:
    """(question, answer) pairs: the colour and the shape of every object, in random order."""
    pairs = []
    for obj in objs:
        for attribute in ("colour", "shape"):
            phrases = PHRASES[attribute] + (ALONE[attribute] if len(objs) == 1 else ())
            question = pick(rng, phrases).format(shape=obj.shape, colour=obj.colour)
            pairs.append((f"{question}\n{SHORT_SUFFIX}", obj.colour if attribute == "colour" else obj.shape))
    return [pairs[int(i)] for i in rng.permutation(len(pairs))]


def warmup_line(rng: np.random.Generator, image_path: str, objs: list[Obj]) -> dict[str, Any]:
    """One SFT JSONL object (docs/sft.md#annotation-lines): the image in the first user turn."""
    conversations = []
    for i, (question, answer) in enumerate(warmup_questions(rng, objs)):
        human = f"{IMAGE_PLACEHOLDER}\n{question}" if i == 0 else question
        conversations += [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]
    return {"id": Path(image_path).stem, "image": image_path, "conversations": conversations, "objects": obj_rows(objs)}


def export_warmup(out: str | Path, n: int, seed: int = 1234, progress: bool = True) -> Path:
    """Write ``n`` pictures and their conversations to ``out`` (images/, warmup.jsonl, meta.json)."""
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    annotation = out / "warmup.jsonl"
    with annotation.open("w") as f:
        for k in tqdm(range(n), desc="warm-up pictures", disable=not progress):
            rng = np.random.default_rng([seed, k])
            objs, style = warmup_scene(rng)
            name = f"warmup-{k:06d}.png"
            render_objects(obj_rows(objs), style, TILE, TILE).save(out / "images" / name)
            f.write(json.dumps(warmup_line(rng, name, objs)) + "\n")
    return write_meta(out / "meta.json", "nano_warmup", annotation, n, max_dynamic_patch=1)


def mix_meta(out: str | Path, metas: list[Path]) -> Path:
    """One meta file holding every entry of ``metas`` (SFT then samples them in proportion to their lines)."""
    entries: dict[str, Any] = {}
    for meta in metas:
        for name, entry in json.loads(Path(meta).read_text()).items():
            if name in entries:
                raise InputError(f"{meta}: dataset name {name!r} is already in another meta file")
            entries[name] = entry
    Path(out).write_text(json.dumps(entries, indent=2) + "\n")
    return Path(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--n", type=int, default=6000, help="pictures (default 6000)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--mix", type=Path, default=None, help="also write OUT/mix.json: these pictures and this meta file's data"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    meta = export_warmup(args.out, args.n, args.seed, progress=not args.no_progress)
    print(meta)
    if args.mix is not None:
        print(mix_meta(args.out / "mix.json", [args.mix, meta]))


if __name__ == "__main__":
    main()
