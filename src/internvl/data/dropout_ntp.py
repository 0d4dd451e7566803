"""`internvl data dropout-ntp`: preference pairs for questions without a checkable answer (docs/mpo.md#dropout-ntp),
as InternVL's MMPR builds them (`internvl_chat/tools/reasoning_data_pipeline/mmpr_data_pipeline_dropout_ntp.py`).

The chosen answer is given (a reference answer, or a model's own). Its first half, by words
(`start_ratio`), is written into the assistant's turn, and the model continues it **without the image**.
The continuation is the rejected answer, which tends to make up what it cannot see. With `--with-image`
the model sees the image too, as the official `--load-image` does.

Input: JSONL lines `{"image": ..., "question": ..., "chosen": ...}` (or `answer` for `chosen`), or SFT
lines (the first human turn and the first gpt turn). Output: `pairs_dropout_ntp.jsonl` in the MPO pair
format and `meta.json` for `internvl train mpo`. Lines are appended as they are made, so an
interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from internvl.data.mmpr import MEDIA_LINE, Question, batched, done_keys, question_from_record, read_questions
from internvl.errors import InputError
from internvl.inputs.tokens import IMAGE_PLACEHOLDER

PAIRS_FILE = "pairs_dropout_ntp.jsonl"


def read_chosen(path: str | os.PathLike[str]) -> list[Question]:
    """Every line of a JSONL as a Question whose `answer` is the chosen answer; bad lines name file:line."""
    return read_questions(path, chosen_question)


def chosen_question(record: Any, key: str) -> Question:
    if isinstance(record, dict) and "conversations" not in record:
        chosen = record.get("chosen", record.get("answer"))
        if not isinstance(chosen, str) or not isinstance(record.get("question"), str):
            raise InputError("a line needs a string 'question' and 'chosen' (or 'conversations')")
        record = {**record, "answer": chosen}
    return question_from_record(record, key)


def truncate(chosen: str, start_ratio: float) -> str:
    """The first `start_ratio` of the chosen answer's space-separated words (the official `_truncate_prefix`)."""
    words = chosen.split(" ")
    return " ".join(words[: int(len(words) * start_ratio)]).strip()


def blind_question(question: str) -> str:
    """The question with its image lines and placeholders removed (the model answers without the image)."""
    return MEDIA_LINE.sub("", question).replace(IMAGE_PLACEHOLDER, "").strip()


def make_pairs(
    chat: Any,
    questions: list[Question],
    media_root: Path,
    out: Path,
    start_ratio: float = 0.5,
    with_image: bool = False,
    batch: int = 8,
    progress: bool = True,
    **generation: Any,
) -> Path:
    """Append a pair for every question not yet in OUT/pairs_dropout_ntp.jsonl; write OUT/meta.json."""
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    path = out / PAIRS_FILE
    done = done_keys(path, key="source")
    todo = [q for q in questions if q.key not in done]
    bar = tqdm(
        total=len(questions), initial=len(questions) - len(todo), desc="dropout-NTP", unit="pair", disable=not progress
    )
    with path.open("a", encoding="utf-8") as f:
        for number, group in enumerate(batched(todo, batch)):
            prefixes = [truncate(q.answer, start_ratio) for q in group]
            if with_image:
                conversations = [[{"role": "user", "content": q.question}] for q in group]
                images = [[str(media_root / p) for p in q.images] for q in group]
            else:
                conversations = [[{"role": "user", "content": blind_question(q.question)}] for q in group]
                images = [[] for _ in group]
            rejected = chat.continue_batch(conversations, images, prefixes, seed=number + len(done), **generation)
            for q, answer in zip(group, rejected):
                media: dict[str, Any] = {"image": q.images[0] if len(q.images) == 1 else q.images} if q.images else {}
                line = {**media, "question": q.question, "chosen": q.answer, "rejected": answer, "source": q.key}
                f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(group))
    bar.close()
    lines = [json.loads(t) for t in path.read_text(encoding="utf-8").splitlines()]
    meta = {
        "pairs_dropout_ntp": {
            "root": str(media_root.resolve()) + "/",
            "annotation": str(path.resolve()),
            "repeat_time": 1,
            "length": len(lines),
        }
    }
    (out / "meta.json.tmp").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(out / "meta.json.tmp", out / "meta.json")
    return path


def add_dropout_ntp_command(commands: Any) -> None:
    from internvl.data.mmpr import add_sampling_arguments

    p = commands.add_parser(
        "dropout-ntp",
        help="preference pairs for questions without a checkable answer (MMPR dropout next-token prediction)",
        description="Continue the first half of each chosen answer without the image; the continuation is the "
        "rejected answer. Writes MPO pairs and a meta JSON for `internvl train mpo` (docs/mpo.md#dropout-ntp).",
    )
    add_sampling_arguments(p, f"{PAIRS_FILE}, meta.json", temperature=0.7)
    p.add_argument("--start-ratio", type=float, default=0.5, help="share of the chosen answer's words kept")
    p.add_argument("--with-image", action="store_true", help="the model sees the image while continuing")
    p.add_argument("--batch", type=int, default=8, help="questions continued together")
    p.set_defaults(func=run_dropout_ntp)


def run_dropout_ntp(args: Any) -> int:
    import internvl

    if not 0 < args.start_ratio < 1:
        raise InputError(f"--start-ratio must be between 0 and 1, got {args.start_ratio}")
    if args.temperature <= 0 or args.batch < 1:
        raise InputError("--temperature must be above 0 and --batch at least 1")
    questions = read_chosen(args.data)[: args.limit]
    media_root = Path(args.media_root) if args.media_root else Path(args.data).parent
    chat = internvl.load(args.model, device=args.device)
    path = make_pairs(
        chat,
        questions,
        media_root,
        Path(args.out),
        args.start_ratio,
        args.with_image,
        args.batch,
        progress=not args.no_progress,
        max_tiles=args.max_tiles,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
    )
    print(f"{len(path.read_text().splitlines())} pairs -> {Path(args.out) / 'meta.json'}")
    return 0
