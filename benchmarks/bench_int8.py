"""Weight-only int8 vs bf16 on the nano model's test questions: answer agreement and accuracy.

Runs `internvl eval run` twice on the same items (the shipped nano model, greedy): once in bf16 and
once in bf16 with the int8 language model (`--quantize int8`), then prints the share of items whose
answers are identical, both accuracies and the wall time of each run; `--append` adds the table to
BENCHMARKS.md. The data is the world's test split as written by `scripts/train_nano.sh`:

    python benchmarks/bench_int8.py --data runs/nano/world-test.tsv --limit 300 --append
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, publish  # noqa: E402

from internvl.cli import main as internvl  # noqa: E402


def run_eval(data: Path, out: Path, limit: int, extra: list[str]) -> tuple[float, dict, dict]:
    start = time.perf_counter()
    code = internvl(
        [
            "eval",
            "run",
            "--data",
            str(data),
            "--out",
            str(out),
            "--limit",
            str(limit),
            "--batch-size",
            "8",
            "--no-progress",
            "--dtype",
            "bfloat16",
            *extra,
        ]
    )
    if code != 0:
        raise SystemExit(f"eval run failed with exit code {code}")
    seconds = time.perf_counter() - start
    predictions = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        predictions[record["id"]] = record["prediction"]
    summary = json.loads((out / "summary.json").read_text())
    return seconds, predictions, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("runs/nano/world-test.tsv"))
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bf16_s, bf16, bf16_summary = run_eval(args.data, Path(tmp) / "bf16", args.limit, [])
        int8_s, int8, int8_summary = run_eval(args.data, Path(tmp) / "int8", args.limit, ["--quantize", "int8"])
    same = sum(bf16[key] == int8.get(key) for key in bf16)
    lines = [
        f"### Weight-only int8 vs bf16, nano model, {len(bf16)} world test questions (`python benchmarks/bench_int8.py`)",
        "",
        machine_line(),
        "",
        "| mode | accuracy % | wall s (incl. load) |",
        "|---|---:|---:|",
        f"| bf16 | {bf16_summary['overall']:.1f} | {bf16_s:.1f} |",
        f"| bf16 + int8 language model | {int8_summary['overall']:.1f} | {int8_s:.1f} |",
        "",
        f"Identical answers: {same}/{len(bf16)} ({100 * same / max(len(bf16), 1):.1f}%).",
    ]
    publish(lines, args.append)


if __name__ == "__main__":
    main()
