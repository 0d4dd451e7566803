"""Option drills: text-only turns that teach the nano decoder to map an answer onto its option letter.

    python -m internvl.nano.drills --data runs/nano/world-train --out runs/nano/drills

Why: on the world's test split the shipped nano answers the open form of a question far better than its
multiple-choice form (recognition 71% open, 36% choice; spatial 48% and 25%), and its letters are those of a
fixed guess (every counting choice answered "D"). It knows the answer and cannot find it among the options:
matching a value against a list and returning the letter before it is a lookup in its own context, which a
decoder trained from scratch on picture questions learns slowly (docs/nano/README.md#option-drills).

A drill is the world's own multiple-choice prompt with the answer stated before it, and the letter as the
target:

    The answer is 4.
    How many blue objects are in the image?
    A. 3
    B. 4
    ...
    Answer with the option's letter from the given choices directly.      ->  B

Every choice question of a world export (first turns and follow-ups; chain-of-thought questions are left
out, their target is a solution) becomes one turn; `--turns` of them make one conversation, so that each
packed row carries many letter targets. The output is OUT/drills.jsonl and OUT/meta.json for
`internvl train sft`, to mix with picture data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterator

from internvl.data.sft import folder_records
from internvl.data.world.export import write_meta
from internvl.data.world.sample import Sample
from internvl.errors import InputError


def choice_samples(record: dict[str, Any]) -> Iterator[Sample]:
    """The multiple-choice questions of one world SFT line (its first turn and its follow-ups) whose target
    is the letter alone."""
    world = record.get("world")
    if world is None:
        raise InputError(f"record {record.get('id', '?')}: no 'world' field (not an `internvl world generate` line)")
    for entry in [world, *world.get("followups", [])]:
        sample = Sample.from_record(entry)
        if sample.answer_type == "choice" and not sample.steps:
            yield sample


def drill_turn(sample: Sample) -> list[dict[str, str]]:
    """One user turn (the answer stated, then the world's prompt) and its letter."""
    return [
        {"from": "human", "value": f"The answer is {sample.answer_text}.\n{sample.prompt}"},
        {"from": "gpt", "value": sample.answer},
    ]


def drill_lines(data: Path, turns: int) -> Iterator[dict[str, Any]]:
    """Conversations of ``turns`` drills each, in the order of the export."""
    pending: list[Sample] = []
    for record in folder_records(data):
        pending.extend(choice_samples(record))
        while len(pending) >= turns:
            group, pending = pending[:turns], pending[turns:]
            yield {"id": f"drill-{group[0].id}", "conversations": [t for s in group for t in drill_turn(s)]}


def export_drills(data: str | Path, out: str | Path, turns: int = 8) -> Path:
    """Write OUT/drills.jsonl and OUT/meta.json from the world export in ``data``; returns the meta path."""
    if turns < 1:
        raise InputError(f"--turns must be at least 1, got {turns}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    annotation = out / "drills.jsonl"
    n = 0
    with annotation.open("w", encoding="utf-8") as f:
        for line in drill_lines(Path(data), turns):
            f.write(json.dumps(line) + "\n")
            n += 1
    if n == 0:
        raise InputError(f"{data}: fewer than {turns} multiple-choice questions to drill")
    return write_meta(out / "meta.json", "world_option_drills", annotation, n, max_dynamic_patch=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="folder of `internvl world generate`")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--turns", type=int, default=8, help="drills per conversation")
    args = parser.parse_args()
    print(export_drills(args.data, args.out, args.turns))


if __name__ == "__main__":
    main()
