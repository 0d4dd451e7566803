"""The effect of Cascade RL on the world: the table and the bars of `scripts/cascade_world.sh`.

Reads the SFT (shipped nano) and MPO models' evaluations in the MPO run folder (eval-start-direct, -cot,
eval-mpo-direct, -cot, as scripts/mpo_world.sh writes them) and the GSPO model's in RUN (eval-gspo-direct,
-cot), on the same test items, and the GSPO run's metrics. Prints a markdown report: per-family accuracy of
the three models with direct answers and with chain of thought, the issue's three bars with the paired
sampling noise, the GSPO training curve, the rollout throughput and the share of time spent on rollouts.

The bars: on reasoning, counting and charts with chain of thought, MPO+GSPO beats MPO alone by at least 3
points and the SFT model by at least 8; direct answers on the other families drop by at most 1 point.

Run: `.venv/bin/python benchmarks/cascade_world.py runs/cascade-world --mpo-run runs/mpo-world [--out FILE] [--append]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import eval_scores, item_scores, machine_line, paired_difference, publish, sign_test

from internvl.train.metrics import read_metrics

COT_FAMILIES = ("reasoning", "counting", "charts")
MODELS = ("SFT", "MPO", "MPO+GSPO")


def folders(run: Path, mpo_run: Path) -> dict[tuple[str, str], Path]:
    """(model, "direct" | "cot") -> its evaluation folder."""
    names = {"SFT": mpo_run / "eval-start", "MPO": mpo_run / "eval-mpo", "MPO+GSPO": run / "eval-gspo"}
    return {(model, mode): Path(f"{names[model]}-{mode}") for model in MODELS for mode in ("direct", "cot")}


def pooled(scores: dict[str, float], ids: list[str]) -> float:
    """Accuracy in % over the items `ids`."""
    return 100 * sum(scores[i] for i in ids) / max(len(ids), 1)


def compare(new: dict[str, float], old: dict[str, float], ids: list[str]) -> tuple[float, float, float]:
    """(difference in points, one standard error of that paired difference, sign-test p) over `ids`."""
    wins = sum(new[i] > old[i] for i in ids)
    losses = sum(new[i] < old[i] for i in ids)
    return (*paired_difference(new, old, ids), sign_test(wins, losses))


def item_families(folder: Path) -> dict[str, str]:
    """{item id: family} of an evaluation folder (its scores.jsonl names each item's category)."""
    lines = (folder / "scores.jsonl").read_text(encoding="utf-8").splitlines()
    return {record["id"]: str(record.get("category", "")) for record in map(json.loads, lines)}


def bars(evals: dict[tuple[str, str], Path]) -> list[tuple[str, tuple[float, float, float], bool]]:
    """(bar, (difference, standard error, p), met) for the issue's three bars."""
    cot = {model: item_scores(evals[model, "cot"]) for model in MODELS}
    cot_ids = sorted(cot["SFT"])
    direct = {model: item_scores(evals[model, "direct"]) for model in ("SFT", "MPO+GSPO")}
    families = item_families(evals["SFT", "direct"])
    other_ids = sorted(i for i in direct["SFT"] if families[i] not in COT_FAMILIES)
    over_mpo = compare(cot["MPO+GSPO"], cot["MPO"], cot_ids)
    over_sft = compare(cot["MPO+GSPO"], cot["SFT"], cot_ids)
    direct_change = compare(direct["MPO+GSPO"], direct["SFT"], other_ids)
    return [
        ("CoT on reasoning, counting, charts: MPO+GSPO beats MPO by >= 3 points", over_mpo, over_mpo[0] >= 3),
        ("CoT on reasoning, counting, charts: MPO+GSPO beats SFT by >= 8 points", over_sft, over_sft[0] >= 8),
        (
            f"direct answers on the other {len({families[i] for i in other_ids})} families: MPO+GSPO drops "
            "<= 1 point from SFT",
            direct_change,
            direct_change[0] >= -1,
        ),
    ]


def training_lines(run: Path) -> list[str]:
    """The GSPO curve (first and last tenth of the steps) and where its time went."""
    records = [r for r in read_metrics(run / "gspo") if "reward_mean" in r]
    if not records:
        return ["no GSPO metrics found"]
    tenth = max(1, len(records) // 10)
    first, last = records[:tenth], records[-tenth:]

    def mean(rows: list[dict], key: str) -> float:
        return sum(float(r.get(key, 0.0)) for r in rows) / len(rows)

    rollouts = [r for r in records if r.get("rollout_s", 0) > 0]
    rollout_s = sum(r["rollout_s"] for r in rollouts)
    update_s = sum(float(r.get("update_s", 0.0)) for r in records)
    sampled = sum(r["sampled_tokens_per_s"] * r["rollout_s"] for r in rollouts)
    terms = sorted(k for k in records[-1] if k.startswith("reward_") and k not in ("reward_mean", "reward_std"))
    keys = ("reward_mean", *terms, "reward_std", "zero_variance_share", "clipped_share", "response_length", "entropy")
    lines = [
        f"GSPO: {records[-1]['step']} optimiser steps from {len(rollouts)} rollouts, "
        f"{records[-1].get('elapsed_s', 0) / 60:.1f} minutes. Means of the first and the last tenth of the steps:",
        "",
        "| metric | first tenth | last tenth |",
        "|---|---:|---:|",
    ]
    lines += [f"| {key} | {mean(first, key):.3f} | {mean(last, key):.3f} |" for key in keys]
    lines += [
        "",
        f"Rollouts: {sampled:,.0f} sampled tokens in {rollout_s / 60:.1f} minutes, "
        f"{sampled / max(rollout_s, 1e-9):,.0f} tokens/s (sampling and the old policy's log-probabilities); "
        f"updates {update_s / 60:.1f} minutes. Share of rollout + update time on rollouts: "
        f"{100 * rollout_s / max(rollout_s + update_s, 1e-9):.0f}%.",
    ]
    return lines


def report(run: Path, mpo_run: Path) -> list[str]:
    evals = folders(run, mpo_run)
    results = {key: eval_scores(folder) for key, folder in evals.items()}
    families = [name for name in results["SFT", "direct"] if name != "overall"] + ["overall"]
    lines = [f"## Cascade RL on the world ({run}, {mpo_run})", "", machine_line(), ""]
    header = " | ".join(f"{model} {mode}" for model in MODELS for mode in ("direct", "CoT"))
    lines += [f"| family | {header} |", "|---|" + "---:|" * (2 * len(MODELS))]
    for family in families:
        cells = [
            f"{results[model, mode][family]:.1f}" if family in results[model, mode] else "-"
            for model in MODELS
            for mode in ("direct", "cot")
        ]
        name = f"**{family}**" if family in COT_FAMILIES else family
        lines.append(f"| {name} | {' | '.join(cells)} |")
    cot_items = len(item_scores(evals["SFT", "cot"]))
    lines += [
        "",
        f"CoT columns: the {cot_items} reasoning, counting and charts items; 'overall' there is over them.",
        "",
        "| bar | difference (points) | one standard error | sign test p | met |",
        "|---|---:|---:|---:|---|",
    ]
    for text, (difference, error, p), met in bars(evals):
        lines.append(f"| {text} | {difference:+.1f} | {error:.1f} | {p:.3f} | {'yes' if met else 'no'} |")
    lines += [""] + training_lines(run)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="scripts/cascade_world.sh's run folder (the GSPO stage)")
    parser.add_argument("--mpo-run", type=Path, default=Path("runs/mpo-world"), help="scripts/mpo_world.sh's folder")
    parser.add_argument("--out", type=Path, default=None, help="write the report here too")
    parser.add_argument("--append", action="store_true", help="append the report to BENCHMARKS.md")
    args = parser.parse_args()
    lines = report(args.run, args.mpo_run)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    publish(lines, args.append)


if __name__ == "__main__":
    main()
