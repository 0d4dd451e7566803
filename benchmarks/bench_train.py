"""Training throughput of the SFT recipe on the InternVL3-1B shape (random weights), one packed row.

Each configuration runs the real recipe (`internvl.train.sft.run`: chunked loss, AdamW, clipping, the
logging) in a fresh process, for `--warmup` + `--steps` optimiser steps on synthetic packed batches of
1 row x `--seq-len` tokens with `--tiles` tiles (448 px, 256 tokens each), and reports the median
tokens/s of the timed steps and the peak memory (CUDA: max allocated; CPU: peak RSS).

Configurations: fp32 or bf16 autocast, each with and without activation checkpointing.
Defaults follow the official 3-1B full fine-tune (vision encoder frozen, docs/sft.md#hyper-parameters); `--freeze none`
trains every part.

    python benchmarks/bench_train.py                           # 4096 tokens, 4 tiles, cuda if available
    python benchmarks/bench_train.py --seq-len 1024 --tiles 1 --configs fp32,fp32+ckpt   # a small CPU
    python benchmarks/bench_train.py --append                  # also append the table to BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, publish  # noqa: E402

CONFIGS = {
    "fp32": ("train.precision=fp32", "train.activation_checkpointing=false"),
    "fp32+ckpt": ("train.precision=fp32", "train.activation_checkpointing=true"),
    "bf16": ("train.precision=bf16", "train.activation_checkpointing=false"),
    "bf16+ckpt": ("train.precision=bf16", "train.activation_checkpointing=true"),
}

WORKER = r"""
import json, sys, time, torch
from internvl.train.sft import load_config, run
from internvl.train.metrics import read_metrics
overrides = json.loads(sys.argv[1])
config = load_config(None, overrides)
start = time.perf_counter()
run(config)
records = read_metrics(config.output_dir)
peak = None
if torch.cuda.is_available() and config.train.device != "cpu":
    peak = torch.cuda.max_memory_allocated() / 2**30
else:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 2**20
print(json.dumps({"records": records, "peak_gib": peak, "seconds": time.perf_counter() - start}))
"""


def gemm_probe(device: str) -> str:
    """fp32 vs bf16 matmul speed, which decides whether bf16 autocast can pay off on this device."""
    import torch

    size = 1024
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size, device=device, dtype=dtype)
        a @ a
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        repeat = 0
        while time.perf_counter() - start < 1.0:
            a @ a
            repeat += 1
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        out.append(f"{str(dtype).removeprefix('torch.')} {2 * size**3 * repeat / seconds / 1e9:,.1f} GFLOP/s")
    return f"{size}x{size} matmul on {device}: " + ", ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=4096, help="tokens per packed row")
    parser.add_argument("--tiles", type=int, default=4, help="448-px tiles per row (256 tokens each)")
    parser.add_argument("--samples", type=int, default=4, help="samples packed into the row")
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument(
        "--freeze", default="vision", choices=["vision", "none"], help="parts frozen (default: the ViT)"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    probe = gemm_probe(device)
    print(probe, file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            overrides = [
                f"output_dir={tmp}/{name}",
                "model.preset=internvl3-1b",
                "data.source=synthetic",
                f"data.options={{rows: 1, seq_len: {args.seq_len}, samples_per_row: {args.samples}, "
                f"tiles_per_row: {args.tiles}, batches: {args.warmup + args.steps}}}",
                f"train.max_steps={args.warmup + args.steps}",
                f"train.device={device}",
                "optim.warmup_steps=1",
                "checkpoint.enabled=false",
                "log.progress_bar=false",
                "log.plot=false",
                f"freeze.vision={'true' if args.freeze == 'vision' else 'false'}",
                *CONFIGS[name],
            ]
            print(f"running {name} ...", file=sys.stderr, flush=True)
            done = subprocess.run(
                [sys.executable, "-c", WORKER, json.dumps(overrides)],
                capture_output=True,
                text=True,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                rows.append((name, None, None, None, None))
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            records = result["records"]
            step_seconds = [r["elapsed_s"] - (records[i - 1]["elapsed_s"] if i else 0.0) for i, r in enumerate(records)]
            timed = records[args.warmup :]
            seconds = statistics.median(step_seconds[args.warmup :])
            tokens_per_s = statistics.median(r["tokens_per_s"] for r in timed)
            rows.append((name, tokens_per_s, seconds, result["peak_gib"], timed[-1]["loss"]))
            print(f"  {name}: {tokens_per_s:,.1f} tokens/s", file=sys.stderr, flush=True)

    trained = "vision encoder frozen" if args.freeze == "vision" else "every part trained"
    lines = [
        f"### SFT training throughput: InternVL3-1B shape, random weights, 1 packed row x {args.seq_len} tokens, "
        f"{args.tiles} tiles, {trained}, AdamW ({device})",
        "",
        machine_line(),
        "",
        probe + "; median of " + f"{args.steps} timed steps after {args.warmup} warm-up step(s)",
        "",
        "| configuration | tokens/s | s/step | peak memory GiB | last loss |",
        "|---|---|---|---|---|",
    ]
    for name, tps, seconds, peak, loss in rows:
        if tps is None:
            lines.append(f"| {name} | failed | | | |")
        else:
            lines.append(f"| {name} | {tps:,.1f} | {seconds:.2f} | {peak:.1f} | {loss:.3f} |")
    publish(lines, args.append)


if __name__ == "__main__":
    main()
