"""Benchmark files -> `EvalItem`s: VLMEvalKit TSV and our own JSONL (SFT data too: `eval/sft_items.py`).

Every reader validates as it goes and raises `InputError` naming the file and the line (and, for
TSV, the row index) of the first malformed row, so that a user can fix a real benchmark file.

VLMEvalKit TSV (MMBench, MMStar, MMMU, MME, HallusionBench, MM-Vet, ... and the world's TSV export)
--------------------------------------------------------------------------------------------------
Tab-separated, one header line, fields quoted the pandas/csv way. Columns:

* `index` (required, unique): the item id.
* `question` (required).
* `answer` (optional: a test split without answers is read, its items are left unscored). For a
  multiple-choice row, the option letter.
* `A`, `B`, ... (any single capital letter): option texts; empty or `nan` means "no such option".
  A row with at least one option is multiple choice.
* `hint` (optional): put before the question in the prompt.
* `category`, else `l2-category`: the row's category in the report ("other" when absent).
* `image`: base64 image; a list of them written as a Python/JSON list literal (multi-image); or a
  short all-digit string meaning "the same image as the row with that index" (VLMEvalKit stores
  duplicates this way).
* `image_path` (used when `image` is absent or empty): a path, or a list literal of paths, relative
  to the TSV's folder.
* `prompt` (optional): the exact text to ask, instead of the one built from question, hint and options.
* `metric` (optional): how to score the row (see below).
* `media` (optional): `video` when the row's images are the frames of one video.
* Any other column is kept in `EvalItem.meta`.

The metric of a row is its `metric` column, else inferred: options -> "mcq"; answer yes/no ->
"yorn"; else "exact". `kind` ("mcq" | "yorn" | "vqa") or `metric` force it for the whole file.

Our JSONL format (one JSON object per line; blank lines are skipped)
--------------------------------------------------------------------
    {"id": "q1",                      # str or int, unique, required
     "question": "What animal is this?",  # required
     "answer": "dog",                 # str | number | list of str (several accepted answers);
                                      #   for "iou" a box [x1, y1, x2, y2] / [[...]] or "<box>[[...]]</box>";
                                      #   absent or null -> the item is answered but not scored
     "image": "img/1.png",            # or "images": [...]; paths relative to the JSONL file,
                                      #   or "data:image/...;base64,..." URIs; absent -> text only
     "category": "animals",           # optional, default "other"
     "metric": "mcq",                 # exact | mcq | yorn | numeric | anls | iou | judge (optional,
                                      #   inferred as for TSV)
     "options": {"A": "cat", "B": "dog"},  # or a list ["cat", "dog"] -> letters A, B, ...
     "hint": "...",                   # optional
     "prompt": "...",                 # optional: sent verbatim instead of the built prompt
     "tolerance": 0.05,               # optional, "numeric" only: relative tolerance for this item
     "meta": {...}}                   # optional, kept as is

A multiple-choice answer may be the letter or the option text; it is stored as the letter.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import io
import json
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from PIL import Image, UnidentifiedImageError

from internvl.errors import InputError
from internvl.eval.prompts import build_prompt
from internvl.eval.scoring import METRICS, normalize_text, parse_boxes

ImageSource = Union[Image.Image, Path, bytes]
"""A PIL image, a path to an image file, or the encoded bytes of one (decoded when loaded)."""

KINDS = ("mcq", "yorn", "vqa")
KIND_METRIC = {"mcq": "mcq", "yorn": "yorn", "vqa": "exact"}
OPTION_LETTERS = tuple(string.ascii_uppercase)
DEFAULT_CATEGORY = "other"
MISSING = ("", "nan", "NaN")  # how pandas-written TSVs spell an empty cell


@dataclass(frozen=True)
class EvalItem:
    """One question to answer and score.

    `prompt` is the full text to send (built from question, hint, options and metric when left
    empty); `images` go alongside it, the answerer decides how to place them. `answers` holds every
    accepted answer (empty: no ground truth, the item is answered but not scored).
    """

    id: str
    question: str
    answers: tuple[str, ...] = ()
    images: tuple[ImageSource, ...] = ()
    category: str = DEFAULT_CATEGORY
    metric: str = "exact"
    options: Mapping[str, str] = field(default_factory=dict)
    hint: str | None = None
    prompt: str = ""
    tolerance: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InputError(f"item {self.id!r}: unknown metric {self.metric!r}; use one of {', '.join(METRICS)}")
        if self.metric == "mcq":
            if not self.options:
                raise InputError(f"item {self.id!r}: metric 'mcq' needs options")
            if self.answers:
                object.__setattr__(self, "answers", (_option_letter(self.answers[0], self.options, self.id),))
        if self.metric == "yorn":
            for answer in self.answers:
                if normalize_text(answer) not in ("yes", "no"):
                    raise InputError(f"item {self.id!r}: metric 'yorn' needs a yes/no answer, got {answer!r}")
        if self.metric == "iou":
            for answer in self.answers:
                if not parse_boxes(answer):
                    raise InputError(f"item {self.id!r}: metric 'iou' needs a box [[x1, y1, x2, y2]], got {answer!r}")
        if not self.prompt:
            object.__setattr__(self, "prompt", build_prompt(self.question, self.metric, self.options, self.hint))

    @property
    def answer(self) -> str | None:
        """The first accepted answer, or None when the item has no ground truth."""
        return self.answers[0] if self.answers else None

    def load_images(self) -> list[Image.Image]:
        """The item's images as RGB PIL images."""
        return [open_image(source, self.id) for source in self.images]


def open_image(source: ImageSource, item_id: str = "?") -> Image.Image:
    """Open one image source as an RGB PIL image."""
    try:
        if isinstance(source, Image.Image):
            return source.convert("RGB")
        if isinstance(source, bytes):
            return Image.open(io.BytesIO(source)).convert("RGB")
        return Image.open(source).convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise InputError(f"item {item_id!r}: cannot open image ({error})") from error


def load_items(path: str | Path, kind: str | None = None, metric: str | None = None) -> list[EvalItem]:
    """Read a `.tsv` (VLMEvalKit) or `.jsonl` (ours) benchmark file, or SFT data (a meta `.json`, or a
    `.jsonl` of conversations: `internvl.eval.sft_items`); see the module docstring."""
    from internvl.eval import sft_items  # it builds EvalItems: imported here, not at the top, to avoid a cycle

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such data file")
    forced = resolve_metric(kind, metric)
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return read_tsv(path, kind=kind, metric=forced)
    if suffix == ".jsonl" and sft_items.is_sft_jsonl(path):
        return sft_items.read_sft_jsonl(path, metric=forced)
    if suffix == ".jsonl":
        return read_jsonl(path, kind=kind, metric=forced)
    if suffix == ".json":
        return sft_items.read_sft_meta(path, metric=forced)
    raise InputError(
        f"{path}: unknown data format {suffix!r}; use a VLMEvalKit .tsv, an internvl .jsonl, "
        "or SFT data (a meta .json or a .jsonl of conversations)"
    )


def resolve_metric(kind: str | None, metric: str | None) -> str | None:
    """The metric forced on every item by `kind` / `metric`, or None to infer it per item."""
    if kind is not None and kind not in KINDS:
        raise InputError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if metric is not None and metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if kind in ("mcq", "yorn") and metric not in (None, KIND_METRIC[kind]):
        raise InputError(f"kind {kind!r} is scored with metric {KIND_METRIC[kind]!r}, not {metric!r}")
    if kind == "vqa" and metric in ("mcq", "yorn"):
        raise InputError(f"kind 'vqa' cannot be scored with metric {metric!r}")
    if metric is not None:
        return metric
    return KIND_METRIC[kind] if kind is not None else None


def infer_metric(options: Mapping[str, str], answers: tuple[str, ...]) -> str:
    """Options -> "mcq"; a yes/no answer -> "yorn"; anything else -> "exact"."""
    if options:
        return "mcq"
    if answers and all(normalize_text(a) in ("yes", "no") for a in answers):
        return "yorn"
    return "exact"


# --- VLMEvalKit TSV ---------------------------------------------------------------------------------


def read_tsv(path: str | Path, kind: str | None = None, metric: str | None = None) -> list[EvalItem]:
    """Read a VLMEvalKit-style TSV file (see the module docstring)."""
    path = Path(path)
    # Base64 images are far longer than csv's default 128 KiB field limit (a process-wide setting,
    # restored afterwards).
    old_limit = csv.field_size_limit(2**31 - 1)
    try:
        rows = list(_tsv_rows(path))
    finally:
        csv.field_size_limit(old_limit)
    if not rows:
        raise InputError(f"{path}: empty file (no header line)")
    header = rows[0][1]
    for column in ("index", "question"):
        if column not in header:
            raise InputError(f"{path}: line 1: the header has no {column!r} column (has: {', '.join(header)})")
    option_columns = [c for c in header if c in OPTION_LETTERS]

    records: list[tuple[int, dict[str, str]]] = []
    for line, fields in rows[1:]:
        if len(fields) != len(header):
            raise InputError(f"{path}: line {line}: {len(fields)} fields, the header has {len(header)}")
        records.append((line, dict(zip(header, fields))))

    images_by_index = {record["index"].strip(): record.get("image", "") for _, record in records}
    decoded: dict[str, tuple[ImageSource, ...]] = {}  # rows that share an image share its bytes
    items: list[EvalItem] = []
    seen: set[str] = set()
    for line, record in records:
        item_id = record["index"].strip()
        where = f"{path}: line {line} (index {item_id!r})"
        if not item_id:
            raise InputError(f"{path}: line {line}: empty 'index'")
        if item_id in seen:
            raise InputError(f"{where}: duplicate index")
        seen.add(item_id)
        options = {c: record[c] for c in option_columns if record[c].strip() not in MISSING}
        answer = record.get("answer", "").strip()
        answers = (answer,) if answer not in MISSING else ()
        row_metric = metric or record.get("metric", "").strip() or infer_metric(options, answers)
        if kind == "mcq" and not options:
            raise InputError(
                f"{where}: kind 'mcq' but the row has no options (columns {''.join(option_columns) or 'A, B, ...'})"
            )
        hint = record.get("hint", "").strip()
        category = _first_present(record, ("category", "l2-category")) or DEFAULT_CATEGORY
        known = {"index", "question", "answer", "hint", "image", "image_path", "prompt", *option_columns}
        meta = {k: v for k, v in record.items() if k not in known and v.strip() not in MISSING}
        try:
            images = _tsv_images(item_id, record, images_by_index, decoded, path.parent)
            items.append(
                EvalItem(
                    id=item_id,
                    question=record["question"],
                    answers=answers,
                    images=images,
                    category=category,
                    metric=row_metric,
                    options=options,
                    hint=hint if hint not in MISSING else None,
                    meta=meta,
                    prompt=record.get("prompt", "").strip(),
                )
            )
        except InputError as error:
            raise InputError(f"{where}: {error}") from error
    return items


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first physical line number, fields) for every non-blank record."""
    with open(path, encoding="utf-8-sig", newline="") as file:  # -sig: a BOM is not part of "index"
        reader = csv.reader(file, delimiter="\t")
        start = 1
        try:
            for fields in reader:
                if fields and any(f.strip() for f in fields):
                    yield start, fields
                start = reader.line_num + 1
        except csv.Error as error:
            raise InputError(f"{path}: line {start}: malformed TSV ({error})") from error
        except UnicodeDecodeError as error:
            raise InputError(f"{path}: near line {start}: not UTF-8 text ({error.reason})") from error


def _first_present(record: Mapping[str, str], columns: tuple[str, ...]) -> str | None:
    for column in columns:
        value = record.get(column, "").strip()
        if value not in MISSING:
            return value
    return None


def _tsv_images(
    item_id: str,
    record: Mapping[str, str],
    images_by_index: Mapping[str, str],
    decoded: dict[str, tuple[ImageSource, ...]],
    folder: Path,
) -> tuple[ImageSource, ...]:
    value = record.get("image", "").strip()
    if value not in MISSING:
        owner = item_id
        if _is_reference(value):  # "same image as the row with index <value>"
            owner = value
            target = images_by_index.get(value)
            if target is None:
                raise InputError(f"column 'image' refers to row index {value!r}, which is not in the file")
            value = target.strip()
            if value in MISSING or _is_reference(value):
                raise InputError(f"column 'image' refers to row {owner!r}, which holds no image of its own")
        if owner not in decoded:
            decoded[owner] = tuple(_decode_base64_image(v) for v in _maybe_list(value, "image"))
        return decoded[owner]
    paths = record.get("image_path", "").strip()
    if paths not in MISSING:
        return tuple(_existing_path(p, folder) for p in _maybe_list(paths, "image_path"))
    return ()


def _is_reference(value: str) -> bool:
    return value.isdigit() and len(value) <= 64


def _maybe_list(value: str, column: str) -> list[str]:
    """A single string, or the strings of a list literal like "['a', 'b']" (VLMEvalKit multi-image)."""
    if not value.startswith("["):
        return [value]
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError) as error:
        raise InputError(f"column {column!r} starts with '[' but is not a list literal ({error})") from error
    if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed) or not parsed:
        raise InputError(f"column {column!r} must be a non-empty list of strings")
    return parsed


def _decode_base64_image(value: str) -> bytes:
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InputError(f"image is not valid base64 ({error})") from error
    _check_image_bytes(data)
    return data


def _check_image_bytes(data: bytes) -> None:
    """Reads only the header: a bad image is caught now, with its line number, not mid-run."""
    try:
        with Image.open(io.BytesIO(data)):
            pass
    except (OSError, UnidentifiedImageError) as error:
        raise InputError(f"image data is not a readable image ({error})") from error


def _existing_path(value: str, folder: Path) -> Path:
    path = Path(value)
    if not path.is_absolute():
        path = folder / path
    if not path.is_file():
        raise InputError(f"image file {str(path)!r} does not exist")
    return path


# --- our JSONL ----------------------------------------------------------------------------------------


def read_jsonl(path: str | Path, kind: str | None = None, metric: str | None = None) -> list[EvalItem]:
    """Read our JSONL benchmark format (see the module docstring)."""
    path = Path(path)
    items: list[EvalItem] = []
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")  # not splitlines(): JSON may hold U+2028
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from error
        try:
            item = _jsonl_item(record, path.parent, kind, metric)
        except InputError as error:
            raise InputError(f"{where}: {error}") from error
        if item.id in seen:
            raise InputError(f"{where}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    return items


def _jsonl_item(record: Any, folder: Path, kind: str | None, metric: str | None) -> EvalItem:
    if not isinstance(record, dict):
        raise InputError("each line must be a JSON object")
    item_id = record.get("id")
    if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or str(item_id) == "":
        raise InputError("'id' must be a non-empty string or an integer")
    question = record.get("question")
    if not isinstance(question, str):
        raise InputError("'question' must be a string")
    options = _jsonl_options(record.get("options"))
    item_metric = metric or record.get("metric")
    if item_metric is not None and item_metric not in METRICS:
        raise InputError(f"unknown metric {item_metric!r}; use one of {', '.join(METRICS)}")
    answers = _jsonl_answers(record.get("answer"), item_metric)
    item_metric = item_metric or infer_metric(options, answers)
    if kind == "mcq" and not options:
        raise InputError("kind 'mcq' but the line has no 'options'")
    if "image" in record and "images" in record:
        raise InputError("give 'image' or 'images', not both")
    sources = record.get("images", [record["image"]] if "image" in record else [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise InputError("'image' must be a string and 'images' a list of strings")
    images = tuple(_decode_base64_image(s) if s.startswith("data:") else _existing_path(s, folder) for s in sources)
    tolerance = record.get("tolerance")
    if tolerance is not None and (
        isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0
    ):
        raise InputError("'tolerance' must be a number >= 0")
    for key in ("category", "hint", "prompt"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise InputError(f"{key!r} must be a string")
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise InputError("'meta' must be an object")
    return EvalItem(
        id=str(item_id),
        question=question,
        answers=answers,
        images=images,
        category=record.get("category") or DEFAULT_CATEGORY,
        metric=item_metric,
        options=options,
        hint=record.get("hint"),
        prompt=record.get("prompt") or "",
        tolerance=float(tolerance) if tolerance is not None else None,
        meta=meta,
    )


def _jsonl_options(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        if len(value) > len(OPTION_LETTERS):
            raise InputError(f"at most {len(OPTION_LETTERS)} options")
        value = dict(zip(OPTION_LETTERS, value))
    if not isinstance(value, dict):
        raise InputError("'options' must be an object {letter: text} or a list of texts")
    options: dict[str, str] = {}
    for letter, text in value.items():
        if letter not in OPTION_LETTERS:
            raise InputError(f"option key {letter!r} is not a capital letter")
        if not isinstance(text, (str, int, float)) or isinstance(text, bool):
            raise InputError(f"option {letter} must be text")
        options[letter] = str(text)
    return options


def _jsonl_answers(value: Any, metric: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, bool):
        raise InputError("'answer' must be a string, a number or a list of strings")
    if isinstance(value, (int, float)):
        return (_format_number(value),)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        if metric == "iou" and value and all(isinstance(v, (int, float, list)) for v in value):
            box = value if isinstance(value[0], list) else [value]
            return (json.dumps(box),)
        if value and all(isinstance(v, str) for v in value):
            return tuple(value)
    raise InputError("'answer' must be a string, a number or a non-empty list of strings (or a box for 'iou')")


def _format_number(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else repr(float(value))


def _option_letter(answer: str, options: Mapping[str, str], item_id: str) -> str:
    """A multiple-choice answer given as a letter ("B", "(b)") or as the option text -> the letter."""
    letter = re.sub(r"[\s().:\[\]]", "", answer).upper()
    if letter in options:
        return letter
    matches = [k for k, text in options.items() if normalize_text(text) == normalize_text(answer)]
    if len(matches) == 1:
        return matches[0]
    raise InputError(
        f"item {item_id!r}: answer {answer!r} is neither an option letter ({', '.join(options)}) nor one option's text"
    )
