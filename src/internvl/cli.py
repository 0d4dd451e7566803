"""The `internvl` command line. Each subcommand is a thin wrapper over the Python API."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from internvl.errors import InternVLError

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def parse_dtype(name: str | None):  # type: ignore[no-untyped-def]
    import torch

    if name is None:
        return None
    try:
        return getattr(torch, DTYPES[name.lower()])
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown dtype {name!r}; choose from {sorted(DTYPES)}") from None


def _convert(args: argparse.Namespace) -> int:
    from internvl.weights import convert_checkpoint

    convert_checkpoint(args.src, args.dst, layout=args.layout, dtype=parse_dtype(args.dtype))
    print(f"wrote {args.layout} layout to {args.dst}", file=sys.stderr)
    return 0


def add_convert_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("convert", help="convert a checkpoint between the original and hf layouts")
    p.add_argument("src", help="checkpoint folder (either layout)")
    p.add_argument("dst", help="output folder (replaced atomically)")
    p.add_argument("--layout", choices=["original", "hf"], required=True, help="layout to write")
    p.add_argument("--dtype", default=None, help="cast weights (float32, bfloat16, float16); default: keep")
    p.set_defaults(handler=_convert)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_convert_command]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="internvl", description="Run, convert, train, evaluate and serve InternVL models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except InternVLError as exc:
        print(f"internvl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
