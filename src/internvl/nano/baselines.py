"""Baselines for the nano model's report, measured in the same harness as the model.

    python -m internvl.nano.baselines prior --train runs/nano/world-train --data runs/nano/world-test.tsv --out runs/nano/eval-prior

`prior` answers every question with the most frequent training answer of its question type (family x
answer type x multiple-choice or open), without looking at the image: what a model that ignores the
picture can reach.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from internvl.eval.formats import EvalItem, load_items
from internvl.eval.runner import Answerer, RunSettings, run_eval


def question_type(family: str, answer_type: str) -> tuple[str, str]:
    return family, answer_type


def answer_prior(train_folder: Path) -> dict[tuple[str, str], str]:
    """Most frequent assistant answer per question type in the exported training JSONL files (every
    question of a multi-question conversation: `world` describes the first, `world.followups` the others)."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for annotation in sorted(train_folder.glob("*.jsonl")):
        with annotation.open(encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                world = record["world"]
                questions = [world, *world.get("followups", [])]
                answers = [turn["value"] for turn in record["conversations"][1::2]]  # the gpt turns
                for question, answer in zip(questions, answers, strict=True):
                    key = question_type(question["family"], question["answer_type"])
                    counts.setdefault(key, Counter())[answer] += 1
    return {key: counter.most_common(1)[0][0] for key, counter in counts.items()}


def prior_answerer(prior: dict[tuple[str, str], str]) -> Answerer:
    def answer(items: Sequence[EvalItem]) -> list[str]:
        return [prior.get(question_type(item.category, item.meta.get("answer_type", "")), "") for item in items]

    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", choices=["prior"])
    parser.add_argument("--train", type=Path, required=True, help="`internvl world generate` output of the train split")
    parser.add_argument("--data", type=Path, required=True, help="the evaluation TSV")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    items = load_items(args.data)
    settings = RunSettings(model="answer-prior baseline", extra={"train": str(args.train)})
    run_eval(items, prior_answerer(answer_prior(args.train)), args.out, settings, batch_size=64,
             data_path=str(args.data.resolve()))


if __name__ == "__main__":
    main()
