"""Restartable evaluation runs: answer every item once, append as we go, score, report.

A run folder holds:

    settings.json      the run settings + a fingerprint of the data; a rerun with other settings
                       or other data is refused (`RunError`), so one folder = one experiment
    predictions.jsonl  one line per answered item, appended and flushed after every batch; a rerun
                       answers only the items not in it (an interrupted run just resumes)
    scores.jsonl       one line per item: score and what the scorer read from the answer
    summary.json       overall and per-category scores (+ settings and scoring knobs)
    chart.png          bar chart of summary.json
    judge.jsonl        cache of LLM-judge grades (when a judge is used)

The harness knows nothing of the model: it calls an `Answerer`, a function from a batch of
`EvalItem`s to their answers (`item.prompt` + `item.images` in, text out). The model-backed
answerer is built from `RunSettings` by the CLI's `answerer_factory` hook; it is expected to load
`item.load_images()`, tile each with `settings.max_tiles`, put the image placeholder(s) before
`item.prompt` (the prompt holds none), use `settings.template` / `settings.system_prompt` (None:
the model's own) and exactly `settings.generation`, and answer the batch in one batched call when
the model supports it (`--batch-size` decides how many items a call gets).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from internvl.errors import InputError, InternVLError
from internvl.eval.formats import EvalItem
from internvl.eval.jsonl import append_records, read_records
from internvl.eval.judge import Judge, JudgeCache
from internvl.eval.prompts import build_cot_prompt
from internvl.eval.report import ScoredItem, format_table, summarize, try_write_chart
from internvl.eval.scoring import Score, ScoringSettings, score_answer

Answerer = Callable[[Sequence[EvalItem]], Sequence[Any]]
"""A batch of items -> one answer per item, in order: a string, or a dict with the string as
"prediction" and more fields to record with it (Best-of-N records its candidates and their scores)."""

SETTINGS_FILE = "settings.json"
PREDICTIONS_FILE = "predictions.jsonl"
SCORES_FILE = "scores.jsonl"
SUMMARY_FILE = "summary.json"
CHART_FILE = "chart.png"
JUDGE_FILE = "judge.jsonl"


class RunError(InternVLError):
    """A run folder cannot be used as asked (other settings or data), or the answerer broke its contract."""


def default_generation() -> dict[str, Any]:
    """Greedy decoding, as the InternVL evaluation scripts use (docs/evaluation.md)."""
    return {"max_new_tokens": 1024, "do_sample": False, "temperature": 0.0, "top_p": 1.0, "num_beams": 1}


@dataclass(frozen=True)
class RunSettings:
    """Everything that changes the answers, recorded in settings.json next to the predictions.

    `max_tiles`: dynamic-tiling limit per image (1 = a single 448x448 tile); `template` and
    `system_prompt`: None means the model's own; `chain_of_thought`: prompts are wrapped by
    `prompts.build_cot_prompt` (the harness does it, so the answerer need not); `generation`: the
    generation config the answerer must use; `extra`: anything else the answerer wants recorded.
    """

    model: str | None = None
    max_tiles: int = 6
    template: str | None = None
    system_prompt: str | None = None
    chain_of_thought: bool = False
    generation: Mapping[str, Any] = field(default_factory=default_generation)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists), as written to and compared with settings.json."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSettings:
        return cls(**data)


def data_fingerprint(items: Sequence[EvalItem]) -> str:
    """A hash of what the model is shown (ids, prompts, image counts); answers may be corrected freely."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.id, item.prompt, len(item.images)], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()[:16]


def _check_unique(items: Sequence[EvalItem]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise RunError(f"two items have the id {item.id!r}; ids must be unique")
        seen.add(item.id)


def _write_json(path: Path, data: Any) -> None:
    """Write via a temporary file, so an interrupt never leaves half a JSON file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def prepare_run_dir(out_dir: Path, settings: RunSettings, items: Sequence[EvalItem], data_path: str | None) -> None:
    """Create the folder and settings.json, or check that an existing run used the same settings and data."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "settings": settings.to_json(),
        "data": {"path": data_path, "items": len(items), "fingerprint": data_fingerprint(items)},
    }
    settings_path = out_dir / SETTINGS_FILE
    if settings_path.exists():
        try:
            old = json.loads(settings_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise RunError(f"{settings_path}: not valid JSON ({error}); fix or delete the run folder") from error
        changes = _differences(old.get("settings"), record["settings"])
        if old.get("data", {}).get("fingerprint") != record["data"]["fingerprint"]:
            changes.append(f"data: {old.get('data', {}).get('path')!r} -> {data_path!r} (other items or prompts)")
        if changes:
            raise RunError(
                f"{out_dir} holds a run with other settings; use a new output folder or delete this one. "
                f"Differences: {'; '.join(changes)}"
            )
        return
    if (out_dir / PREDICTIONS_FILE).exists():
        raise RunError(f"{out_dir} has {PREDICTIONS_FILE} but no {SETTINGS_FILE}; cannot tell how it was made")
    _write_json(settings_path, record)


def prediction_record(item: EvalItem, prediction: str) -> dict[str, Any]:
    """One line of predictions.jsonl: the answer and all an item needs to be re-scored without the data."""
    return {
        "id": item.id,
        "prediction": prediction,
        "category": item.category,
        "metric": item.metric,
        "question": item.question,
        "prompt": item.prompt,
        "answers": list(item.answers),
        "options": dict(item.options),
        "tolerance": item.tolerance,
    }


def item_from_record(record: Mapping[str, Any]) -> EvalItem:
    """The (image-less) item a predictions.jsonl line was made from."""
    return EvalItem(
        id=str(record["id"]),
        question=record.get("question", ""),
        answers=tuple(record.get("answers", ())),
        category=record.get("category", "other"),
        metric=record.get("metric", "exact"),
        options=record.get("options") or {},
        prompt=record.get("prompt", ""),
        tolerance=record.get("tolerance"),
    )


def read_predictions(path: str | Path, repair: bool = False) -> dict[str, dict[str, Any]]:
    """id -> predictions.jsonl record (a later line for the same id wins)."""
    out: dict[str, dict[str, Any]] = {}
    for number, record in enumerate(read_records(path, repair=repair), start=1):
        if not isinstance(record.get("id"), str) or not isinstance(record.get("prediction"), str):
            raise RunError(f"{path}: record {number}: needs string 'id' and 'prediction'")
        out[record["id"]] = record
    return out


def answer_pending(
    items: Sequence[EvalItem],
    answerer: Answerer,
    predictions_path: Path,
    batch_size: int = 1,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Answer the items not yet in predictions.jsonl, appending each batch as it comes; return all records."""
    if batch_size < 1:
        raise RunError(f"batch size must be >= 1, got {batch_size}")
    done = read_predictions(predictions_path, repair=True)
    todo = [item for item in items if item.id not in done]
    bar = tqdm(
        total=len(items),
        initial=len(items) - len(todo),
        unit="item",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        with open(predictions_path, "a", encoding="utf-8") as file:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                answers = answer_batch(answerer, batch)
                if len(answers) != len(batch) or not all(_is_answer(a) for a in answers):
                    raise RunError(
                        f"the answerer returned {len(answers)} answers for a batch of {len(batch)} items; it must return one string per item"
                    )
                records = [
                    prediction_record(item, answer)
                    if isinstance(answer, str)
                    else {**answer, **prediction_record(item, answer["prediction"])}
                    for item, answer in zip(batch, answers)
                ]
                append_records(file, records)
                done.update((r["id"], r) for r in records)
                bar.update(len(batch))
    except BaseException as error:  # KeyboardInterrupt included: say what was kept, then re-raise
        bar.close()
        what = "interrupted" if isinstance(error, KeyboardInterrupt) else f"stopped by {type(error).__name__}"
        print(
            f"\n{what}: {len(done)} of {len(items)} answers saved in {predictions_path}; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        raise
    bar.close()
    return done


def answer_batch(answerer: Answerer, batch: Sequence[EvalItem]) -> list[Any]:
    """The answerer's answers to `batch`. An item the model cannot take (an `InputError`: a prompt longer
    than its context, an unreadable image) does not stop the run: the batch is answered item by item, and
    such an item gets an empty answer (it scores 0) with its `error` recorded and printed."""

    def failed(item: EvalItem, exc: InputError) -> dict[str, str]:
        print(f"item {item.id}: {exc} (scored as no answer)", file=sys.stderr)
        return {"prediction": "", "error": str(exc)}

    try:
        return list(answerer(batch))
    except InputError as exc:
        if len(batch) == 1:
            return [failed(batch[0], exc)]
    answers: list[Any] = []
    for item in batch:
        try:
            answers += list(answerer([item]))
        except InputError as exc:
            answers.append(failed(item, exc))
    return answers


def _is_answer(answer: Any) -> bool:
    return isinstance(answer, str) or (isinstance(answer, Mapping) and isinstance(answer.get("prediction"), str))


def score_items(
    items: Sequence[EvalItem],
    predictions: Mapping[str, Mapping[str, Any]],
    config: ScoringSettings = ScoringSettings(),
    judge: Judge | None = None,
    judge_cache: JudgeCache | None = None,
) -> list[ScoredItem]:
    """Score every item that has a prediction; "judge" items without a judge stay unscored."""
    scored: list[ScoredItem] = []
    for item in items:
        record = predictions.get(item.id)
        if record is None:
            continue
        prediction = record["prediction"]
        if item.metric == "judge":
            score = _judge_score(item, prediction, judge, judge_cache)
        else:
            score = score_answer(item.metric, prediction, item.answers, item.options, config, item.tolerance)
        scored.append(ScoredItem(item.id, item.category, item.metric, score.value, score.extracted, prediction))
    return scored


def _judge_score(item: EvalItem, prediction: str, judge: Judge | None, cache: JudgeCache | None) -> Score:
    if judge is None or not item.answers:
        return Score(None, None)
    key = JudgeCache.key(item.id, judge.config.model, item.answers, prediction)
    judgement = cache.get(key) if cache is not None else None
    if judgement is None:
        judgement = judge.grade(item.question, item.answers, prediction)
        if cache is not None:
            cache.put(key, judgement)
    shown = judgement.reply if judgement.parsed else f"unparseable judge reply: {judgement.reply!r}"
    return Score(judgement.score, shown)


def write_report(
    out_dir: Path,
    scored: Sequence[ScoredItem],
    config: ScoringSettings,
    judge: Judge | None,
    extra: Mapping[str, Any] | None = None,
    print_table: bool = True,
) -> dict[str, Any]:
    """scores.jsonl, summary.json and chart.png in out_dir; print the table; return the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / SCORES_FILE, "w", encoding="utf-8") as file:
        append_records(file, (asdict(s) for s in scored))
    summary = summarize(scored)
    summary["scoring"] = {**asdict(config), "judge_model": judge.config.model if judge else None}
    summary.update(extra or {})
    _write_json(out_dir / SUMMARY_FILE, summary)
    title = out_dir.resolve().name
    try_write_chart(summary, out_dir / CHART_FILE, title)
    if print_table:
        print(format_table(summary, title=title))
    return summary


def run_eval(
    items: Sequence[EvalItem],
    answerer: Answerer,
    out_dir: str | Path,
    settings: RunSettings | None = None,
    batch_size: int = 1,
    limit: int | None = None,
    scoring: ScoringSettings = ScoringSettings(),
    judge: Judge | None = None,
    data_path: str | None = None,
    progress: bool = True,
    print_table: bool = True,
) -> dict[str, Any]:
    """Answer (resuming if out_dir holds part of this run), score and report; returns the summary.

    `settings` None: `RunSettings()` (greedy, 6 tiles, the model's template and system prompt).

    The data fingerprint covers all `items`; `limit` then keeps the first `limit` of them, so a
    quick `limit=20` run can later be extended to the whole set in the same folder.
    """
    out_dir = Path(out_dir)
    settings = settings if settings is not None else RunSettings()
    _check_unique(items)
    prepare_run_dir(out_dir, settings, items, data_path)
    selected = list(items[:limit] if limit is not None else items)
    if settings.chain_of_thought:
        selected = [replace(item, prompt=build_cot_prompt(item.prompt)) for item in selected]
    predictions = answer_pending(selected, answerer, out_dir / PREDICTIONS_FILE, batch_size, progress)
    cache = JudgeCache(out_dir / JUDGE_FILE) if judge is not None else None
    scored = score_items(selected, predictions, scoring, judge, cache)
    extra = {"settings": settings.to_json(), "data": data_path}
    return write_report(out_dir, scored, scoring, judge, extra, print_table)


def rescore(
    predictions_path: str | Path,
    out_dir: str | Path | None = None,
    items: Sequence[EvalItem] | None = None,
    scoring: ScoringSettings = ScoringSettings(),
    judge: Judge | None = None,
    print_table: bool = True,
) -> dict[str, Any]:
    """Score an existing predictions.jsonl again (other tolerance, a judge, corrected answers).

    Without `items` the answers stored in the predictions are used; with `items` (a data file)
    the answers, metrics and categories come from them, joined by id.
    """
    predictions_path = Path(predictions_path)
    if not predictions_path.is_file():
        raise RunError(f"{predictions_path}: no such predictions file")
    out = Path(out_dir) if out_dir is not None else predictions_path.parent
    predictions = read_predictions(predictions_path)
    if items is None:
        items = [item_from_record(record) for record in predictions.values()]
        missing = 0
    else:
        known = {item.id for item in items}
        unknown = [i for i in predictions if i not in known]
        if unknown:
            raise RunError(
                f"{predictions_path}: {len(unknown)} predictions have ids not in the data, e.g. {unknown[0]!r}"
            )
        missing = sum(1 for item in items if item.id not in predictions)
        if missing:
            print(f"note: {missing} items of the data have no prediction and are left out", file=sys.stderr)
    cache = JudgeCache(out / JUDGE_FILE) if judge is not None else None
    scored = score_items(items, predictions, scoring, judge, cache)
    extra: dict[str, Any] = {"predictions": str(predictions_path), "n_missing": missing}
    settings_path = predictions_path.parent / SETTINGS_FILE
    if settings_path.is_file():
        extra["settings"] = json.loads(settings_path.read_text(encoding="utf-8")).get("settings")
    return write_report(out, scored, scoring, judge, extra, print_table)
