"""Checkpoint load time and peak resident memory, ours vs transformers, on a 1B-shaped random checkpoint.

Writes an InternVL3-1B-shaped checkpoint (random weights, bf16) in both layouts, then loads each in a
fresh process (so that peak RSS is the loader's own) and prints a table; `--append` adds it to
BENCHMARKS.md. Run: `.venv/bin/python benchmarks/bench_load.py --append`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, publish  # noqa: E402

LOADER = r"""
import json, sys, time, torch
folder, who = sys.argv[1], sys.argv[2]
if who == "transformers":
    from transformers import InternVLForConditionalGeneration as M
else:
    from internvl.weights import load_model
def status_kib(field):  # VmHWM is the peak RSS of this process image (ru_maxrss survives fork+exec)
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
base = status_kib("VmRSS")
start = time.perf_counter()
if who == "transformers":
    model = M.from_pretrained(folder, dtype=torch.bfloat16)
else:
    model = load_model(folder, dtype=torch.bfloat16)
seconds = time.perf_counter() - start
with torch.no_grad():  # fault in every weight: a lazily mapped checkpoint is not loaded until touched
    for p in model.parameters():
        p.reshape(-1)[::1024].sum()  # 2 KiB stride: every 4 KiB page is read, nothing large allocated
usable = time.perf_counter() - start
peak = status_kib("VmHWM")
params = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"seconds": seconds, "usable": usable, "base_kib": base, "peak_kib": peak, "param_bytes": params}))
"""


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix == ".safetensors")


def measure(folder: Path, who: str) -> dict:
    out = subprocess.run([sys.executable, "-c", LOADER, str(folder), who], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()

    import torch

    from internvl.model.internvl import InternVL
    from internvl.presets import internvl3_1b
    from internvl.weights import save_model

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        with torch.device("cpu"):
            model = InternVL(internvl3_1b()).to(torch.bfloat16)
        original, hf = Path(tmp) / "original", Path(tmp) / "hf"
        save_model(model, original, layout="original")
        save_model(model, hf, layout="hf")
        del model
        size = folder_bytes(original)
        rows = []
        for who, folder in (
            ("internvl (original layout)", original),
            ("internvl (hf layout)", hf),
            ("transformers (hf layout)", hf),
        ):
            r = measure(folder, "transformers" if who.startswith("transformers") else "internvl")
            grown = (r["peak_kib"] - r["base_kib"]) * 1024
            rows.append((who, r["seconds"], r["usable"], r["peak_kib"] * 1024 / 2**30, grown / 2**30, grown / size))
    lines = [
        f"### Checkpoint load: InternVL3-1B shape, bf16, random weights ({size / 2**30:.2f} GiB of safetensors)",
        "",
        machine_line(),
        "",
        "| loader | from_pretrained s | until every weight touched s | peak RSS GiB | RSS growth GiB | growth / checkpoint size |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {w} | {s:.2f} | {u:.2f} | {p:.2f} | {g:.2f} | {r:.2f}x |" for w, s, u, p, g, r in rows]
    publish(lines, args.append)


if __name__ == "__main__":
    main()
