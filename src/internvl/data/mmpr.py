"""MMPR-style preference pairs from a model's own answers (docs/mpo.md#building-pairs-mmpr).

The correctness-based pipeline of InternVL's MMPR (`internvl_chat/tools/reasoning_data_pipeline/
mmpr_data_pipeline_correctness.py` and its `_postprocess.py`), on our batched generation:

1. **Sample.** Each question (a trailing short-answer instruction removed) is wrapped in the `en`
   chain-of-thought instruction ("... please use the format "Final answer: .."") and answered N times
   with sampling (temperature 0.7, top-k 50). The responses go to OUT/samples.jsonl, one line per
   question, as they are made: an interrupted run continues where it stopped.
2. **Extract and check.** `parse_answer` applies the `en` rules (a "Final answer:" trigger at most
   twice, at least two line breaks, a rationale before it, a one-line answer after it); a response that
   breaks them is a format negative. A parsed answer is right when it equals the ground truth ignoring
   case, or scores above 0.9 by option letter, number (relative tolerance 1e-3) or normalised text; for
   world questions the world's own scorer decides.
3. **Pair.** Every right response with every wrong one, unless the right answer appears inside the wrong
   one (the official entailment filter), at most K pairs per question (a seeded random subset), without
   duplicates: OUT/pairs_correctness.jsonl. Right responses against format negatives:
   OUT/pairs_format.jsonl. Questions no sample got right: OUT/all_wrong.jsonl. OUT/meta.json names the
   two pair files for `internvl train mpo`, OUT/summary.json counts all-right, all-wrong and mixed
   questions.

Input lines: `{"image": path | [paths], "question": ..., "answer": ...}` (MMPR's input), or SFT lines
(`conversations`: the first human turn is the question, the first gpt turn the answer); a `world`
record (as `internvl world generate` writes) switches on the world's scorer and its ground truth.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from internvl.errors import InputError
from internvl.eval.prompts import COT_TEMPLATE, build_cot_prompt
from internvl.inputs.prompt import media_lines
from internvl.inputs.tokens import IMAGE_PLACEHOLDER

TRIGGERS = ("Final answer:", "Final Answer:")  # the `en` prompt's trigger, then its capitalised fallback


@dataclass
class Question:
    key: str  # "file:line": names the question in samples.jsonl (resume) and in the pairs
    images: list[str]  # paths as written in the line (relative to the media root)
    question: str  # as written, placeholders included
    answer: str  # the ground truth
    world: dict[str, Any] | None = None  # the world's record, when the line has one


@dataclass
class MMPRSettings:
    samples_per_question: int = 8  # N (the official pipeline draws 32)
    temperature: float = 0.7
    top_k: int = 50
    max_new_tokens: int = 512  # the official 4096 is for large models
    max_pairs_per_question: int = 15  # K (3 for files of more than 500k lines, officially)
    max_tiles: int | None = None  # tiles per image; None = the model's default
    questions_per_batch: int = 4  # questions generated together (each N times)
    seed: int = 0


# ---------------------------------------------------------------------------------------- reading


def read_questions(path: str | os.PathLike[str], parse: Callable[[Any, str], Question] | None = None) -> list[Question]:
    """Every question of a JSONL file (`parse(record, "file:line")`, by default `question_from_record`); a
    malformed line is an `InputError` naming file:line."""
    parse = parse or question_from_record
    questions = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            where = f"{path}:{number}"
            try:
                questions.append(parse(json.loads(text), where))
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
            except InputError as e:
                raise InputError(f"{where}: {e}") from e
    if not questions:
        raise InputError(f"{path}: no questions")
    return questions


def question_from_record(record: Any, key: str) -> Question:
    if not isinstance(record, dict):
        raise InputError("a line must be a JSON object")
    if "conversations" in record:
        turns = record["conversations"]
        if not isinstance(turns, list):
            raise InputError("'conversations' must be a list")
        human = [t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "human"]
        gpt = [t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "gpt"]
        if not human or not gpt:
            raise InputError("an SFT line needs a human and a gpt turn")
        question, answer = human[0], gpt[0]
    else:
        question, answer = record.get("question"), record.get("answer")
    world = record.get("world") if isinstance(record.get("world"), dict) else None
    if world is not None:
        answer = world.get("answer", answer)
    if not isinstance(question, str) or not isinstance(answer, str):
        raise InputError("a line needs a string 'question' and 'answer' (or 'conversations')")
    if record.get("video") is not None:
        raise InputError("video questions are not sampled by this pipeline yet; give image or text questions")
    image = record.get("image")
    images = [image] if isinstance(image, str) else list(image or [])
    if not all(isinstance(p, str) for p in images):
        raise InputError("'image' must be a path or a list of paths")
    return Question(key, images, question, answer, world)


MEDIA_LINE = re.compile(r"^(?:Image-\d+: )?<image>\n?", re.MULTILINE)


def cot_question(question: str, num_images: int) -> str:
    """The question in the `en` chain-of-thought instruction (unless it already is), with the lines that
    announce its images in front (the official pipeline moves a single `<image>` to the front)."""
    text = MEDIA_LINE.sub("", question).replace(IMAGE_PLACEHOLDER, "").strip()
    if not text.startswith(COT_TEMPLATE.split("{question}")[0]):
        text = build_cot_prompt(text)
    return media_lines(num_images) + text


# ------------------------------------------------------------------------------ extract and check


def parse_answer(response: str) -> str | None:
    """The final answer of an `en` response, or None when the response breaks the format rules."""
    for trigger in TRIGGERS:
        if trigger in response:
            break
    else:
        return None
    if response.count(trigger) > 2 or response.count("\n") < 2:
        return None
    rationale, _, answer = response.rpartition(trigger)
    answer = answer.strip()
    if not rationale.strip() or not answer or "\n" in answer:
        return None
    return answer


def _normalise(text: str) -> str:
    text = text.lower().strip().rstrip(".").strip()
    text = re.sub(r"\s+", " ", text)
    return text.strip("\"'` *")


def _letter(text: str) -> str | None:
    match = re.fullmatch(r"\(?([a-z])[\).:]?(?:\s.*)?", _normalise(text))
    return match.group(1) if match else None


def _number(text: str) -> float | None:
    cleaned = _normalise(text).replace(",", "")
    for symbol in ("°", "%", "cm", "degrees"):
        cleaned = cleaned.replace(symbol, "")
    try:
        return float(cleaned.strip())
    except ValueError:
        return None


def check_answer(prediction: str, truth: str) -> bool:
    """Right when equal ignoring case, or when text, option letter or number agree (default mode of
    the official `check_answer`, without its math-verify scorer)."""
    if prediction.strip().lower() == truth.strip().lower() or _normalise(prediction) == _normalise(truth):
        return True
    letter, wanted = _letter(prediction), _letter(truth)
    if wanted is not None and len(_normalise(truth)) <= 3 and letter == wanted:
        return True
    a, b = _number(prediction), _number(truth)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-3 * max(abs(b), 1e-9)
    return False


def world_checker(record: dict[str, Any]) -> Callable[[str], bool]:
    from internvl.data.world.sample import Sample
    from internvl.data.world.score import score

    sample = Sample.from_record(record)
    return lambda answer: score(f"Final answer: {answer}", sample) > 0.9


def answer_checker(question: Question) -> Callable[[str], bool]:
    """Whether a final answer to `question` is right: the world's scorer for world questions, else
    `check_answer` against the ground truth."""
    if question.world is not None:
        return world_checker(question.world)
    return lambda answer: check_answer(answer, question.answer)


# ------------------------------------------------------------------------------------------ pairing


@dataclass
class QuestionPairs:
    correctness: list[dict[str, Any]]
    format: list[dict[str, Any]]
    status: str  # all-right | all-wrong | mixed


def pair_question(
    question: Question, responses: Sequence[str], max_pairs: int, rng: np.random.Generator
) -> QuestionPairs:
    """The pairs of one question from its N responses (module docstring, step 3)."""
    is_right = answer_checker(question)
    right, wrong, unparsed = [], [], []
    for response in responses:
        answer = parse_answer(response)
        if answer is None:
            unparsed.append(response)
        elif is_right(answer):
            right.append((response, answer))
        else:
            wrong.append((response, answer))
    correct_pairs = [
        (pos, neg)
        for pos, pos_answer in right
        for neg, neg_answer in wrong
        if pos_answer.lower() not in neg_answer.lower()
    ]
    format_pairs = [(pos, neg) for pos, _ in right for neg in unparsed]

    def lines(pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        unique = list(dict.fromkeys(pairs))  # dedupe, keep order
        if len(unique) > max_pairs:
            keep = sorted(rng.choice(len(unique), size=max_pairs, replace=False).tolist())
            unique = [unique[k] for k in keep]
        images = question.images
        base: dict[str, Any] = {"image": images[0] if len(images) == 1 else images} if images else {}
        prompt = cot_question(question.question, len(question.images))
        return [
            {
                **base,
                "question": prompt,
                "chosen": c,
                "rejected": r,
                "answer_gt": question.answer,
                "source": question.key,
            }
            for c, r in unique
        ]

    status = "all-right" if right and not (wrong or unparsed) else "all-wrong" if not right else "mixed"
    return QuestionPairs(lines(correct_pairs), lines(format_pairs), status)


# ------------------------------------------------------------------------------------------- running


def done_keys(samples_path: Path, key: str = "key") -> set[str]:
    """Questions already done by an earlier (interrupted) run, read from each line's `key` field; a torn
    last line is dropped."""
    keys: set[str] = set()
    if not samples_path.is_file():
        return keys
    good = []
    with samples_path.open(encoding="utf-8") as f:
        for text in f:
            try:
                keys.add(json.loads(text)[key])
                good.append(text)
            except (json.JSONDecodeError, KeyError):
                break
    if sum(len(t) for t in good) != samples_path.stat().st_size:  # rewrite without the torn tail
        samples_path.write_text("".join(good), encoding="utf-8")
    return keys


def batched(items: list[Question], size: int) -> Iterator[list[Question]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sample_responses(
    chat: Any,
    questions: list[Question],
    media_root: Path,
    out: Path,
    settings: MMPRSettings,
    progress: bool = True,
) -> Path:
    """Step 1: N sampled chain-of-thought responses per question, appended to OUT/samples.jsonl."""
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    path = out / "samples.jsonl"
    done = done_keys(path)
    todo = [q for q in questions if q.key not in done]
    bar = tqdm(
        total=len(questions), initial=len(questions) - len(todo), desc="sampling", unit="question", disable=not progress
    )
    n = settings.samples_per_question
    with path.open("a", encoding="utf-8") as f:
        for number, group in enumerate(batched(todo, settings.questions_per_batch)):
            prompts, images = [], []
            for q in group:
                paths = [str(media_root / p) for p in q.images]
                prompts += [cot_question(q.question, len(q.images))] * n
                images += [paths] * n
            answers = chat.ask_batch(
                prompts,
                images,
                max_tiles=settings.max_tiles,
                max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                top_k=settings.top_k,
                seed=settings.seed + len(done) + number,
            )
            for k, q in enumerate(group):
                f.write(json.dumps({"key": q.key, "responses": answers[k * n : (k + 1) * n]}) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(group))
    bar.close()
    return path


def build_pairs(
    questions: list[Question], samples_path: Path, out: Path, media_root: Path, settings: MMPRSettings
) -> dict[str, Any]:
    """Steps 2 and 3 from OUT/samples.jsonl: the pair files, meta.json and summary.json."""
    by_key = {q.key: q for q in questions}
    rng = np.random.default_rng(settings.seed)
    correctness, formats, all_wrong = [], [], []
    counts = {"all-right": 0, "all-wrong": 0, "mixed": 0}
    with samples_path.open(encoding="utf-8") as f:
        for text in f:
            line = json.loads(text)
            question = by_key.get(line["key"])
            if question is None:
                continue
            result = pair_question(question, line["responses"], settings.max_pairs_per_question, rng)
            counts[result.status] += 1
            correctness += result.correctness
            formats += result.format
            if result.status == "all-wrong":
                all_wrong.append({"source": question.key, "question": question.question, "answer_gt": question.answer})
    files = {"pairs_correctness": correctness, "pairs_format": formats, "all_wrong": all_wrong}
    for name, lines in files.items():
        write_jsonl(out / f"{name}.jsonl", lines)
    meta = {
        name: {
            "root": str(media_root.resolve()) + "/",
            "annotation": str((out / f"{name}.jsonl").resolve()),
            "repeat_time": 1,
            "length": len(files[name]),
        }
        for name in ("pairs_correctness", "pairs_format")
        if files[name]
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    summary = {
        "questions": sum(counts.values()),
        **counts,
        "correctness_pairs": len(correctness),
        "format_pairs": len(formats),
        "samples_per_question": settings.samples_per_question,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    os.replace(partial, path)


# ---------------------------------------------------------------------------------------------- CLI


def add_data_command(subparsers: Any) -> None:
    """`internvl data mmpr` and `internvl data prm`: the hook for the top-level parser."""
    from internvl.data.dropout_ntp import add_dropout_ntp_command
    from internvl.data.prm import add_prm_command

    data = subparsers.add_parser(
        "data", help="build training data with a model (MMPR preference pairs, VisualPRM process labels)"
    )
    commands = data.add_subparsers(dest="data_command", required=True)
    add_prm_command(commands)
    add_dropout_ntp_command(commands)
    p = commands.add_parser(
        "mmpr",
        help="preference pairs from a model's own chain-of-thought answers (MMPR correctness pipeline)",
        description="Sample N chain-of-thought answers per question, check each final answer against the "
        "ground truth, and pair right answers with wrong (and with badly formatted) ones, in the MPO JSONL "
        "format with a meta JSON for `internvl train mpo` (docs/mpo.md#building-pairs-mmpr). Resumable: "
        "run it again to continue an interrupted sampling.",
    )
    add_sampling_arguments(p, "samples.jsonl, pair files, meta.json, summary.json", MMPRSettings.temperature)
    p.add_argument("--samples", type=int, default=MMPRSettings.samples_per_question, help="answers per question")
    p.add_argument("--max-pairs", type=int, default=MMPRSettings.max_pairs_per_question, help="pairs per question")
    p.add_argument("--batch", type=int, default=MMPRSettings.questions_per_batch, help="questions generated together")
    p.set_defaults(func=run_mmpr)


def add_sampling_arguments(p: Any, outputs: str, temperature: float) -> None:
    """The arguments `data mmpr` and `data prm` share: model, questions, output folder, sampling, limits."""
    from internvl import threads

    p.add_argument("--model", default=None, help="checkpoint folder (either layout); default: the nano model")
    p.add_argument("--data", required=True, help="JSONL of questions (see above) or SFT lines")
    p.add_argument("--media-root", default=None, help="folder of the relative image paths (default: the JSONL's)")
    p.add_argument("--out", required=True, help=f"output folder: {outputs}")
    p.add_argument("--temperature", type=float, default=temperature)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--max-tiles", type=int, default=None, help="tiles per image (default: the model's)")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true")
    threads.add_option(p)


def run_mmpr(args: Any) -> int:
    import internvl

    settings = MMPRSettings(
        samples_per_question=args.samples,
        temperature=args.temperature,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        max_pairs_per_question=args.max_pairs,
        max_tiles=args.max_tiles,
        questions_per_batch=args.batch,
        seed=args.seed,
    )
    if settings.samples_per_question < 2 or settings.questions_per_batch < 1 or settings.max_pairs_per_question < 1:
        raise InputError("--samples must be at least 2, --batch and --max-pairs at least 1")
    questions = read_questions(args.data)[: args.limit]
    media_root = Path(args.media_root) if args.media_root else Path(args.data).parent
    out = Path(args.out)
    chat = internvl.load(args.model, device=args.device)
    samples = sample_responses(chat, questions, media_root, out, settings, progress=not args.no_progress)
    summary = build_pairs(questions, samples, out, media_root, settings)
    print(
        f"{summary['questions']} questions: {summary['all-right']} all right, {summary['all-wrong']} all wrong, "
        f"{summary['mixed']} mixed; {summary['correctness_pairs']} correctness pairs, {summary['format_pairs']} "
        f"format pairs -> {out / 'meta.json'}"
    )
    return 0
