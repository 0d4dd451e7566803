"""Batch-1 decode of the InternVL3-1B shape as a share of its memory-bandwidth limit, fp32 / int8 / int4, over
several rounds, each with its own copy-bandwidth measurement right before it.

    python benchmarks/decode_shares.py [--rounds 5] [--append]

`internvl bench` measures each share once, against a copy bandwidth measured minutes apart from the
decodes; on a machine whose speed drifts by tens of percent over minutes one such ratio moves by about as
much (docs/cpu-speed.md). Here every round measures the bandwidth, then the three decodes, and reports their
shares against that round's bandwidth; the table gives each round and the median.
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
    _decode_tok_s,
    _ours_generate,
    _prompt,
    copy_bandwidth_gb_s,
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
    lines = [
        f"### Batch-1 decode as a share of its limit, per round (`benchmarks/decode_shares.py`; {machine_line()})",
        "",
        "1B shape, random weights, as `internvl.load` prepares a CPU model; each round measures the copy "
        "bandwidth, then decodes 32 tokens after 20 in each mode; share = tok/s / (bandwidth / bytes per token).",
        "",
        "| round | copy bandwidth (GB/s) | fp32 tok/s (share) | int8 tok/s (share) | int4 tok/s (share) |",
        "|---|---:|---:|---:|---:|",
    ]
    for round_index in range(args.rounds):
        bandwidth = copy_bandwidth_gb_s()
        cells = []
        for mode, model in models.items():
            rate = _decode_tok_s(lambda i, px, new, m=model: _ours_generate(m, i, px, new), ids)
            share = rate / (bandwidth * 1e9 / sizes[mode])
            shares[mode].append(share)
            cells.append(f"{rate:.1f} ({100 * share:.0f}%)")
        lines.append(f"| {round_index + 1} | {bandwidth:.1f} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    medians = " | ".join(f"{100 * statistics.median(shares[mode]):.0f}%" for mode in models)
    lines.append(f"| median | | {medians} |")
    publish(lines, args.append)


if __name__ == "__main__":
    main()
