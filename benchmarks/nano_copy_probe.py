"""Does the decoder read the question? The loss of a model on the bar names it must copy from a chart question.

The world's reasoning family asks about named bars ("By how much does the rams bar exceed the goats bar?")
and its gold answer restates them ("The rams bar has a value of 7. ..."). A decoder that reads the question
copies each name at almost no loss; one that does not spreads its guess over the world's ~20 animal names
(about ln 20 = 3.0 nats). The same items give the loss on the bar values, which need the picture.

Teacher-forced, one forward pass per item, on the first N chart questions of a world export (SFT JSONL with
`world` records, made with --describe). Prints one row per model and input: mean loss on name tokens, on value
tokens, on all answer tokens. Each model is asked with the picture, with the picture's description in words in
its place (`internvl.nano.text_world`, how stage 1b trains: the values are in the text too), and with the
question alone (no picture, no description: the names can still be copied).

Run: `.venv/bin/python benchmarks/nano_copy_probe.py --data runs/nano2/world --models nano runs/nano2/text-model`
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, publish

import internvl
from internvl.data.sft import folder_records
from internvl.inputs.tokens import IMAGE_PLACEHOLDER
from internvl.nano.text_world import text_conversation

STEP = re.compile(r"The (\w+) bar has a value of (\d+)\.")


def in_spans(offset: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    """Whether a token's character range (start, end) overlaps any of the character spans."""
    start, end = offset
    return any(start < b and end > a for a, b in spans)


def chart_items(data: Path, limit: int) -> list[tuple[str, str, str, str]]:
    """(image path, question, the question with the description in the picture's place, gold answer) of the
    first `limit` reasoning questions about named bars that open their conversation."""
    items = []
    root = json.loads((data / "meta.json").read_text())
    media = Path(next(iter(root.values()))["root"])
    for record in folder_records(data):
        turns = record["conversations"]
        words = text_conversation(record)
        if STEP.search(turns[1]["value"]) and record.get("image") and words is not None:
            items.append((str(media / record["image"]), turns[0]["value"], words[0]["value"], turns[1]["value"]))
        if len(items) == limit:
            break
    return items


@torch.no_grad()
def losses(chat: internvl.Chat, items: list[tuple[str, str, str, str]], given: str) -> dict[str, float]:
    """Mean losses on name, value and all answer tokens; `given` is picture, description or question."""
    sums = {"name": [0.0, 0], "value": [0.0, 0], "answer": [0.0, 0]}
    for image, question, described, answer in items:
        text = question.replace(f"{IMAGE_PLACEHOLDER}\n", "")
        if given == "description":
            inputs = chat.processor([{"role": "user", "content": described}])
        else:
            inputs = chat.processor([{"role": "user", "content": text}], images=[image] if given == "picture" else [])
        encoded = chat.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        ids = torch.tensor(encoded["input_ids"])
        full = torch.cat([inputs.input_ids, ids])[None]
        logits = chat.model(full, pixel_values=inputs.pixel_values)
        logits = logits.logits if hasattr(logits, "logits") else logits
        logp = torch.log_softmax(logits[0, -len(ids) - 1 : -1].float(), dim=-1)
        token_loss = -logp[torch.arange(len(ids)), ids]
        spans = {"name": [], "value": []}
        for match in STEP.finditer(answer):
            spans["name"].append(match.span(1))
            spans["value"].append(match.span(2))
        for (start, end), loss in zip(encoded["offset_mapping"], token_loss.tolist()):
            sums["answer"][0] += loss
            sums["answer"][1] += 1
            for kind, ranges in spans.items():
                if in_spans((start, end), ranges):
                    sums[kind][0] += loss
                    sums[kind][1] += 1
    return {kind: total / max(count, 1) for kind, (total, count) in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an `internvl world generate` folder")
    parser.add_argument("--models", nargs="+", default=["nano"], help="model folders, or nano")
    parser.add_argument("--n", type=int, default=100, help="chart questions")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    items = chart_items(args.data, args.n)
    lines = [
        "## Does the decoder read the question? (benchmarks/nano_copy_probe.py)",
        "",
        machine_line(),
        "",
        f"{len(items)} chart questions of `{args.data}`; mean teacher-forced loss in nats (ln 20 = 3.0: no copying).",
        "",
        "| model | input | bar names (in the question) | bar values | all answer tokens |",
        "|---|---|---:|---:|---:|",
    ]
    for model in args.models:
        chat = internvl.load(None if model == "nano" else model)
        for given in ("picture", "description", "question"):
            result = losses(chat, items, given)
            lines.append(
                f"| {model} | {given} | {result['name']:.2f} | {result['value']:.2f} | {result['answer']:.2f} |"
            )
    publish(lines, args.append)


if __name__ == "__main__":
    main()
