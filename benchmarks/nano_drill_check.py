"""Can a model do the drills of internvl.nano.drills on held-out questions, in text alone?

    python benchmarks/nano_drill_check.py --test runs/nano/world-test-500.tsv nano runs/x/model [--append]

No picture: each choice question of a world test TSV becomes an option drill (the answer stated, the
world's prompt; right when the model answers the letter of the stated answer), and each reasoning question
a chain drill (its facts stated, the chain-of-thought prompt; right when the solution ends with the right
final answer). A model that reads its context does both nearly always; one that guesses a letter scores
about 30% on the options (2 to 4 of them) and near 0 on the chains.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, publish

import internvl
from internvl.data.world import load_samples
from internvl.nano.drills import drill_kind, drill_turn


def answers(chat, prompts: list[str], max_new_tokens: int, batch: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Greedy answers of ``chat`` (an `internvl.load` model) to text-only prompts, ``batch`` at a time."""
    out: list[str] = []
    for i in range(0, len(prompts), batch):
        group = prompts[i : i + batch]
        out += chat.ask_batch(group, images=[[] for _ in group], max_new_tokens=max_new_tokens)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model folders, or nano")
    parser.add_argument("--test", required=True, type=Path, help="a world test TSV (world export-tsv)")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    samples = load_samples(args.test)
    options = [s for s in samples if drill_kind(s) == "option"]
    chains = [s for s in samples if drill_kind(s) == "chain"]
    lines = [
        "## Drills in text alone (benchmarks/nano_drill_check.py)",
        "",
        machine_line(),
        "",
        f"Held-out questions of `{args.test}`, no picture: option drills (answer stated, letter asked) and chain "
        "drills (facts stated, solution asked). Right answers of all.",
        "",
        "| model | option drills | chain drills |",
        "|---|---:|---:|",
    ]
    for model in args.models:
        chat = internvl.load(model)
        letters = answers(chat, [drill_turn(s)[0]["value"] for s in options], max_new_tokens=4, batch=16)
        solved = answers(chat, [drill_turn(s)[0]["value"] for s in chains], max_new_tokens=64, batch=8)
        right_options = sum(a.strip()[:1] == s.answer for a, s in zip(letters, options))
        right_chains = sum(a.strip().endswith(f"Final answer: {s.answer}") for a, s in zip(solved, chains))
        lines.append(f"| `{model}` | {right_options} / {len(options)} | {right_chains} / {len(chains)} |")
        print(f"{model}: e.g. {solved[0]!r} for {drill_turn(chains[0])[0]['value'][:80]!r}", file=sys.stderr)
    publish(lines, args.append)


if __name__ == "__main__":
    main()
