"""The nano recipe's learning curves, for docs/nano: stage 1's accuracy on val patches against pictures
seen, and the world test accuracy against training compute (CPU minutes) across the stages.

    python benchmarks/nano_curves.py --vision runs/nano/vision \
        --point "SFT 1000 steps=75:runs/nano/eval-step1000" --point "shipped=110:runs/nano/eval-test" \
        --out docs/nano/stages.png

Each ``--point LABEL=MINUTES:EVAL_RUN`` is one evaluated model: its total training minutes (all stages
so far) and an `internvl eval run` folder (its summary.json gives the overall score).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vision", type=Path, required=True, help="stage 1 run folder (metrics.jsonl)")
    parser.add_argument("--point", action="append", default=[], help="LABEL=MINUTES:EVAL_RUN (repeatable)")
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

    rows = []
    for point in args.point:
        label, rest = point.split("=", 1)
        minutes, run = rest.split(":", 1)
        summary = json.loads((Path(run) / "summary.json").read_text())
        rows.append((float(minutes), 100 * summary["overall"], label))
    rows.sort()
    if rows:
        right.plot([r[0] for r in rows], [r[1] for r in rows], marker="o")
        for minutes, score, label in rows:
            right.annotate(
                f"{label}: {score:.1f}", (minutes, score), textcoords="offset points", xytext=(4, -12), fontsize=8
            )
    if args.prior:
        prior = 100 * json.loads((args.prior / "summary.json").read_text())["overall"]
        right.axhline(prior, linestyle="--", color="grey", label=f"answer prior {prior:.1f}")
        right.legend(fontsize=8)
    right.set(
        xlabel="training minutes, all stages (2-core CPU)",
        ylabel="world test accuracy %",
        ylim=(0, 100),
        title="the model on the world's test split",
    )
    right.grid(alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
