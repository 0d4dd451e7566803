"""`internvl data prm`: process-supervision data by Monte-Carlo expected accuracy (docs/prm.md#data),
as InternVL's VisualPRM pipeline builds it (`internvl_chat/tools/reasoning_data_pipeline/
visualprm_data_pieline.py` and its postprocess).

1. For each question, the model samples N solutions in the `en` chain-of-thought instruction.
2. Each solution is split into steps at blank lines, merged down to at most `max_steps`.
3. For step i, the prefix (steps 1..i joined by blank lines) is written into the assistant's turn and the
   model continues it M times, as one batch; the step's score is the share of continuations whose final
   answer is right. With early stop (the official default), once a step scores 0 the later steps get 0
   without sampling.
4. Step labels: "+" when the score is above `mc_threshold` (0: at least one continuation right), else "-".
   `prm.jsonl` holds the PRM conversations (official format), `orm.jsonl` the outcome variant (the whole
   solution as one step, labelled by its last step); `meta_prm.json` / `meta_orm.json` name them for
   `internvl train sft`, which trains a PRM as it trains anything else (the labels are "+"/"-" and the
   end token).

`OUT/samples.jsonl` gets one line per question as soon as it is scored, so an interrupted run continues
where it stopped (a torn last line is dropped).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from internvl.data.mmpr import (
    Question,
    answer_checker,
    cot_question,
    done_keys,
    parse_answer,
    read_questions,
    write_jsonl,
)
from internvl.errors import InputError
from internvl.reward import STEP_SEPARATOR, prm_record, split_steps


@dataclass
class PRMDataSettings:
    solutions_per_question: int = 4  # N (official: 4)
    continuations_per_step: int = 16  # M (official: 16)
    max_steps: int = 12
    early_stop: bool = True
    mc_threshold: float = 0.0
    temperature: float = 1.0  # official: 1.0, top-k 50
    top_k: int = 50
    max_new_tokens: int = 512
    max_tiles: int | None = None
    seed: int = 0

    def check(self) -> None:
        if self.solutions_per_question < 1 or self.continuations_per_step < 1 or self.max_steps < 1:
            raise InputError("--solutions, --continuations and --max-steps must be at least 1")
        if self.temperature <= 0:
            raise InputError("--temperature must be above 0 (sampling)")


def score_question(chat: Any, question: Question, media_root: Path, settings: PRMDataSettings, seed: int) -> list[dict]:
    """The N solutions of one question, each with its steps and their Monte-Carlo scores."""
    prompt = cot_question(question.question, len(question.images))
    conversation = [{"role": "user", "content": prompt}]
    images = [str(media_root / p) for p in question.images]
    sampling = dict(
        max_tiles=settings.max_tiles,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_k=settings.top_k,
    )
    n, m = settings.solutions_per_question, settings.continuations_per_step
    solutions = chat.ask_batch_messages([conversation] * n, [images] * n, seed=seed, **sampling)
    steps = [split_steps(s, settings.max_steps) for s in solutions]
    is_right = answer_checker(question)

    def right(response: str) -> bool:
        answer = parse_answer(response)
        return answer is not None and is_right(answer)

    scored: list[list[dict[str, Any]]] = [[] for _ in solutions]
    stopped = [False] * n
    for t in range(max(len(s) for s in steps)):
        active = [k for k in range(n) if t < len(steps[k]) and not stopped[k]]
        for k in range(n):
            if t < len(steps[k]) and stopped[k]:
                scored[k].append({"step": steps[k][t], "score": 0.0, "num_mc_correct": 0, "num_mc_total": 0})
        if not active:
            continue
        prefixes = [STEP_SEPARATOR.join(steps[k][: t + 1]) for k in active for _ in range(m)]
        continued = chat.continue_batch(
            [conversation] * len(prefixes), [images] * len(prefixes), prefixes, seed=seed + 1 + t, **sampling
        )
        for j, k in enumerate(active):
            correct = sum(right(c) for c in continued[j * m : (j + 1) * m])
            scored[k].append({"step": steps[k][t], "score": correct / m, "num_mc_correct": correct, "num_mc_total": m})
            if correct == 0 and settings.early_stop:
                stopped[k] = True
    return [{"response": s, "steps_with_score": steps_k} for s, steps_k in zip(solutions, scored)]


def sample_and_score(
    chat: Any, questions: list[Question], media_root: Path, out: Path, settings: PRMDataSettings, progress: bool = True
) -> Path:
    """Steps 1-3 for every question not yet in OUT/samples.jsonl, appended question by question."""
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    path = out / "samples.jsonl"
    done = done_keys(path)
    todo = [(number, q) for number, q in enumerate(questions) if q.key not in done]
    bar = tqdm(
        total=len(questions), initial=len(questions) - len(todo), desc="PRM data", unit="question", disable=not progress
    )
    with path.open("a", encoding="utf-8") as f:
        for number, q in todo:
            seed = settings.seed + 1000 * (number + 1)  # a question's draws do not depend on what ran before
            line = {"key": q.key, "solutions": score_question(chat, q, media_root, settings, seed)}
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(1)
    bar.close()
    return path


def build_records(
    questions: list[Question], samples_path: Path, out: Path, media_root: Path, settings: PRMDataSettings
) -> dict[str, Any]:
    """Step 4 from OUT/samples.jsonl: prm.jsonl, orm.jsonl, their meta files and summary.json."""
    by_key = {q.key: q for q in questions}
    prm, orm = [], []
    steps_total = steps_plus = solutions_right = 0
    with samples_path.open(encoding="utf-8") as f:
        for text in f:
            line = json.loads(text)
            q = by_key.get(line["key"])
            if q is None:
                continue
            media: dict[str, Any] = {"image": q.images[0] if len(q.images) == 1 else q.images} if q.images else {}
            prompt = cot_question(q.question, len(q.images))
            for solution in line["solutions"]:
                scored = solution["steps_with_score"]
                labels = [s["score"] > settings.mc_threshold for s in scored]
                if settings.early_stop and False in labels:  # the official --early-stop: nothing after the first "-"
                    labels = labels[: labels.index(False) + 1]
                prm.append(
                    {**prm_record(prompt, [s["step"] for s in scored][: len(labels)], labels, media), "source": q.key}
                )
                last_right = scored[-1]["score"] > settings.mc_threshold
                orm.append({**prm_record(prompt, [solution["response"]], [last_right], media), "source": q.key})
                steps_total += len(labels)
                steps_plus += sum(labels)
                solutions_right += last_right
    write_jsonl(out / "prm.jsonl", prm)
    write_jsonl(out / "orm.jsonl", orm)
    for name, lines in (("prm", prm), ("orm", orm)):
        meta = {
            name: {
                "root": str(media_root.resolve()) + "/",
                "annotation": str((out / f"{name}.jsonl").resolve()),
                "repeat_time": 1,
                "length": len(lines),
            }
        }
        (out / f"meta_{name}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    summary = {
        "questions": len({line["source"] for line in prm}),
        "solutions": len(prm),
        "steps": steps_total,
        "steps_plus": steps_plus,
        "solutions_last_step_plus": solutions_right,
        "solutions_per_question": settings.solutions_per_question,
        "continuations_per_step": settings.continuations_per_step,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def add_prm_command(commands: Any) -> None:
    """`internvl data prm`, registered next to `internvl data mmpr`."""
    from internvl.data.mmpr import add_sampling_arguments

    p = commands.add_parser(
        "prm",
        help="process-reward (VisualPRM) training data by Monte-Carlo expected accuracy",
        description="Sample N chain-of-thought solutions per question, split them into steps, score each step "
        "by the share of M continuations from it that reach the right answer, and write PRM (per step) and ORM "
        "(outcome) conversations with meta JSONs for `internvl train sft` (docs/prm.md#data). Resumable.",
    )
    defaults = PRMDataSettings()
    add_sampling_arguments(p, "samples.jsonl, prm.jsonl, orm.jsonl, meta_*.json", defaults.temperature)
    p.add_argument("--solutions", type=int, default=defaults.solutions_per_question, help="solutions per question")
    p.add_argument("--continuations", type=int, default=defaults.continuations_per_step, help="rollouts per step")
    p.add_argument("--max-steps", type=int, default=defaults.max_steps)
    p.add_argument("--no-early-stop", action="store_true", help="score every step, even after one scored 0")
    p.add_argument("--mc-threshold", type=float, default=defaults.mc_threshold, help="'+' when the score is above")
    p.set_defaults(func=run_prm)


def run_prm(args: Any) -> int:
    import internvl

    settings = PRMDataSettings(
        solutions_per_question=args.solutions,
        continuations_per_step=args.continuations,
        max_steps=args.max_steps,
        early_stop=not args.no_early_stop,
        mc_threshold=args.mc_threshold,
        temperature=args.temperature,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        max_tiles=args.max_tiles,
        seed=args.seed,
    )
    settings.check()
    questions = read_questions(args.data)[: args.limit]
    media_root = Path(args.media_root) if args.media_root else Path(args.data).parent
    out = Path(args.out)
    chat = internvl.load(args.model, device=args.device)
    samples = sample_and_score(chat, questions, media_root, out, settings, progress=not args.no_progress)
    summary = build_records(questions, samples, out, media_root, settings)
    print(
        f"{summary['questions']} questions, {summary['solutions']} solutions, {summary['steps']} steps "
        f"({summary['steps_plus']} '+') -> {out / 'meta_prm.json'}, {out / 'meta_orm.json'}"
    )
    return 0
