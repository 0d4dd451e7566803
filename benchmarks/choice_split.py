"""Does a model know the answer but not the letter? Accuracy on multiple-choice items next to open items.

    python benchmarks/choice_split.py runs/eval-a runs/eval-b [--append]

The world asks each family's questions in two forms: open (answer in words) and multiple choice (answer
with the option's letter). Both forms draw from the same scenes, so a model that finds its answer among the
options scores about the same on both; a model that cannot scores its letter guess on the choice items.
For each `internvl eval run` folder the table gives, per family, the accuracy on open and on choice items,
and the letters the model answered on choice items (a fixed guess shows as one letter).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, publish


def split_scores(folder: Path) -> tuple[dict[str, dict[str, list[float]]], dict[str, Counter[str]]]:
    """From an eval run's scores.jsonl: {family: {"open": scores, "choice": scores}}, and {family: counts of
    the letters extracted on its choice items}."""
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"open": [], "choice": []})
    letters: dict[str, Counter[str]] = defaultdict(Counter)
    with (folder / "scores.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            choice = row["metric"] == "mcq"
            scores[row["category"]]["choice" if choice else "open"].append(float(row["score"]))
            if choice:
                letters[row["category"]][str(row.get("extracted"))[:3]] += 1
    return dict(scores), dict(letters)


def percent(scores: list[float]) -> str:
    return f"{100 * sum(scores) / len(scores):.0f} ({len(scores)})" if scores else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="`internvl eval run` output folders")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    lines = ["## Open and multiple-choice accuracy (benchmarks/choice_split.py)", "", machine_line(), ""]
    for run in args.runs:
        scores, picked = split_scores(run)
        lines += [
            f"`{run}`: accuracy in % (items), and the letters answered on choice items.",
            "",
            "| family | open | choice | letters answered |",
            "|---|---:|---:|---|",
        ]
        for family in sorted(scores):
            answered = ", ".join(f"{k} {v}" for k, v in sorted(picked.get(family, Counter()).items()))
            lines.append(
                f"| {family} | {percent(scores[family]['open'])} | {percent(scores[family]['choice'])} | {answered} |"
            )
        every = {form: [s for f in scores.values() for s in f[form]] for form in ("open", "choice")}
        lines += [f"| **all** | {percent(every['open'])} | {percent(every['choice'])} | |", ""]
    publish(lines, args.append)


if __name__ == "__main__":
    main()
