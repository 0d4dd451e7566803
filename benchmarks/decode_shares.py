"""Batch-1 decode of the InternVL3-1B shape as a share of its memory-bandwidth limit, fp32 / int8 / int4, over
several rounds, each decode between two read-bandwidth measurements (`internvl.bench.bracketed_decode`), each
round after a measure of the CPU's own pace.

    python benchmarks/decode_shares.py [--rounds 5] [--append]

`internvl bench` measures each share once; on a machine whose speed drifts by tens of percent over minutes
one such ratio moves by about as much (docs/cpu-speed.md). Here every round brackets each of the three
decodes with its own bandwidth measurements; the table gives each round and the median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, publish, random_one_b  # noqa: E402

from internvl.bench import (  # noqa: E402
    _ours_generate,
    _prompt,
    bracketed_decode,
    compute_pace_gflops,
    decoder_bytes_per_token,
)
from internvl.model.linear import choose_cpu_kernels, fast_fp32_linears, quantize_int4, quantize_int8  # noqa: E402

MODES = {"fp32": fast_fp32_linears, "int8": quantize_int8, "int4": quantize_int4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    models = {}
    for mode, prepare in MODES.items():
        model = random_one_b()
        choose_cpu_kernels(model)  # as `internvl.load` prepares a CPU model
        prepare(model.language)
        models[mode] = model
    config = models["fp32"].config
    ids = _prompt(config, 1, 0, torch.Generator().manual_seed(0))
    sizes = {mode: decoder_bytes_per_token(model) for mode, model in models.items()}
    shares: dict[str, list[float]] = {mode: [] for mode in models}
    steady: dict[str, list[float]] = {mode: [] for mode in models}  # the rounds whose two readings agree
    lines = [
        f"### Batch-1 decode as a share of its limit, per round (`benchmarks/decode_shares.py`; {machine_line()})",
        "",
        "1B shape, random weights, as `internvl.load` prepares a CPU model; each round decodes 32 tokens after 20 "
        "in each mode, each decode between two read-bandwidth measurements (1 GiB summed); share = tok/s / (the "
        "higher bandwidth / bytes per token). CPU pace: fp32 GFLOP/s of small matrix products held in cache, "
        "measured before the round (`internvl.bench.compute_pace_gflops`): the cores' own speed moves too. "
        "A decode whose two readings differ by more than 15% shows both (the machine changed phase around it); "
        "the last line leaves those rounds out.",
        "",
        "| round | CPU pace (GFLOP/s) | fp32 tok/s (GB/s read; share) | int8 tok/s (GB/s read; share) "
        "| int4 tok/s (GB/s read; share) |",
        "|---|---:|---:|---:|---:|",
    ]
    for round_index in range(args.rounds):
        cells = [f"{compute_pace_gflops():.0f}"]
        for mode, model in models.items():
            decoded = bracketed_decode(lambda i, px, new, m=model: _ours_generate(m, i, px, new), ids)
            share = decoded.share(sizes[mode])
            shares[mode].append(share)
            if decoded.steady:
                steady[mode].append(share)
            switched = "" if decoded.steady else f", read {decoded.lower_reading_gb_s:.1f} too"
            cells.append(f"{decoded.tok_s:.1f} ({decoded.bandwidth_gb_s:.1f}{switched}; {100 * share:.0f}%)")
        lines.append(f"| {round_index + 1} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    medians = " | ".join(f"{100 * statistics.median(shares[mode]):.0f}%" for mode in models)
    lines.append(f"| median | | {medians} |")
    steady_medians = " | ".join(
        f"{100 * statistics.median(steady[mode]):.0f}% ({len(steady[mode])})" if steady[mode] else "-"
        for mode in models
    )
    lines.append(f"| median of steady rounds (how many) | | {steady_medians} |")
    publish(lines, args.append)


if __name__ == "__main__":
    main()
