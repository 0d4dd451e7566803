"""``internvl world ...``: generate the world to disk, export an evaluation TSV, write preference pairs.

    internvl world generate   --out DIR --split train --n 10000 [--seed 0] [--families a b] [--workers 2]
                              [--questions-per-image 4] [--describe]
    internvl world export-tsv --out FILE.tsv --split test --n 1000 [--seed 0] [--families ...] [--workers 2]
    internvl world pairs      --out DIR --split train --n 2000 [--seed 0] [--families ...] [--workers 2]
    internvl world show       --family counting [--split train] [--index 0] [--seed 0] [--save FILE.png]
    internvl world families

The top-level CLI adds the ``world`` command with :func:`add_world_command`; ``main(argv)`` runs the
same commands stand-alone (``python -m internvl.data.world.cli generate ...``) and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from internvl.data.world.export import export_pairs, export_sft, export_tsv
from internvl.data.world.families import ALL_FAMILY_NAMES, FAMILIES, FAMILY_NAMES, LONG_CONTEXT_FAMILIES
from internvl.data.world.generate import generate_sample
from internvl.data.world.media import VIDEO_FORMATS
from internvl.data.world.sample import SPLITS
from internvl.errors import InternVLError


def _families(values: Sequence[str] | None) -> list[str] | None:
    """``--families a b`` or ``--families a,b``."""
    if not values:
        return None
    return [name for value in values for name in value.split(",") if name]


def _common(p: argparse.ArgumentParser, default_split: str) -> None:
    p.add_argument("--split", default=default_split, choices=SPLITS, help=f"default {default_split}")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument(
        "--families",
        nargs="+",
        metavar="FAMILY",
        help=f"default: {', '.join(FAMILY_NAMES)}; also long contexts: {', '.join(LONG_CONTEXT_FAMILIES)}",
    )
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (default min(2, CPUs))")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    """The ``generate | export-tsv | pairs | show | families`` subcommands, under ``parser``."""
    sub = parser.add_subparsers(dest="world_command", required=True)
    g = sub.add_parser("generate", help="media + <split>.jsonl + meta.json (SFT format, docs/sft.md)")
    g.add_argument("--out", required=True, help="output directory (one per split)")
    _common(g, "train")
    g.add_argument(
        "--video-format",
        default="auto",
        choices=VIDEO_FORMATS,
        help="mp4 (needs PyAV) or a folder of PNG frames; auto = mp4 when PyAV is installed",
    )
    g.add_argument(
        "--questions-per-image",
        type=int,
        default=1,
        metavar="K",
        help="each line a conversation of K questions about its picture(s) (default 1)",
    )
    g.add_argument(
        "--describe",
        action="store_true",
        help="add a turn describing the whole picture to each conversation (training data)",
    )
    t = sub.add_parser("export-tsv", help="VLMEvalKit-style TSV with base64 PNG images")
    t.add_argument("--out", required=True, help="output .tsv file")
    _common(t, "test")
    p = sub.add_parser(
        "pairs", help="pairs_<split>.jsonl + meta_pairs.json (MPO format, docs/preference-and-rewards.md#mpo-pairs)"
    )
    p.add_argument("--out", required=True, help="output directory")
    _common(p, "train")
    p.add_argument("--video-format", default="auto", choices=VIDEO_FORMATS)
    s = sub.add_parser("show", help="print one sample as JSON (and optionally save its first picture)")
    s.add_argument("--family", required=True, choices=ALL_FAMILY_NAMES)
    s.add_argument("--split", default="train", choices=SPLITS)
    s.add_argument("--index", type=int, default=0, help="the family's k-th sample")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--save", help="write the first image (or video frame) to this file")
    sub.add_parser("families", help="list the task families and what test-ood holds out")


def add_world_command(subparsers: argparse._SubParsersAction) -> None:
    """Hook for the top-level ``internvl`` parser."""
    p = subparsers.add_parser("world", help="the procedural multimodal world: generate data, TSV, preference pairs")
    add_subcommands(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``world`` command; raises ``InternVLError`` on bad input."""
    if args.world_command == "families":
        for name, fam in FAMILIES.items():
            print(f"{name:12s} test-ood: {fam.ood}{'' if name in FAMILY_NAMES else ' (long context; named only)'}")
        return 0
    if args.world_command == "show":
        sample = generate_sample(args.family, args.split, args.index, args.seed)
        if args.save:
            (sample.images or sample.frames)[0].save(args.save)
        shown = {
            **sample.__dict__,
            "images": [f"<{p.width}x{p.height}>" for p in sample.images],
            "frames": [f"<{p.width}x{p.height}>" for p in sample.frames],
            "prompt": sample.prompt,
            "response": sample.response,
        }
        print(json.dumps(shown, indent=2, ensure_ascii=False))
        return 0
    start = time.perf_counter()
    families, progress = _families(args.families), not args.no_progress
    if args.world_command == "generate":
        written = export_sft(
            args.out,
            args.n,
            args.split,
            args.seed,
            families,
            args.workers,
            args.video_format,
            progress,
            args.questions_per_image,
            args.describe,
        )
    elif args.world_command == "export-tsv":
        written = export_tsv(args.out, args.n, args.split, args.seed, families, args.workers, progress)
    else:
        written = export_pairs(
            args.out, args.n, args.split, args.seed, families, args.workers, args.video_format, progress
        )
    elapsed = time.perf_counter() - start
    print(f"wrote {args.n} {args.split} samples -> {written} in {elapsed:.1f} s ({args.n / elapsed:.0f} samples/s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="internvl world", description="The procedural multimodal world.")
    add_subcommands(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except InternVLError as exc:
        print(f"internvl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
