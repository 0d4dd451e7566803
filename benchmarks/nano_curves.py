"""The nano recipe's learning curves, for docs/nano: stage 1's accuracy on val patches against pictures
seen, and the world test accuracy against training compute (minutes of this CPU, all stages) along SFT.

    python benchmarks/nano_curves.py --vision runs/nano/vision --sft runs/nano/sft \
        --steps 250,1000,2000,3000,5000 --data runs/nano/world-test-300.tsv \
        --prior runs/nano/eval-prior --out docs/nano/stages.png

For each SFT step it exports that checkpoint (`internvl train export`, bf16 as shipped) and runs
`internvl eval run` on `--data` into `SFT_RUN/curve/step-N` (a finished evaluation is reused). The
minutes of a point are stage 1's training seconds plus SFT's at that step, both read from the runs'
metrics.jsonl (`elapsed_s`). Nothing is timed here: rerun it on the same runs and it draws the same plot.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def last_elapsed_s(run: Path, step: int | None = None) -> float:
    """Training seconds of `run` at `step` (its last record with `elapsed_s` at or before it)."""
    seconds = 0.0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "elapsed_s" in record and (step is None or record["step"] <= step):
            seconds = float(record["elapsed_s"])
    return seconds


def evaluate_step(sft: Path, step: int, data: Path) -> Path:
    """The evaluation folder of checkpoint `step` of `sft`, made if missing."""
    out = sft / "curve" / f"step-{step}"
    if (out / "summary.json").is_file():
        return out
    model = sft / "curve" / f"model-{step}"
    checkpoint = sft / "checkpoints" / f"step-{step:06d}"
    if not checkpoint.is_dir():
        raise SystemExit(f"nano_curves: {checkpoint}: no such checkpoint (keep more with checkpoint.keep_last)")
    cli = [sys.executable, "-m", "internvl.cli"]
    subprocess.run([*cli, "train", "export", str(checkpoint), str(model), "--dtype", "bf16"], check=True)
    return evaluate_model(str(model), data, out)


def evaluate_model(model: str, data: Path, out: Path) -> Path:
    """`internvl eval run` of `model` on `data` into `out` (a finished evaluation is reused)."""
    if not (out / "summary.json").is_file():
        cli = [sys.executable, "-m", "internvl.cli", "eval", "run", "--model", model, "--data", str(data)]
        cli += ["--out", str(out), "--batch-size", "8", "--max-new-tokens", "64", "--no-progress"]
        subprocess.run(cli, check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vision", type=Path, required=True, help="stage 1 run folder (metrics.jsonl)")
    parser.add_argument("--sft", type=Path, help="SFT run folder (metrics.jsonl, checkpoints/step-N)")
    parser.add_argument("--steps", default="", help="comma list of SFT checkpoints to evaluate")
    parser.add_argument("--data", type=Path, help="evaluation TSV for the SFT points")
    parser.add_argument("--prior", type=Path, help="eval run of the answer prior (a dashed line)")
    parser.add_argument("--out", type=Path, default=Path("docs/nano/stages.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from internvl.train.metrics import read_metrics

    records = [r for r in read_metrics(args.vision) if any(k.startswith("val_") for k in r)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    heads = sorted({k[4:] for r in records for k in r if k.startswith("val_")})
    for head in heads:
        points = [(r["pictures"], r[f"val_{head}"]) for r in records if f"val_{head}" in r]
        left.plot(*zip(*points), marker=".", label=head)
    left.set(
        xlabel="pictures seen",
        ylabel="accuracy on labelled val patches",
        ylim=(0, 1),
        title="stage 1: vision pre-training",
    )
    left.grid(alpha=0.3)
    left.legend(fontsize=8)

    stage1_min = last_elapsed_s(args.vision) / 60
    rows = []
    for step in [int(s) for s in args.steps.split(",") if s]:
        if args.sft is None or args.data is None:
            raise SystemExit("nano_curves: --steps needs --sft and --data")
        summary = json.loads((evaluate_step(args.sft, step, args.data) / "summary.json").read_text())
        minutes = stage1_min + last_elapsed_s(args.sft, step) / 60
        rows.append((minutes, float(summary["overall"]), f"SFT {step}"))
        print(f"SFT step {step}: {minutes:.0f} training minutes, {summary['overall']:.1f}% on {args.data}")
    right.axvline(stage1_min, linestyle=":", color="grey", label=f"stage 1 ends ({stage1_min:.0f} min)")
    if rows:
        right.plot([r[0] for r in rows], [r[1] for r in rows], marker="o", label="nano after SFT step N")
        for minutes, score, label in rows:
            right.annotate(
                f"{label}: {score:.1f}", (minutes, score), textcoords="offset points", xytext=(4, -12), fontsize=8
            )
    if args.prior:
        prior = json.loads((args.prior / "summary.json").read_text())["overall"]
        right.axhline(prior, linestyle="--", color="grey", label=f"answer prior {prior:.1f}")
    right.set(
        xlabel="training minutes, all stages (this CPU)",
        ylabel="world test accuracy %",
        ylim=(0, 100),
        xlim=(0, None),
        title="the model on the world's test split",
    )
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
