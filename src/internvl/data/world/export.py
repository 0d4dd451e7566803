"""Write samples in the formats other tools read: SFT (docs/sft.md), preference pairs (docs/preference-and-rewards.md#mpo-pairs), TSV.

``export_sft`` writes, under ``OUT`` (one directory per split is the intended use)::

    OUT/images/...       pictures and videos (layout in ``media.py``)
    OUT/<split>.jsonl    one SFT line per sample (docs/sft.md#annotation-lines) plus "world": the full sample record
                         (with ``questions_per_image`` K > 1: K human/gpt turn pairs about the same
                         picture, the first as usual and "world"["followups"] the K-1 other records)
    OUT/meta.json        {"world_<split>": {root, annotation, data_augment, repeat_time, length,
                                            max_dynamic_patch}} (docs/sft.md#meta-file)

``export_pairs`` writes ``OUT/pairs_<split>.jsonl`` and ``OUT/meta_pairs.json`` (docs/preference-and-rewards.md#mpo-pairs lines
plus "world" and, for reasoning, "wrong_step"); ``export_tsv`` one VLMEvalKit-style TSV with base64
PNG pictures. ``root`` and ``annotation`` are absolute paths, because the official loader joins
``root`` with each relative media path and opens ``annotation`` as given. The "world" record lets
the scorers run on a file without regenerating it (:func:`load_samples`). Worker processes render
and write their own files and send back only text, so nothing large is pickled.
"""

from __future__ import annotations

import base64
import csv
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from internvl.data.world.generate import Job, generate_conversation, generate_sample, plan, run_jobs, sample_rng
from internvl.data.world.media import resolve_video_format, save_media
from internvl.data.world.pairs import make_pair
from internvl.data.world.png import encode_png
from internvl.data.world.sample import Sample, media_prefix
from internvl.errors import InputError

TSV_COLUMNS = (
    "index",
    "id",
    "image",
    "question",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "split",
    "answer_type",
    "metric",
    "media",
    "prompt",
    "record",
)

# How internvl.eval scores each answer type (the world's own scorers stay the reference, `score.py`).
EVAL_METRIC = {"choice": "mcq", "number": "numeric", "box": "iou"}


def media_fields(sample: Sample) -> dict[str, Any]:
    """``image`` (str, or list for several) or ``video``, as in docs/sft.md#annotation-lines."""
    if sample.video:
        return {"video": sample.video}
    if len(sample.images) == 1:
        return {"image": sample.images[0]}
    return {"image": list(sample.images)}


def human_turn(sample: Sample) -> str:
    """The first user turn: media placeholders, then the prompt."""
    return media_prefix(len(sample.images), bool(sample.video or sample.frames)) + sample.prompt


def sft_line(sample: Sample, followups: Sequence[Sample] = ()) -> dict[str, Any]:
    """One SFT JSONL object (docs/sft.md#annotation-lines) for a sample whose media are already paths.

    ``followups`` (other questions about the same media) become further turn pairs whose user turn is
    the prompt alone: the media placeholders stay in the first user turn, as in multi-turn SFT data.
    """
    conversations = [{"from": "human", "value": human_turn(sample)}, {"from": "gpt", "value": sample.response}]
    for follow in followups:
        conversations += [{"from": "human", "value": follow.prompt}, {"from": "gpt", "value": follow.response}]
    world = sample.to_record()
    if followups:
        world["followups"] = [follow.to_record() for follow in followups]
    return {"id": sample.id, **media_fields(sample), "conversations": conversations, "world": world}


def pair_line(sample: Sample, rng: np.random.Generator) -> dict[str, Any]:
    """One preference-pair JSONL object (docs/preference-and-rewards.md#mpo-pairs) for a sample whose media are already paths."""
    return make_pair(sample, rng, question=human_turn(sample), media=media_fields(sample))


@dataclass(frozen=True)
class _Worker:
    """Picklable chunk worker: generate samples, write their media, return (JSON line, tile budget)."""

    out: str
    video_format: str
    kind: str  # "sft" | "pairs"
    questions: int = 1  # questions per image (sft only)
    describe: bool = False  # add a description turn (sft only)

    def __call__(self, jobs: list[Job]) -> list[tuple[str, int]]:
        root = Path(self.out) / "images"
        lines = []
        for family, split, k, seed in jobs:
            if self.kind == "sft":
                first, *followups = generate_conversation(family, split, k, seed, self.questions, self.describe)
                sample = save_media(first, root, self.video_format)
                # the follow-ups show the same pictures: point them at the files just written
                followups = [replace(f, images=sample.images, frames=[], video=sample.video) for f in followups]
                line = sft_line(sample, followups)
            else:
                sample = save_media(generate_sample(family, split, k, seed), root, self.video_format)
                line = pair_line(sample, sample_rng(seed, split, family, k, stream=1))
            lines.append((json.dumps(line, ensure_ascii=False), sample.max_dynamic_patch))
        return lines


def _export_jsonl(
    kind: str,
    out: str | Path,
    n: int,
    split: str,
    seed: int,
    families: Sequence[str] | None,
    workers: int,
    video_format: str,
    progress: bool,
    questions: int = 1,
    describe: bool = False,
) -> Path:
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    if questions < 1:
        raise InputError(f"--questions-per-image must be at least 1, got {questions}")
    out = Path(out)
    worker = _Worker(str(out), resolve_video_format(video_format), kind, questions, describe)
    jobs = plan(n, split, seed, families)
    out.mkdir(parents=True, exist_ok=True)
    prefix = "" if kind == "sft" else "pairs_"
    annotation = out / f"{prefix}{split}.jsonl"
    max_patch = 1
    with annotation.open("w") as f:
        for line, tiles in run_jobs(worker, jobs, workers, progress, desc=f"world {prefix}{split}"):
            f.write(line + "\n")
            max_patch = max(max_patch, tiles)
    name = f"world_{prefix}{split.replace('-', '_')}"
    return write_meta(out / ("meta.json" if kind == "sft" else "meta_pairs.json"), name, annotation, n, max_patch)


def write_meta(meta: Path, name: str, annotation: Path, n: int, max_dynamic_patch: int) -> Path:
    """A one-entry meta file (docs/sft.md#meta-file) for ``annotation``, its media under ``images/`` beside it."""
    entry = {
        "root": str((annotation.parent / "images").resolve()) + os.sep,
        "annotation": str(annotation.resolve()),
        "data_augment": False,
        "repeat_time": 1,
        "length": n,
        "max_dynamic_patch": max_dynamic_patch,
    }
    meta.write_text(json.dumps({name: entry}, indent=2) + "\n")
    return meta


def export_sft(
    out: str | Path,
    n: int,
    split: str = "train",
    seed: int = 0,
    families: Sequence[str] | None = None,
    workers: int = 1,
    video_format: str = "auto",
    progress: bool = True,
    questions_per_image: int = 1,
    describe: bool = False,
) -> Path:
    """Generate ``n`` samples into ``out`` (media, ``<split>.jsonl``, ``meta.json``); return the meta path.

    With ``questions_per_image`` K > 1 each line is a conversation of K questions about its picture(s),
    so the model gets K supervised answers per encoded image; ``length`` still counts lines. With
    ``describe`` each conversation also asks for a description of the whole picture (``describe.py``).
    """
    return _export_jsonl(
        "sft", out, n, split, seed, families, workers, video_format, progress, questions_per_image, describe
    )


def export_pairs(
    out: str | Path,
    n: int,
    split: str = "train",
    seed: int = 0,
    families: Sequence[str] | None = None,
    workers: int = 1,
    video_format: str = "auto",
    progress: bool = True,
) -> Path:
    """Generate ``n`` preference pairs (``pairs_<split>.jsonl``, ``meta_pairs.json``); return the meta path."""
    return _export_jsonl("pairs", out, n, split, seed, families, workers, video_format, progress)


# ---------------------------------------------------------------------------- TSV


def png_base64(image: Image.Image) -> str:
    return base64.b64encode(encode_png(image)).decode("ascii")


def tsv_row(index: int, sample: Sample) -> list[str]:
    """One row (``TSV_COLUMNS``): a single picture as base64 PNG; several pictures or video frames as a
    JSON list of them. In ``record`` the media are named ``tsv:<j>``, their position in that list."""
    pictures = sample.images or sample.frames
    encoded = [png_base64(p) for p in pictures]
    image = encoded[0] if len(encoded) == 1 and not sample.frames else json.dumps(encoded)
    record = replace(
        sample,
        images=[f"tsv:{j}" for j in range(len(sample.images))],
        frames=[f"tsv:{j}" for j in range(len(sample.frames))],
    ).to_record()
    options = [sample.options[i] if i < len(sample.options) else "" for i in range(4)]
    return [
        str(index),
        sample.id,
        image,
        sample.question,
        *options,
        sample.answer,
        sample.family,
        sample.split,
        sample.answer_type,
        EVAL_METRIC.get(sample.answer_type, "exact"),
        "video" if sample.frames else "image",
        sample.prompt,
        json.dumps(record, ensure_ascii=False),
    ]


def _tsv_rows(jobs: list[Job]) -> list[list[str]]:
    return [tsv_row(-1, generate_sample(family, split, k, seed)) for family, split, k, seed in jobs]


def export_tsv(
    path: str | Path,
    n: int,
    split: str = "test",
    seed: int = 0,
    families: Sequence[str] | None = None,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Generate ``n`` samples into one VLMEvalKit-style TSV (columns ``TSV_COLUMNS``); return its path.

    ``A``-``D`` hold the options of multiple-choice samples (empty otherwise), ``answer`` the letter
    or canonical answer, ``category`` the family, ``record`` the full sample record as JSON.
    """
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(TSV_COLUMNS)
        rows = run_jobs(_tsv_rows, plan(n, split, seed, families), workers, progress, desc=f"world {split} tsv")
        for index, row in enumerate(rows):
            row[0] = str(index)
            writer.writerow(row)
    return path


# ---------------------------------------------------------------------------- reading back


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def load_samples(path: str | Path) -> list[Sample]:
    """Samples (media as paths) from a written SFT JSONL, pairs JSONL or TSV file (first questions only)."""
    path = Path(path)
    if path.suffix == ".tsv":
        csv.field_size_limit(2**31 - 1)  # base64 pictures are long fields
        with path.open(newline="") as f:
            return [Sample.from_record(json.loads(row["record"])) for row in csv.DictReader(f, delimiter="\t")]
    return [Sample.from_record(line["world"]) for line in read_jsonl(path)]


def line_samples(line: dict[str, Any]) -> list[Sample]:
    """The samples of all the questions of one SFT line, in turn order (the first, then the follow-ups)."""
    world = line.get("world")
    if not isinstance(world, dict):
        raise InputError(f"record {line.get('id', '?')}: no 'world' field (not an `internvl world generate` line)")
    return [Sample.from_record(record) for record in [world, *world.get("followups", [])]]


def load_conversations(path: str | Path) -> list[list[Sample]]:
    """Per SFT line, the samples of all its questions in turn order (the first, then the follow-ups)."""
    return [line_samples(line) for line in read_jsonl(path)]
