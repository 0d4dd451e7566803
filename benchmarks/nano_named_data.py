"""SFT data where every answer must copy names from its question: the named-bar turns of a world export.

    python benchmarks/nano_named_data.py --data runs/cq/charts --out runs/cq/named [--text-only]

Keeps, from each conversation of an `internvl world generate` folder, the question turns whose gold answer
restates bar names ("The pigs bar has a value of 6."), and only those whose names all stand in the question;
the first kept turn carries the picture. `--text-only` drops the picture: the names can still be copied, the
values cannot be read. The output is OUT/named.jsonl and OUT/meta.json for `internvl train sft`
(docs/nano/README.md#copying-the-question).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nano_copy_probe import STEP

from internvl.data.sft import folder_records
from internvl.inputs.tokens import IMAGE_PLACEHOLDER


def named_turns(record: dict[str, Any], text_only: bool) -> dict[str, Any] | None:
    """The record with only its copyable named-bar turns; None when it has none."""
    turns = record["conversations"]
    kept: list[dict[str, str]] = []
    for question, answer in zip(turns[0::2], turns[1::2]):
        text = question["value"].replace(f"{IMAGE_PLACEHOLDER}\n", "")
        names = [match.group(1) for match in STEP.finditer(answer["value"])]
        if names and all(name in text for name in names):
            kept += [{"from": "human", "value": text}, {"from": "gpt", "value": answer["value"]}]
    if not kept:
        return None
    out = {key: value for key, value in record.items() if not (text_only and key == "image")}
    if not text_only:
        kept[0]["value"] = f"{IMAGE_PLACEHOLDER}\n{kept[0]['value']}"
    return out | {"conversations": kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an `internvl world generate` folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--text-only", action="store_true", help="drop the pictures")
    args = parser.parse_args()
    records = [r for r in (named_turns(record, args.text_only) for record in folder_records(args.data)) if r]
    args.out.mkdir(parents=True, exist_ok=True)
    annotation = args.out / "named.jsonl"
    annotation.write_text("".join(json.dumps(record) + "\n" for record in records))
    source = next(iter(json.loads((args.data / "meta.json").read_text()).values()))
    meta = {"named": source | {"annotation": str(annotation.resolve()), "length": len(records)}}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2))
    answers = sum(len(record["conversations"]) // 2 for record in records)
    print(f"{len(records)} conversations, {answers} named answers -> {args.out}")


if __name__ == "__main__":
    main()
