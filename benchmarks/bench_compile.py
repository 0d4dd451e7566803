"""Is `torch.compile` worth it for decoding? Eager vs compiled decoder on the nano shape, greedy.

Compiles `model.language.forward` with `dynamic=True` (the KV cache's filled length changes every
step) and reports the warm-up cost, the decode time per step before and after, and whether the
greedy tokens are identical. `--append` adds the table to BENCHMARKS.md.

    python benchmarks/bench_compile.py --threads 1 --append
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, publish  # noqa: E402

from internvl.generate import GenerationConfig, generate  # noqa: E402
from internvl.model.internvl import InternVL  # noqa: E402
from internvl.presets import nano  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = InternVL(dataclasses.replace(nano(2048), image_token_id=2047)).eval()
    ids = torch.randint(10, 2000, (1, 20))

    def run(new: int) -> tuple[float, list[int]]:
        start = time.perf_counter()
        tokens = generate(model, ids, None, None, GenerationConfig(max_new_tokens=new))[0]
        return time.perf_counter() - start, tokens

    run(4)
    eager_s, eager_tokens = run(args.tokens)
    model.language.forward = torch.compile(model.language.forward, dynamic=True)
    warmup_s, _ = run(4)
    run(args.tokens)  # the first decode lengths may still compile
    compiled_s, compiled_tokens = run(args.tokens)
    lines = [
        f"### torch.compile of the decoder, nano shape, batch 1, {args.tokens} greedy tokens, {args.threads} thread(s)",
        "",
        machine_line(),
        "",
        "| decoder | ms per step | warm-up s |",
        "|---|---:|---:|",
        f"| eager | {1e3 * eager_s / args.tokens:.2f} | - |",
        f"| torch.compile(dynamic=True) | {1e3 * compiled_s / args.tokens:.2f} | {warmup_s:.1f} |",
        "",
        f"Greedy tokens identical: {eager_tokens == compiled_tokens}.",
    ]
    publish(lines, args.append)


if __name__ == "__main__":
    main()
