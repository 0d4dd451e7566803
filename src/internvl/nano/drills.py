"""Drills: text-only turns that teach the nano decoder the steps after seeing: find the answer among the
options, and carry facts through a chain of reasoning.

    python -m internvl.nano.drills --data runs/nano/world-train --out runs/nano/drills

Why: on the world's test split the shipped nano answers the open form of a question far better than its
multiple-choice form (recognition 71% open, 36% choice; spatial 48% and 25%), and its letters are those of a
fixed guess (every counting choice answered "D"). It knows the answer and cannot find it among the options:
matching a value against a list and returning the letter before it is a lookup in its own context, which a
decoder trained from scratch on picture questions learns slowly (docs/nano/README.md#drills).

A drill is the world's own multiple-choice prompt with the answer stated before it, and the letter as the
target:

    The answer is 4.
    How many blue objects are in the image?
    A. 3
    B. 4
    ...
    Answer with the option's letter from the given choices directly.      ->  B

A chain drill gives a reasoning question's facts (what its solution reads off the picture) before the
world's chain-of-thought prompt; the target is the whole solution: the facts copied with the question's
names, the arithmetic, and the final answer (a letter for a choice question):

    Facts: The rams bar has a value of 9. The goats bar has a value of 8.
    Your task is to answer the question below. ...  By how much does the rams bar exceed the goats bar? ...
        ->  The rams bar has a value of 9.\n\nThe goats bar has a value of 8.\n\n9 - 8 = 1.\n\nFinal answer: B

The shipped nano writes "The figs bar has a value of 8 ... 8 - 8 = 1" to that question: wrong names, wrong
arithmetic. Every question of a world export (first turns and follow-ups) with a choice or a chain becomes
one turn (`--kinds` picks which); `--turns` of them make one conversation, so that each packed row carries
many targets. The output is OUT/drills.jsonl and OUT/meta.json for `internvl train sft`, to mix with
picture data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterator

from internvl.data.sft import folder_records
from internvl.data.world.export import line_samples, write_meta
from internvl.data.world.sample import Sample
from internvl.errors import InputError

KINDS = ("option", "chain")


def drill_kind(sample: Sample) -> str | None:
    """The drill a question makes: a chain for a worked solution, an option for a choice, else none."""
    if sample.steps:
        return "chain"
    return "option" if sample.answer_type == "choice" else None


def drill_turn(sample: Sample) -> list[dict[str, str]]:
    """One user turn and its target: for a chain, the facts (the solution's steps without arithmetic)
    then the world's prompt, and the solution; for an option, the answer stated then the prompt, and
    the letter."""
    if sample.steps:
        facts = " ".join(step for step in sample.steps if "=" not in step)
        human = f"Facts: {facts}\n{sample.prompt}"
    else:
        human = f"The answer is {sample.answer_text}.\n{sample.prompt}"
    return [{"from": "human", "value": human}, {"from": "gpt", "value": sample.response}]


def drill_lines(data: Path, turns: int, kinds: tuple[str, ...] = KINDS) -> Iterator[dict[str, Any]]:
    """Conversations of ``turns`` drills each, in the order of the export."""
    pending: list[Sample] = []
    for record in folder_records(data):
        pending.extend(s for s in line_samples(record) if drill_kind(s) in kinds)
        while len(pending) >= turns:
            group, pending = pending[:turns], pending[turns:]
            yield {"id": f"drill-{group[0].id}", "conversations": [t for s in group for t in drill_turn(s)]}


def export_drills(data: str | Path, out: str | Path, turns: int = 8, kinds: tuple[str, ...] = KINDS) -> Path:
    """Write OUT/drills.jsonl and OUT/meta.json from the world export in ``data``; returns the meta path."""
    if turns < 1:
        raise InputError(f"--turns must be at least 1, got {turns}")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise InputError(f"--kinds: unknown or none {unknown} (choose from {', '.join(KINDS)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    annotation = out / "drills.jsonl"
    n = 0
    with annotation.open("w", encoding="utf-8") as f:
        for line in drill_lines(Path(data), turns, kinds):
            f.write(json.dumps(line) + "\n")
            n += 1
    if n == 0:
        raise InputError(f"{data}: fewer than {turns} questions to drill ({', '.join(kinds)})")
    return write_meta(out / "meta.json", "world_drills", annotation, n, max_dynamic_patch=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="folder of `internvl world generate`")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--turns", type=int, default=8, help="drills per conversation")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), help="which drills (default: all)")
    args = parser.parse_args()
    print(export_drills(args.data, args.out, args.turns, tuple(args.kinds)))


if __name__ == "__main__":
    main()
