"""The effect of MPO on the world: the table and the bars of `scripts/mpo_world.sh`.

Reads what the script wrote in RUN: the four evaluations of the world's test split (eval-start-direct,
eval-start-cot, eval-mpo-direct, eval-mpo-cot), the pairs' summary and the MPO run's metrics. Prints a
markdown report (per-family accuracy in the four settings, the pairs, the training curve's first and last
logged values, and the three bars of the MPO issue, each marked met or not), writes it to --out, and
appends it to BENCHMARKS.md with --append.

The bars: chain-of-thought accuracy on reasoning, counting and charts rises by at least 5 points; direct
accuracy over all families drops by at most 1 point; after MPO, chain-of-thought is at least as good as
direct answers on the reasoning family.

Run: `.venv/bin/python benchmarks/mpo_world.py runs/mpo-world [--out runs/mpo-world/report.md] [--append]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import eval_scores, machine_line, publish

from internvl.train.metrics import read_metrics

SETTINGS = ("start-direct", "start-cot", "mpo-direct", "mpo-cot")
COT_FAMILIES = ("reasoning", "counting", "charts")


def mean_of(table: dict[str, float], families: tuple[str, ...]) -> float:
    return sum(table[f] for f in families) / len(families)


def bars(results: dict[str, dict[str, float]]) -> list[tuple[str, float, bool]]:
    """(bar, measured value, met) for the issue's three bars."""
    cot_gain = mean_of(results["mpo-cot"], COT_FAMILIES) - mean_of(results["start-cot"], COT_FAMILIES)
    direct_change = results["mpo-direct"]["overall"] - results["start-direct"]["overall"]
    cot_vs_direct = results["mpo-cot"]["reasoning"] - results["mpo-direct"]["reasoning"]
    return [
        ("CoT accuracy on reasoning, counting, charts rises by >= 5 points", cot_gain, cot_gain >= 5),
        ("direct accuracy over all families drops by <= 1 point", direct_change, direct_change >= -1),
        ("after MPO, CoT >= direct on reasoning", cot_vs_direct, cot_vs_direct >= 0),
    ]


def training_line(run: Path) -> str:
    records = [r for r in read_metrics(run / "mpo") if "rewards_margin" in r]
    if not records:
        return "no MPO metrics found"
    tenth = max(1, len(records) // 10)
    first, last = records[:tenth], records[-tenth:]

    def mean(rows: list[dict], key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    return (
        f"MPO: {records[-1]['step']} steps; reward margin {mean(first, 'rewards_margin'):.3f} -> "
        f"{mean(last, 'rewards_margin'):.3f}, pairs ranked right {mean(first, 'rewards_accuracy'):.2f} -> "
        f"{mean(last, 'rewards_accuracy'):.2f} (means of the first and the last tenth of the logged steps); "
        f"{records[-1].get('elapsed_s', 0) / 60:.1f} minutes"
    )


def report(run: Path) -> list[str]:
    results = {setting: eval_scores(run / f"eval-{setting}") for setting in SETTINGS}
    families = [name for name in results["start-direct"] if name != "overall"] + ["overall"]
    lines = [f"## MPO on the world ({run})", "", machine_line(), ""]
    pairs = run / "pairs" / "summary.json"
    if pairs.is_file():
        p = json.loads(pairs.read_text(encoding="utf-8"))
        lines += [
            f"Pairs: {p['questions']} questions, {p['samples_per_question']} answers each: {p['all-right']} all right, "
            f"{p['all-wrong']} all wrong, {p['mixed']} mixed; {p['correctness_pairs']} correctness pairs, "
            f"{p['format_pairs']} format pairs.",
            "",
        ]
    lines += [training_line(run), ""]
    lines += ["| family | start direct | start CoT | MPO direct | MPO CoT |", "|---|---:|---:|---:|---:|"]
    for family in families:
        row = " | ".join(f"{results[s][family]:.1f}" if family in results[s] else "-" for s in SETTINGS)
        name = f"**{family}**" if family in COT_FAMILIES else family
        lines.append(f"| {name} | {row} |")
    lines += ["", "| bar | measured | met |", "|---|---:|---|"]
    for text, value, met in bars(results):
        lines.append(f"| {text} | {value:+.1f} | {'yes' if met else 'no'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="scripts/mpo_world.sh's run folder")
    parser.add_argument("--out", type=Path, default=None, help="write the report here too")
    parser.add_argument("--append", action="store_true", help="append the report to BENCHMARKS.md")
    args = parser.parse_args()
    lines = report(args.run)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    publish(lines, args.append)


if __name__ == "__main__":
    main()
