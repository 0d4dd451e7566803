"""Append-only JSONL files that survive an interrupted run (predictions, judge cache).

Each record is written as one line with its newline in a single write, then flushed. A run killed
mid-write can leave an unterminated last line: reading ignores it when it is not valid JSON, and
`repair` cuts it off the file (or adds the missing newline when it is complete) before more lines
are appended. A malformed line anywhere else is an `InputError` naming the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from internvl.errors import InputError


def read_records(path: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (none if it does not exist); see the module docstring."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    start = 0
    number = 0
    while start < len(data):
        number += 1
        end = data.find(b"\n", start)
        complete = end >= 0
        line = data[start : end if complete else len(data)]
        next_start = end + 1 if complete else len(data)
        if line.strip():
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
                if complete:
                    raise InputError(f"{path}: line {number}: malformed record ({error})") from error
                if repair:  # a write cut short: drop it so that appending starts on a clean line
                    with open(path, "r+b") as file:
                        file.truncate(start)
                break
            records.append(record)
            if not complete and repair:
                with open(path, "ab") as file:
                    file.write(b"\n")
        start = next_start
    return records


def append_records(file: TextIO, records: Iterable[dict[str, Any]]) -> None:
    """Write records to an open (append-mode) file, one line each, and flush."""
    for record in records:
        file.write(json.dumps(record, ensure_ascii=False) + "\n")
    file.flush()
