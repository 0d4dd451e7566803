"""Stage 1 of the nano recipe: pre-train the vision encoder alone on dense labels from the world's scenes.

    python -m internvl.nano.vision_pretrain configs/nano_vision.yaml [key=value ...]

Why: trained on question answering alone, the encoder gets one answer's worth of signal per
question and never learns to find a small object among a tile's patches (docs/nano/README.md). The
world knows what it drew, so every patch can be labelled with what covers it: an object's colour,
shape and size and whether its centre lies there, the filling of a detail frame, a character of a
text, the height of a chart's bar. That is up to 256 labels per tile instead of one answer. InternVL
itself pre-trains its encoder in a stage of its own before the projector and the decoder meet it.

Scenes come from the families' own ``draw`` and ``build`` (object scenes, reading, detail, charts),
kept only when their content hashes to the ``train`` split (``val`` for the learning curve), so the
stage never sees a test picture nor a held-out colour-shape pair (``draw(ood=False)``). Pictures
are tiled as SFT tiles them. Batch ``k`` is a pure function of (seed, k), so the stage resumes
exactly from its last checkpoint (``RUN/checkpoints``) and writes ``RUN/vision.safetensors``: the
encoder's weights with its shape in the metadata, which ``internvl.nano.init --vision`` starts from.
The linear heads are thrown away.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from internvl.config import VisionConfig
from internvl.data.world.families import FAMILIES
from internvl.data.world.families.base import rows_obj
from internvl.data.world.families.charts import PLOT, VMAX, bar_x, value_y
from internvl.data.world.families.detail import PATTERN_NAMES
from internvl.data.world.render import draw_obj, font, text_box
from internvl.data.world.splits import split_of
from internvl.data.world.vocab import COLOUR_NAMES, SHAPES, SIZE_NAMES, size_name
from internvl.errors import ConfigError, InternVLError
from internvl.inputs.image import DEFAULT_TILE_SIZE, choose_grid, split_into_tiles, tiles_to_tensor
from internvl.model.vit import InternViT
from internvl.presets import nano_vision
from internvl.settings import dump_yaml, load_settings
from internvl.train import checkpoint, optim
from internvl.train.distributed import Distributed
from internvl.train.metrics import MetricsLog, read_metrics

OBJECT_FAMILIES = ("recognition", "counting", "grounding", "spatial")
SCENE_FAMILIES = (*OBJECT_FAMILIES, "reading", "detail", "charts")
CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
# Each head predicts "nothing of this kind here" (class 0) or one of the names.
HEADS: dict[str, tuple[str, ...]] = {
    "colour": COLOUR_NAMES,  # of an object, a framed item's frame, a bar or a coloured text
    "shape": SHAPES,
    "size": SIZE_NAMES,
    "item": (*PATTERN_NAMES, "tag"),  # what fills a detail frame
    "character": tuple(CHARACTERS),  # the letter or digit under the patch (texts, chart labels and ticks)
    "bar": tuple(str(v) for v in range(1, VMAX + 1)),  # the value of the chart bar under the patch
    "centre": ("centre",),  # the patch holds an object's centre: one per object, so objects can be counted
}
IGNORE = -100  # no label: the loss skips the patch for that head
MIN_OBJECT_SHARE = 0.06  # a patch is labelled with a thing covering at least this share of it
BACKGROUND_WEIGHT = 0.1  # about 9 in 10 patches are background: weigh them down so things dominate the loss
SQUEEZED_HEADS = ("shape", "size", "item", "character", "bar")  # unreadable in a squeezed thumbnail: not asked there


@dataclass
class LabelledScene:
    """A picture, a mask of the same size naming what is drawn where, and the classes of each thing.

    ``ids`` is an "L" image: 0 = background, i = ``things[i - 1]``; a thing maps head -> class (heads it
    does not name are class 0, "not one of these", or ``IGNORE``). ``centres`` are the objects' centres
    in picture pixels (the ``centre`` head).
    """

    image: Image.Image
    ids: Image.Image
    things: list[dict[str, int]]
    centres: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Scenes:
    """A batch: normalised pixels (tiles, 3, 448, 448) and labels {head: (tiles, rows, cols)}."""

    pixels: torch.Tensor
    labels: dict[str, torch.Tensor]
    pictures: int = 0


def object_things(rows: Sequence[Sequence[Any]], draw: ImageDraw.ImageDraw, first_id: int) -> list[dict[str, int]]:
    """Draw each object's silhouette with its id; its classes (colour, shape, size)."""
    things = []
    for i, obj in enumerate(rows_obj(rows)):
        draw_obj(draw, obj, fill=first_id + i)  # type: ignore[arg-type]
        things.append(
            {
                "colour": 1 + COLOUR_NAMES.index(obj.colour),
                "shape": 1 + SHAPES.index(obj.shape),
                "size": 1 + SIZE_NAMES.index(size_name(obj.r)),
            }
        )
    return things


def text_things(
    draw: ImageDraw.ImageDraw, text: str, x: float, y: float, size: int, first_id: int, colour: int = IGNORE
) -> list[dict[str, int]]:
    """Fill the ink box of each letter or digit of ``text`` (where the family draws it) with its own id;
    their classes. Boxes, not ink: a 15 px glyph's thin strokes cover too little of a patch to label it."""
    face = font(size)
    things: list[dict[str, int]] = []
    for k, char in enumerate(text):
        if char.lower() not in CHARACTERS:
            continue  # spaces and punctuation carry no label
        draw.rectangle(draw.textbbox((x + face.getlength(text[:k]), y), char, font=face), fill=first_id + len(things))
        things.append({"colour": colour, "character": 1 + CHARACTERS.index(char.lower())})
    return things


def chart_things(content: dict[str, Any], draw: ImageDraw.ImageDraw) -> list[dict[str, int]]:
    """Bars (colour and value), then tick labels, bar labels, printed values and title, as
    ``charts.render_chart`` places them."""
    x0, _, _, y1 = PLOT
    things: list[dict[str, int]] = []
    n = len(content["values"])
    for i, (v, c) in enumerate(zip(content["values"], content["colours"])):
        left, right = bar_x(i, n)
        draw.rectangle([left, value_y(v), right, y1], fill=len(things) + 1)
        things.append({"colour": 1 + COLOUR_NAMES.index(c), "bar": v})
    texts: list[tuple[str, float, float, int]] = []
    for v in range(0, VMAX + 1, 2):
        tb = text_box(str(v), 13)
        texts.append((str(v), x0 - 8 - tb[2], value_y(v) - (tb[1] + tb[3]) / 2, 13))
    for i, (label, v) in enumerate(zip(content["labels"], content["values"])):
        left, right = bar_x(i, n)
        lb = text_box(label, 15)
        texts.append((label, (left + right) / 2 - (lb[0] + lb[2]) / 2, y1 + 8, 15))
        if content["annotated"]:
            vb = text_box(str(v), 13)
            texts.append((str(v), (left + right) / 2 - (vb[0] + vb[2]) / 2, value_y(v) - 18, 13))
    if content["title"]:
        tb = text_box(content["title"], 17)
        texts.append((content["title"], DEFAULT_TILE_SIZE / 2 - (tb[0] + tb[2]) / 2, 14, 17))
    for text, x, y, size in texts:
        things += text_things(draw, text, x, y, size, len(things) + 1)
    return things


def label_scene(family: str, content: dict[str, Any], image: Image.Image) -> LabelledScene:
    """The mask and classes of a scene drawn by ``family`` (one of ``SCENE_FAMILIES``)."""
    ids = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(ids)
    if family in OBJECT_FAMILIES:
        centres = [(o.x, o.y) for o in rows_obj(content["objects"])]
        return LabelledScene(image, ids, object_things(content["objects"], draw, 1), centres)
    if family == "detail":
        things = object_things(content["clutter"], draw, 1)
        centres = [(o.x, o.y) for o in rows_obj(content["clutter"])]
        for item in content["items"]:
            x, y, w, h = item["x"], item["y"], item["w"], item["h"]
            draw.rectangle([x, y, x + w - 1, y + h - 1], fill=len(things) + 1)
            filling = item.get("pattern", "tag")
            things.append({"colour": 1 + COLOUR_NAMES.index(item["frame"]), "item": 1 + HEADS["item"].index(filling)})
        return LabelledScene(image, ids, things, centres)
    if family == "reading":
        things = []
        for item in content["items"]:
            colour = 1 + COLOUR_NAMES.index(item["colour"]) if item["colour"] in COLOUR_NAMES else IGNORE
            things += text_things(draw, item["shown"], item["x"], item["y"], item["size"], len(things) + 1, colour)
        return LabelledScene(image, ids, things)
    if family == "charts":
        return LabelledScene(image, ids, chart_things(content, draw))
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


def mark_centres(labels: np.ndarray, centres: Iterable[tuple[float, float]], patch: int) -> None:
    """Set the ``centre`` head of the patch holding each centre (tile pixels; those outside are skipped)."""
    row = list(HEADS).index("centre")
    grid = labels.shape[-1]
    for x, y in centres:
        c, r = int(x // patch), int(y // patch)
        if 0 <= r < grid and 0 <= c < grid:
            labels[row, r, c] = 1


def tile_scene(scene: LabelledScene, patch: int, max_tiles: int) -> tuple[list[Image.Image], list[np.ndarray]]:
    """The picture's tiles as SFT sees them (dynamic tiling + thumbnail) and each tile's patch labels.

    The mask is tiled like the picture with nearest-neighbour resizes; in the thumbnail of a
    multi-tile picture only colours and centres are asked (shapes, sizes and small print do not survive it).
    """
    tile = DEFAULT_TILE_SIZE
    table = np.zeros((len(scene.things) + 1, len(HEADS)), dtype=np.int64)
    for i, thing in enumerate(scene.things, start=1):
        table[i] = [thing.get(head, 0) for head in HEADS]
    tiles = split_into_tiles(scene.image, max_tiles=max_tiles)
    cols, rows = choose_grid(*scene.image.size, max_tiles=max_tiles)
    width, height = scene.image.size
    sx, sy = tile * cols / width, tile * rows / height
    canvas = np.asarray(scene.ids.resize((tile * cols, tile * rows), Image.Resampling.NEAREST))
    labels = []
    for r in range(rows):
        for c in range(cols):
            labelled = patch_labels(canvas[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile], table, patch)
            mark_centres(labelled, [(x * sx - c * tile, y * sy - r * tile) for x, y in scene.centres], patch)
            labels.append(labelled)
    if len(tiles) > len(labels):
        squeezed = table.copy()
        for head in SQUEEZED_HEADS:
            squeezed[1:, list(HEADS).index(head)] = IGNORE
        labelled = patch_labels(np.asarray(scene.ids.resize((tile, tile), Image.Resampling.NEAREST)), squeezed, patch)
        mark_centres(labelled, [(x * tile / width, y * tile / height) for x, y in scene.centres], patch)
        labels.append(labelled)
    return tiles, labels


def draw_scene(rng: np.random.Generator, split: str) -> LabelledScene:
    """One labelled scene of ``split`` (train or val), its family drawn uniformly."""
    name = SCENE_FAMILIES[int(rng.integers(len(SCENE_FAMILIES)))]
    family = FAMILIES[name]
    while True:
        scene = family.draw(rng, False)
        if split_of(scene.content) == split:
            break
    return label_scene(name, scene.content, family.build(scene, rng).images[0])


def scenes_batch(
    rng: np.random.Generator, batch_size: int, patch: int, split: str = "train", max_tiles: int = 6
) -> Scenes:
    """Whole pictures until at least ``batch_size`` tiles (a detail canvas brings 4-5)."""
    tiles: list[Image.Image] = []
    labels: list[np.ndarray] = []
    pictures = 0
    while len(tiles) < batch_size:
        more_tiles, more_labels = tile_scene(draw_scene(rng, split), patch, max_tiles)
        tiles += more_tiles
        labels += more_labels
        pictures += 1
    stacked = torch.from_numpy(np.stack(labels))  # (tiles, heads, rows, cols)
    return Scenes(
        pixels=tiles_to_tensor(tiles), labels={h: stacked[:, i] for i, h in enumerate(HEADS)}, pictures=pictures
    )


def batch_at(seed: int, step: int, batch_size: int, patch: int) -> Scenes:
    """The training batch of optimiser step ``step``: a pure function of (seed, step), so resuming is exact."""
    return scenes_batch(np.random.default_rng([seed, step]), batch_size, patch)


class StepBatches(torch.utils.data.IterableDataset):
    """Training batches from ``start`` on, drawn in a worker process while the main one trains."""

    def __init__(self, seed: int, start: int, batch_size: int, patch: int) -> None:
        self.seed, self.start, self.batch_size, self.patch = seed, start, batch_size, patch

    def __iter__(self) -> Iterator[Scenes]:
        torch.set_num_threads(1)
        step = self.start
        while True:
            yield batch_at(self.seed, step, self.batch_size, self.patch)
            step += 1


class PatchHeads(nn.Module):
    """One linear classifier per attribute over each patch's final hidden state."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({h: nn.Linear(hidden, len(names) + 1) for h, names in HEADS.items()})

    def forward(self, hidden: torch.Tensor, labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed cross-entropy over heads, and each head's accuracy on labelled patches (class > 0)."""
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


def patch_loss(vision: InternViT, heads: PatchHeads, batch: Scenes) -> tuple[torch.Tensor, dict[str, float]]:
    """The heads' loss and accuracies on one batch (the CLS token is dropped)."""
    side = vision.config.image_size // vision.config.patch_size
    hidden = vision(batch.pixels.to(next(vision.parameters()).dtype))[:, 1:]
    hidden = hidden.reshape(len(batch.pixels), side * side, -1)
    return heads(hidden.float(), {h: v.reshape(len(batch.pixels), -1) for h, v in batch.labels.items()})


# ----------------------------------------------------------------------------------------------
# The stage: settings, evaluation, resumable loop, export


@dataclass
class VisionPretrainSettings:
    output_dir: str = "runs/nano/vision"  # RUN: checkpoints/, metrics.jsonl, curve.png, vision.safetensors
    seed: int = 0  # initial weights and the batch stream
    encoder: VisionConfig = field(default_factory=lambda: nano_vision())  # the encoder's shape
    steps: int = 4000  # optimiser steps of the whole stage (the schedule's length)
    stop_at_step: int = 0  # stop early at this step (checkpointing first), e.g. for a time limit; 0 = steps
    batch_size: int = 16  # tiles per step (whole pictures, so a few more)
    lr: float = 1.0e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    max_grad_norm: float = 1.0
    eval_every: int = 250  # learning curve: accuracy on `val` scenes every N steps (and at the end); 0 = never
    eval_tiles: int = 128  # size of that fixed `val` set
    checkpoint_every: int = 250  # save every N steps (and at the end)
    workers: int = 1  # processes drawing batches (0 = in the training process)
    device: str = "cpu"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast (weights and optimiser stay fp32); only
    # faster where the CPU has native bf16 (lscpu: avx512_bf16 or amx_bf16) or on a GPU
    progress_bar: bool = True


def validate(config: VisionPretrainSettings) -> None:
    if config.steps < 1 or config.batch_size < 1:
        raise ConfigError(f"steps and batch_size must be at least 1, got {config.steps} and {config.batch_size}")
    if config.encoder.image_size % config.encoder.patch_size:
        raise ConfigError(
            f"encoder.image_size {config.encoder.image_size} is not a multiple of "
            f"encoder.patch_size {config.encoder.patch_size}"
        )
    if config.encoder.hidden_size % config.encoder.num_heads:
        raise ConfigError(
            f"encoder.hidden_size {config.encoder.hidden_size} does not split into {config.encoder.num_heads} heads"
        )


@torch.no_grad()
def evaluate(vision: InternViT, heads: PatchHeads, batches: Sequence[Scenes]) -> dict[str, float]:
    """Accuracy of each head on the labelled patches of fixed ``val`` scenes."""
    vision.eval()
    hits: dict[str, float] = {h: 0.0 for h in HEADS}
    counts: dict[str, int] = {h: 0 for h in HEADS}
    for batch in batches:
        _, accuracy = patch_loss(vision, heads, batch)
        for head, value in accuracy.items():
            n = int((batch.labels[head] > 0).sum())
            if n:
                hits[head] += value * n
                counts[head] += n
    vision.train()
    return {f"val_{h}": hits[h] / counts[h] for h in HEADS if counts[h]}


def val_batches(config: VisionPretrainSettings) -> list[Scenes]:
    rng = np.random.default_rng([config.seed, 2**31 - 1])  # never a training step's stream
    out, tiles = [], 0
    while tiles < config.eval_tiles:
        out.append(scenes_batch(rng, min(16, config.eval_tiles - tiles), config.encoder.patch_size, split="val"))
        tiles += len(out[-1].pixels)
    return out


def pretrain_vision(config: VisionPretrainSettings) -> Path:
    """Run (or resume) the stage; returns the path of the exported encoder weights."""
    validate(config)
    run_dir = Path(config.output_dir)
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    vision = InternViT(config.encoder)
    heads = PatchHeads(config.encoder.hidden_size)
    # one module under the name "vision", so that the recipe's AdamW groups (decay rules) apply as in SFT
    model = nn.ModuleDict({"vision": nn.ModuleDict({"encoder": vision, "heads": heads})}).to(device)
    groups = optim.parameter_groups(model.named_parameters(), config.lr, config.weight_decay, {})
    optimizer = optim.build_optimizer(groups, (0.9, 0.999), 1e-8)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    stop = min(config.steps, config.stop_at_step) if config.stop_at_step > 0 else config.steps

    step, pictures, tiles, elapsed = 0, 0, 0, 0.0
    latest = checkpoint.latest_checkpoint(run_dir)
    if latest is not None:
        saved = checkpoint.load_checkpoint(latest, rank=0)
        model.load_state_dict(saved["weights"])
        optimizer.load_state_dict(saved["optimizer"])
        progress = saved["trainer_state"]
        step, pictures, tiles = progress["step"], progress["pictures"], progress["tiles"]
        elapsed = progress.get("elapsed_s", 0.0)
        print(f"resuming from {latest} (step {step})", file=sys.stderr)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml(config), encoding="utf-8")
    checkpoint.remove_partial(run_dir)
    metrics = MetricsLog(run_dir, resume_step=step if latest is not None else None)
    evaluation = val_batches(config) if config.eval_every > 0 else []
    if step == 0 and evaluation:
        metrics.write({"step": 0, "pictures": 0, "tiles": 0, **evaluate(vision, heads, evaluation)})

    source = StepBatches(config.seed, step, config.batch_size, config.encoder.patch_size)
    loader = torch.utils.data.DataLoader(
        source, batch_size=None, num_workers=config.workers, prefetch_factor=4 if config.workers else None
    )
    bar = tqdm(total=stop, initial=step, desc="vision pre-training", unit="step", disable=not config.progress_bar)
    model.train()
    started = time.perf_counter() - elapsed  # training seconds over every session of this run
    for batch in loader:
        if step >= stop:
            break
        optim.set_learning_rates(
            optimizer, optim.lr_factor(step, config.steps, config.warmup_steps, config.min_lr_ratio)
        )
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            loss, accuracy = patch_loss(
                vision, heads, Scenes(batch.pixels.to(device), {h: v.to(device) for h, v in batch.labels.items()})
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        step += 1
        pictures += batch.pictures
        tiles += len(batch.pixels)
        elapsed = time.perf_counter() - started
        record: dict[str, Any] = {
            "step": step,
            "pictures": pictures,
            "tiles": tiles,
            "elapsed_s": elapsed,
            "loss": loss.item(),
            "lr": optimizer.param_groups[0]["lr"],
            **accuracy,
        }
        if evaluation and (step % config.eval_every == 0 or step == stop):
            record.update(evaluate(vision, heads, evaluation))
        metrics.write(record)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", **{h[:5]: f"{a:.2f}" for h, a in accuracy.items()})
        if step == stop or step % config.checkpoint_every == 0:
            state = {"step": step, "steps": config.steps, "pictures": pictures, "tiles": tiles, "elapsed_s": elapsed}
            checkpoint.save_checkpoint(
                run_dir,
                step,
                Distributed(),
                weights=model.state_dict(),
                optimizer=optimizer.state_dict(),
                trainer_state=state,
                config_yaml=dump_yaml(config),
                keep_last=1,
            )
    bar.close()
    plot_curve(run_dir)
    return export_encoder(vision, run_dir / ENCODER_FILE)


ENCODER_FILE = "vision.safetensors"


def export_encoder(vision: InternViT, path: Path) -> Path:
    """The encoder's weights (our parameter names) with its shape as JSON metadata; written atomically."""
    partial = path.with_name(f".{path.name}.partial")
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in vision.state_dict().items()}
    save_file(tensors, str(partial), metadata={"vision_config": json.dumps(asdict(vision.config))})
    partial.replace(path)
    return path


def load_encoder(path: str | Path) -> tuple[VisionConfig, dict[str, torch.Tensor]]:
    """Shape and weights of an exported encoder (``export_encoder``)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InternVLError(f"{path}: no such encoder file (written by `python -m internvl.nano.vision_pretrain`)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        shape = VisionConfig(**json.loads(meta["vision_config"]))
        weights = load_file(str(path))
    except (OSError, KeyError, TypeError, ValueError, SafetensorError) as exc:
        raise InternVLError(f"{path}: not an encoder written by `internvl.nano.vision_pretrain` ({exc})") from exc
    return shape, weights


def plot_curve(run_dir: Path) -> Path | None:
    """RUN/curve.png: each head's accuracy on ``val`` scenes against pictures seen."""
    records = [r for r in read_metrics(run_dir) if any(k.startswith("val_") for k in r)]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for head in HEADS:
        points = [(r["pictures"], r[f"val_{head}"]) for r in records if f"val_{head}" in r]
        if points:
            ax.plot(*zip(*points), label=head, marker=".")
    ax.set_xlabel("pictures seen")
    ax.set_ylabel("accuracy on labelled val patches")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = run_dir / "curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path, help="YAML recipe (configs/nano_vision.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value settings, e.g. steps=100")
    args = parser.parse_args(argv)
    try:
        config = load_settings(VisionPretrainSettings, args.recipe, args.overrides)
        path = pretrain_vision(config)
    except InternVLError as exc:
        parser.exit(2, f"vision_pretrain: error: {exc}\n")
    last = [r for r in read_metrics(config.output_dir) if any(k.startswith("val_") for k in r)][-1:]
    summary = ", ".join(f"{k[4:]} {v:.2f}" for k, v in last[0].items() if k.startswith("val_")) if last else "n/a"
    print(f"wrote {path}; accuracy on val patches: {summary}")


if __name__ == "__main__":
    main()
