"""Teach the nano vision encoder to see before SFT: dense labels from the world's own scenes.

    python -m internvl.nano.vision_warmup --model runs/nano/init --steps 300

Why: trained from scratch on question answering alone, the vision encoder gets one answer's worth
of signal per question, and in the 30-minute CPU budget it never learns to find a small object
among the 256 patches of a tile (README, "The nano InternVL"). The world knows what it drew, so
every 28 px patch can be labelled with what covers it: the colour, shape and size of an object,
the filling of a detail family's framed item, the character of a text. That is up to 256 labels
per tile instead of one answer; a few minutes of it gives patch features that say what is where,
and SFT then has to learn to read them, not to see.

Scenes come from the families' own ``draw`` and ``build`` (the object families, reading, detail),
kept only when their content hashes to the ``train`` split, so the warm-up never sees a test
picture and never draws a held-out colour-shape pair (``draw(ood=False)``). Pictures are tiled as
SFT tiles them (a detail canvas gives 3-4 native tiles and a thumbnail). The linear heads are
thrown away; only the vision encoder's weights are written back into the checkpoint.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from tqdm import tqdm

from internvl.config import read_config
from internvl.data.world.families import FAMILIES
from internvl.data.world.families.base import rows_obj
from internvl.data.world.families.detail import PATTERN_NAMES
from internvl.data.world.render import draw_obj, font
from internvl.data.world.splits import split_of
from internvl.data.world.vocab import COLOUR_NAMES, SHAPES, SIZE_NAMES, size_name
from internvl.errors import InternVLError
from internvl.inputs.image import DEFAULT_TILE_SIZE, choose_grid, split_into_tiles, tiles_to_tensor
from internvl.model.internvl import InternVL

OBJECT_FAMILIES = ("recognition", "counting", "grounding", "spatial")
SCENE_FAMILIES = (*OBJECT_FAMILIES, "reading", "detail")
CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
# Each head predicts "nothing of this kind here" (class 0) or one of the names.
HEADS: dict[str, tuple[str, ...]] = {
    "colour": COLOUR_NAMES,  # of an object, a framed item's frame, or a text
    "shape": SHAPES,
    "size": SIZE_NAMES,
    "item": (*PATTERN_NAMES, "tag"),  # what fills a detail frame
    "character": tuple(CHARACTERS),  # the letter or digit under the patch (reading)
}
IGNORE = -100  # no label: the loss skips the patch for that head
MIN_OBJECT_SHARE = 0.06  # a patch is labelled with a thing covering at least this share of it
BACKGROUND_WEIGHT = 0.1  # about 9 in 10 patches are background: weigh them down so things dominate the loss
SQUEEZED_HEADS = ("shape", "size", "item", "character")  # unreadable in a squeezed thumbnail: not asked there


@dataclass
class LabelledScene:
    """A picture, a mask of the same size naming what is drawn where, and the classes of each thing.

    ``ids`` is an "L" image: 0 = background, i = ``things[i - 1]``; a thing maps head -> class (heads it
    does not name are class 0, "not one of these", or ``IGNORE``).
    """

    image: Image.Image
    ids: Image.Image
    things: list[dict[str, int]]


@dataclass
class Scenes:
    """A batch: normalised pixels (tiles, 3, 448, 448) and labels {head: (tiles, rows, cols)}."""

    pixels: torch.Tensor
    labels: dict[str, torch.Tensor]


def object_things(rows: Sequence[Sequence[Any]], draw: ImageDraw.ImageDraw, first_id: int) -> list[dict[str, int]]:
    """Draw each object's silhouette with its id; its classes (colour, shape, size)."""
    things = []
    for i, obj in enumerate(rows_obj(rows)):
        draw_obj(draw, obj, fill=first_id + i)  # type: ignore[arg-type]
        things.append({"colour": 1 + COLOUR_NAMES.index(obj.colour), "shape": 1 + SHAPES.index(obj.shape),
                       "size": 1 + SIZE_NAMES.index(size_name(obj.r))})
    return things


def label_scene(family: str, content: dict[str, Any], image: Image.Image) -> LabelledScene:
    """The mask and classes of a scene drawn by ``family`` (one of ``SCENE_FAMILIES``)."""
    ids = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(ids)
    if family in OBJECT_FAMILIES:
        return LabelledScene(image, ids, object_things(content["objects"], draw, 1))
    if family == "detail":
        things = object_things(content["clutter"], draw, 1)
        for item in content["items"]:
            x, y, w, h = item["x"], item["y"], item["w"], item["h"]
            draw.rectangle([x, y, x + w - 1, y + h - 1], fill=len(things) + 1)
            filling = item.get("pattern", "tag")
            things.append({"colour": 1 + COLOUR_NAMES.index(item["frame"]), "item": 1 + HEADS["item"].index(filling)})
        return LabelledScene(image, ids, things)
    if family == "reading":
        things = []
        for item in content["items"]:
            face, text = font(item["size"]), item["shown"]
            colour = 1 + COLOUR_NAMES.index(item["colour"]) if item["colour"] in COLOUR_NAMES else IGNORE
            for k, char in enumerate(text):
                draw.text((item["x"] + face.getlength(text[:k]), item["y"]), char, fill=len(things) + 1, font=face)
                things.append({"colour": colour, "character": 1 + CHARACTERS.index(char.lower())})
        return LabelledScene(image, ids, things)
    raise ValueError(f"no labels for family {family!r}; choose from {', '.join(SCENE_FAMILIES)}")


def patch_labels(ids: np.ndarray, table: np.ndarray, patch: int) -> np.ndarray:
    """(heads, rows, cols) classes of the thing covering most of each patch of a square ``ids`` tile.

    ``table`` is (things + 1, heads): row 0 is the background (all zeros).
    """
    grid = ids.shape[0] // patch
    cells = ids.reshape(grid, patch, grid, patch).transpose(0, 2, 1, 3)
    counts = np.stack([(cells == i).sum(axis=(2, 3)) for i in range(len(table))], axis=-1)  # (g, g, things+1)
    counts[..., 0] = 0
    best = np.where(counts.max(axis=-1) >= MIN_OBJECT_SHARE * patch * patch, counts.argmax(axis=-1), 0)
    return table[best].transpose(2, 0, 1)


def tile_scene(scene: LabelledScene, patch: int, max_tiles: int) -> tuple[list[Image.Image], list[np.ndarray]]:
    """The picture's tiles as SFT sees them (dynamic tiling + thumbnail) and each tile's patch labels.

    The mask is tiled like the picture with nearest-neighbour resizes; in the thumbnail of a
    multi-tile picture only colours are asked (shapes, sizes and small print do not survive it).
    """
    tile = DEFAULT_TILE_SIZE
    table = np.zeros((len(scene.things) + 1, len(HEADS)), dtype=np.int64)
    for i, thing in enumerate(scene.things, start=1):
        table[i] = [thing.get(head, 0) for head in HEADS]
    tiles = split_into_tiles(scene.image, max_tiles=max_tiles)
    cols, rows = choose_grid(*scene.image.size, max_tiles=max_tiles)
    canvas = np.asarray(scene.ids.resize((tile * cols, tile * rows), Image.Resampling.NEAREST))
    labels = [patch_labels(canvas[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile], table, patch)
              for r in range(rows) for c in range(cols)]
    if len(tiles) > len(labels):
        squeezed = table.copy()
        for head in SQUEEZED_HEADS:
            squeezed[1:, list(HEADS).index(head)] = IGNORE
        labels.append(patch_labels(np.asarray(scene.ids.resize((tile, tile), Image.Resampling.NEAREST)), squeezed,
                                   patch))
    return tiles, labels


def train_scenes(seed: int) -> Iterator[LabelledScene]:
    """Endless labelled scenes of the ``train`` split, families in turn."""
    rng = np.random.default_rng(seed)
    while True:
        for name in SCENE_FAMILIES:
            family = FAMILIES[name]
            while True:
                scene = family.draw(rng, False)
                if split_of(scene.content) == "train":
                    break
            yield label_scene(name, scene.content, family.build(scene, rng).images[0])


def batches(batch_size: int, patch: int, seed: int, max_tiles: int = 6) -> Iterator[Scenes]:
    """Batches of at least ``batch_size`` tiles (whole pictures: a detail canvas brings 4-5)."""
    scenes = train_scenes(seed)
    while True:
        tiles: list[Image.Image] = []
        labels: list[np.ndarray] = []
        while len(tiles) < batch_size:
            more_tiles, more_labels = tile_scene(next(scenes), patch, max_tiles)
            tiles += more_tiles
            labels += more_labels
        stacked = torch.from_numpy(np.stack(labels))  # (tiles, heads, rows, cols)
        yield Scenes(pixels=tiles_to_tensor(tiles), labels={h: stacked[:, i] for i, h in enumerate(HEADS)})


class PatchHeads(nn.Module):
    """One linear classifier per attribute over each patch's final hidden state."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({h: nn.Linear(hidden, len(names) + 1) for h, names in HEADS.items()})

    def forward(self, hidden: torch.Tensor, labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed cross-entropy over heads, and each head's accuracy on object patches."""
        loss = hidden.new_zeros(())
        accuracy = {}
        for head, layer in self.heads.items():
            target = labels[head].flatten()
            logits = layer(hidden.flatten(0, 1))
            weight = torch.ones(logits.shape[-1], device=logits.device)
            weight[0] = BACKGROUND_WEIGHT
            if (target != IGNORE).any():
                loss = loss + F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
            on_object = target > 0
            hits = (logits.argmax(-1) == target)[on_object]
            accuracy[head] = float(hits.float().mean()) if on_object.any() else float("nan")
        return loss, accuracy


def warm_up_vision(model: InternVL, steps: int, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
                   progress: bool = True, source: Iterable[Scenes] | None = None) -> list[dict[str, float]]:
    """Train ``model.vision`` in place on ``steps`` batches of dense scene labels (``source``: the
    world's train scenes by default).

    Returns one record per step: loss and per-head accuracy on object patches (training batches).
    """
    vision = model.vision
    config = vision.config
    side = config.image_size // config.patch_size
    heads = PatchHeads(config.hidden_size)
    params = [*vision.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = 20
    vision.train()
    history: list[dict[str, float]] = []
    bar = tqdm(total=steps, desc="vision warm-up", unit="step", disable=not progress)
    source = batches(batch_size, config.patch_size, seed) if source is None else source
    for step, batch in zip(range(steps), source):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        hidden = vision(batch.pixels.to(next(vision.parameters()).dtype))[:, 1:]  # drop CLS
        hidden = hidden.reshape(len(batch.pixels), side * side, -1)
        loss, accuracy = heads(hidden.float(), {h: v.reshape(len(batch.pixels), -1) for h, v in batch.labels.items()})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        history.append({"step": step, "loss": loss.item(), **accuracy})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", **{h[:5]: f"{a:.2f}" for h, a in accuracy.items()})
    bar.close()
    vision.eval()
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="checkpoint folder, updated in place")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps (about 0.7 s each on 2 cores)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    try:
        _, layout = read_config(args.model)
        model = InternVL.from_pretrained(args.model, dtype=torch.float32)
    except InternVLError as exc:
        parser.exit(2, f"vision_warmup: error: {exc}\n")
    history = warm_up_vision(model, args.steps, args.batch_size, args.lr, args.seed)
    model.save_pretrained(args.model, layout=layout)
    last = history[-10:]
    seen = {h: [r[h] for r in last if not math.isnan(r[h])] for h in HEADS}  # nan: no such patch in a batch
    summary = ", ".join(f"{h} {np.mean(v):.2f}" if v else f"{h} n/a" for h, v in seen.items())
    print(f"vision warm-up: {len(history)} steps; accuracy on object patches (last 10 steps): {summary}")


if __name__ == "__main__":
    main()
