"""Baselines for the nano model's report, measured in the same harness as the model.

    python -m internvl.nano.baselines prior --train runs/nano/world-train --data runs/nano/world-test.tsv --out runs/nano/eval-prior

`prior` answers every question with the most frequent training answer of its question type (family x
answer type x multiple-choice or open), without looking at the image: what a model that ignores the
picture can reach.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from internvl.data.sft import folder_records
from internvl.errors import InputError, InternVLError
from internvl.eval.formats import EvalItem, load_items
from internvl.eval.runner import Answerer, RunSettings, run_eval


def question_type(family: str, answer_type: str) -> tuple[str, str]:
    return family, answer_type


def answer_prior(train_folder: Path) -> dict[tuple[str, str], str]:
    """Most frequent assistant answer per question type in the exported training JSONL files (every
    question of a multi-question conversation: `world` describes the first, `world.followups` the others)."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for record in folder_records(train_folder):
        world = record.get("world")
        if not isinstance(world, dict):
            raise InputError(
                f"{train_folder}: a record without its `world` question; the prior needs the "
                "output of `internvl world generate`"
            )
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
    try:
        items = load_items(args.data)
        answerer = prior_answerer(answer_prior(args.train))
    except InternVLError as exc:
        parser.exit(2, f"nano.baselines: error: {exc}\n")
    settings = RunSettings(model="answer-prior baseline", extra={"train": str(args.train)})
    run_eval(items, answerer, args.out, settings, batch_size=64, data_path=str(args.data.resolve()))


if __name__ == "__main__":
    main()
