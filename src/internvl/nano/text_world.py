"""The world in words: text-only conversations that pre-train the nano decoder before it sees a picture.

    python -m internvl.nano.text_world --data runs/nano/world-train --out runs/nano/text

Why: InternVL starts its decoder from a pre-trained language model (Qwen2.5), which already reads a
question, copies its names, counts, compares and adds. The nano decoder starts from random weights, and
learning those skills from picture questions alone is slow: after four SFT stages it still did not copy
the bar names of a chart question into its answer (docs/nano/README.md#stage-1b-the-world-in-words). The
world knows what it drew, so each training conversation has an exact description of its picture
(`internvl world generate --describe`). Here that description takes the picture's place: the decoder
learns the questions' language and reasoning on short text sequences, with no encoder work, and the
later stages only have to teach it to read the same facts from image tokens.

Each input line with a description becomes one text-only SFT line: the first user turn is
"Picture: <description>" (the media placeholders removed) followed by its question, the other question
turns follow, and the description turn itself is dropped. Lines without a description (a few reasoning
scenes have no words) are skipped. The output is OUT/text.jsonl and OUT/meta.json for
`internvl train sft`.

With `--lm` the same text is one assistant turn ("Picture: ...", then "Question: ...\nAnswer: ..." blocks),
so that every token is a target, as in language-model pre-training: a question names what the description
named, and predicting those names is the copying that chat SFT, which supervises only the answers, teaches
too rarely.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Iterator

from internvl.data.sft import folder_records
from internvl.data.world.describe import PROMPT as DESCRIBE_PROMPT
from internvl.data.world.export import write_meta
from internvl.errors import InputError

# "<image>\n", "Image-2: <image>\n", "Frame3: <image>\n", "<video>\n": the media lines of a user turn.
MEDIA_LINE = re.compile(r"^(?:[\w-]+: ?)?<(?:image|video)>\n?", re.MULTILINE)


def strip_media(text: str) -> str:
    """The turn without its media placeholder lines."""
    return MEDIA_LINE.sub("", text).strip()


def described_turns(record: dict[str, Any]) -> tuple[str, list[tuple[str, str]]] | None:
    """(description, [(question, answer), ...] without media lines or the description turn) of a record;
    None when it has no description or no other question."""
    turns = record.get("conversations") or []
    pairs = [(strip_media(turns[i]["value"]), turns[i + 1]["value"]) for i in range(0, len(turns) - 1, 2)]
    description = next((answer for question, answer in pairs if question == DESCRIBE_PROMPT), None)
    questions = [(question, answer) for question, answer in pairs if question != DESCRIBE_PROMPT]
    if description is None or not questions:
        return None
    return description, questions


def text_conversation(record: dict[str, Any]) -> list[dict[str, str]] | None:
    """The record's conversation with its description in place of its media; None without a description."""
    described = described_turns(record)
    if described is None:
        return None
    description, questions = described
    out: list[dict[str, str]] = []
    for question, answer in questions:
        if not out:
            question = f"Picture: {description}\n{question}"
        out += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return out


LM_PROMPT = "Describe a picture of the world, then ask and answer questions about it."


def lm_conversation(record: dict[str, Any]) -> list[dict[str, str]] | None:
    """The whole text as one supervised assistant turn: every token is a target (language-model
    pre-training), so the questions' names, which repeat the description's, teach copying densely."""
    described = described_turns(record)
    if described is None:
        return None
    description, questions = described
    body = "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in questions)
    return [{"from": "human", "value": LM_PROMPT}, {"from": "gpt", "value": f"Picture: {description}\n\n{body}"}]


def text_lines(data: Path, lm: bool = False) -> Iterator[dict[str, Any]]:
    convert = lm_conversation if lm else text_conversation
    for record in folder_records(data):
        conversation = convert(record)
        if conversation is not None:
            yield {"id": f"text-{record.get('id', '')}", "conversations": conversation}


def export_text(data: str | Path, out: str | Path, lm: bool = False) -> Path:
    """Write OUT/text.jsonl and OUT/meta.json from the world export in ``data``; returns the meta path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    annotation = out / "text.jsonl"
    n = 0
    with annotation.open("w", encoding="utf-8") as f:
        for line in text_lines(Path(data), lm):
            f.write(json.dumps(line) + "\n")
            n += 1
    if n == 0:
        raise InputError(f"{data}: no conversation with a description turn (generate it with --describe)")
    return write_meta(out / "meta.json", "world_text_lm" if lm else "world_text", annotation, n, max_dynamic_patch=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="folder of `internvl world generate --describe`")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--lm", action="store_true", help="one supervised turn per picture (every token a target)")
    args = parser.parse_args()
    print(export_text(args.data, args.out, args.lm))


if __name__ == "__main__":
    main()
