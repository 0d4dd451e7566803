"""SFT data as evaluation items: score a model on the held-out split of the data it was fine-tuned on.

`internvl eval run --data` takes the official SFT format (docs/sft.md) as well as benchmark files:

* a meta JSON (`{name: {root, annotation, ...}}`): every entry's annotation lines, media under `root`;
* an annotation JSONL whose lines hold `conversations`: media relative to the JSONL's folder.

Every question of a line becomes one item, asked alone with the line's images: the human turn's text
without its `<image>` lines (the answerer puts the images back the way training does,
docs/prompts.md#one-prompt-for-both), scored by exact match against the gpt turn that follows. Its id
is `LINE_ID#k` (k = 0, 1, ... within the line), its category the meta entry's name (`sft` for a bare
JSONL file). Video lines are refused with the file and line named.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from internvl.data.sft import json_record, parse_conversations
from internvl.errors import InputError
from internvl.eval.formats import EvalItem
from internvl.inputs.tokens import IMAGE_PLACEHOLDER

_IMAGE_LINE = re.compile(rf"(?:Image-\d+: )?{re.escape(IMAGE_PLACEHOLDER)}\n?")


def is_sft_jsonl(path: Path) -> bool:
    """Whether the first non-blank line of a JSONL file is an SFT line (it holds `conversations`)."""
    with path.open(encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(record, dict) and "conversations" in record
    return False


def read_sft_meta(path: Path, metric: str | None = None) -> list[EvalItem]:
    """The items of every entry of an SFT meta JSON."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a JSON meta file ({error})") from error
    if not isinstance(meta, dict) or not meta:
        raise InputError(f"{path}: a meta file maps dataset names to {{root, annotation}} (docs/sft.md#meta-file)")
    items: list[EvalItem] = []
    for name, entry in meta.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("annotation"), str):
            raise InputError(f"{path}: entry {name!r} needs an 'annotation' path")
        annotation = Path(entry["annotation"])
        if not annotation.is_absolute():
            annotation = path.parent / annotation
        items += read_sft_jsonl(annotation, root=str(entry.get("root", "")), category=name, metric=metric)
    return items


def read_sft_jsonl(
    path: Path, root: str | None = None, category: str = "sft", metric: str | None = None
) -> list[EvalItem]:
    """The items of one SFT annotation file; media paths are joined to `root` (default: the file's folder)."""
    if not path.is_file():
        raise InputError(f"{path}: no such annotation file")
    base = Path(root) if root else path.parent
    items: list[EvalItem] = []
    with path.open(encoding="utf-8-sig") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                items += _line_items(json_record(text), base, category, metric, default_id=f"{path.stem}-{number}")
            except InputError as error:
                raise InputError(f"{path}:{number}: {error}") from error
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InputError(f"{path}: duplicate id {item.id!r}")
        seen.add(item.id)
    return items


def _line_items(
    record: dict[str, Any], base: Path, category: str, metric: str | None, default_id: str
) -> list[EvalItem]:
    if "video" in record:
        raise InputError("video lines cannot be evaluated from SFT data yet; export them as a TSV with media=video")
    _, turns = parse_conversations(record)
    sources = record.get("image") or []
    paths = [sources] if isinstance(sources, str) else sources
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise InputError("'image' must be a path or a list of paths")
    images = []
    for relative in paths:
        image = base / relative
        if not image.is_file():
            raise InputError(f"image {str(image)!r} not found")
        images.append(image)
    line_id = str(record.get("id", default_id))
    items: list[EvalItem] = []
    for k in range(len(turns) - 1):
        (role, question), (next_role, answer) = turns[k], turns[k + 1]
        if role != "human" or next_role != "gpt":
            continue
        prompt = _IMAGE_LINE.sub("", question).strip()
        items.append(
            EvalItem(
                id=f"{line_id}#{len(items)}",
                question=prompt,
                answers=(answer.strip(),),
                images=tuple(images),
                category=category,
                metric=metric or "exact",
                prompt=prompt,
            )
        )
    return items
