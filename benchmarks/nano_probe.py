"""A learning-curve probe for the nano recipe: a short SFT run from a starting model with some settings
changed, its checkpoints evaluated on a world test set, next to the starting model in the same harness.

    python benchmarks/nano_probe.py --name e2e --start nano --data runs/nano/world-s2/meta.json \
        --steps 3000 --every 750 --test runs/nano/world-test-200.tsv --append -- freeze.vision=false

Everything after `--` overrides configs/nano_sft_more.yaml (the recipe of the last SFT stage). The run goes
to runs/nano/probe-NAME; a rerun resumes training and reuses finished evaluations. The table gives, per
checkpoint, the training minutes (the run's own `elapsed_s`), the overall accuracy and each family's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from nano_curves import evaluate_model, evaluate_step, last_elapsed_s  # noqa: E402

ROOT = Path(__file__).parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--start", default="nano", help="the starting model (folder or nano)")
    parser.add_argument("--data", required=True, type=Path, help="the SFT meta JSON")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=750)
    parser.add_argument("--test", required=True, type=Path, help="a world test TSV (world export-tsv)")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    parser.add_argument("overrides", nargs="*", help="recipe settings (after --)")
    args = parser.parse_args()

    from common import machine_line, publish  # benchmarks/common.py

    run = ROOT / "runs" / "nano" / f"probe-{args.name}"
    train = [sys.executable, "-m", "internvl.cli", "train", "sft", str(ROOT / "configs" / "nano_sft_more.yaml")]
    train += [f"output_dir={run}", f"model.path={args.start}", f"data.options.meta_path={args.data}"]
    train += [f"train.max_steps={args.steps}", f"checkpoint.every_steps={args.every}", "checkpoint.keep_last=99"]
    train += ["log.progress_bar=false", *args.overrides]
    subprocess.run(train, check=True)

    def summary(out: Path) -> dict:
        return json.loads((out / "summary.json").read_text())

    rows = [("start", 0.0, summary(evaluate_model(args.start, args.test, run / "curve" / "start")))]
    for step in range(args.every, args.steps + 1, args.every):
        rows.append((f"step {step}", last_elapsed_s(run, step) / 60, summary(evaluate_step(run, step, args.test))))
    families = sorted(rows[0][2]["categories"])
    lines = [
        f"## Nano probe `{args.name}` (benchmarks/nano_probe.py)",
        "",
        machine_line(),
        "",
        f"Start `{args.start}`; data `{args.data}`; settings: {' '.join(args.overrides) or 'the recipe as is'}; "
        f"test `{args.test}` ({rows[0][2]['n']} samples).",
        "",
        "| model | train minutes | overall | " + " | ".join(families) + " |",
        "|---|---:|---:|" + "---:|" * len(families),
    ]
    for label, minutes, summary in rows:
        scores = " | ".join(f"{summary['categories'][f]['score']:.0f}" for f in families)
        lines.append(f"| {label} | {minutes:.0f} | {summary['overall']:.1f} | {scores} |")
    publish(lines, append=args.append)


if __name__ == "__main__":
    main()
