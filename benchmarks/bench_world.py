"""Time the procedural world: 10,000 train samples with 1 and 2 worker processes.

Two measurements per worker count:
* ``generate``: build every sample (scene, pictures, question, answer) and drop it — pure generation;
* ``generate + write``: ``export_sft`` — also encode PNG/mp4 files and write the JSONL + meta.json,
  what ``internvl world generate`` does.

    python benchmarks/bench_world.py [--n 10000] [--workers 1 2] [--split train]

Prints a markdown table; CPU time is the sum over the main and worker processes (os.times), so a
busy machine shows up as wall time well above CPU time / workers.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from internvl.data.world.export import export_sft
from internvl.data.world.generate import Job, generate_sample, plan, run_jobs
from internvl.data.world.media import has_pyav


def _ids(chunk: list[Job]) -> list[str]:
    """Generate and discard (nothing large crosses the process boundary)."""
    return [generate_sample(family, split, k, seed).id for family, split, k, seed in chunk]


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(what: str, n: int, split: str, workers: int) -> tuple[float, float, str]:
    out = Path(tempfile.mkdtemp(prefix="bench_world_"))
    try:
        cpu0, t0 = _cpu(), time.perf_counter()
        if what == "generate":
            for _ in run_jobs(_ids, plan(n, split), workers, progress=False):
                pass
        else:
            export_sft(out, n, split, workers=workers, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        return wall, cpu, f"{size / 2**20:.0f} MiB" if size else "-"
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# world generation, {args.n} {args.split} samples, all families; {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, PyAV {'yes (mp4)' if has_pyav() else 'no (PNG frames)'}, "
        f"load average before: {load:.2f}\n"
    )
    print("| what | workers | wall s | samples/s | CPU s | output |")
    print("|---|---:|---:|---:|---:|---|")
    for what in ("generate", "generate + write"):
        for workers in args.workers:
            wall, cpu, size = measure(what, args.n, args.split, workers)
            print(f"| {what} | {workers} | {wall:.1f} | {args.n / wall:.0f} | {cpu:.1f} | {size} |", flush=True)


if __name__ == "__main__":
    main()
