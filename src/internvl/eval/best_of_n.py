"""Best-of-N evaluation (docs/prm.md#best-of-n): sample N candidate answers per item, score them with a
critic, keep the best one. The run records every candidate and its score next to the kept answer.

    internvl eval run --model M --data test.tsv --out runs/bon8 --cot --best-of-n 8 --critic prm:runs/prm-model

Critics:
- `prm:DIR`: a process reward model (`internvl.reward.ProcessRewardModel`), step scores averaged;
- `orm:DIR`: the same model class judging each whole answer as one step (an outcome reward model);
- `self-consistency`: majority vote over the candidates' final answers (the first of the largest group).

Candidates are sampled with the run's temperature and top-p, or temperature 0.7 when the run is greedy,
seeded per item, so a resumed run draws the same candidates.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from internvl.errors import InputError
from internvl.eval.answerer import generation_overrides, item_conversation
from internvl.eval.formats import EvalItem
from internvl.eval.runner import Answerer, RunSettings
from internvl.inputs.prompt import media_lines

Critic = Callable[[EvalItem, list[Any], int, list[str]], list[float]]
"""(item, its pictures, tile budget, candidates) -> one score per candidate (higher is better)."""

DEFAULT_TEMPERATURE = 0.7


def answer_key(item: EvalItem, candidate: str) -> str | None:
    """What two candidates must share to count as the same answer: the option letter for multiple choice,
    else the normalised final answer."""
    from internvl.eval.scoring import extract_choice, extract_final_answer, normalize_text

    if item.options:
        return extract_choice(candidate, item.options)
    text = normalize_text(extract_final_answer(candidate))
    return text or None


def self_consistency(item: EvalItem, pictures: list[Any], budget: int, candidates: list[str]) -> list[float]:
    """Each candidate's share of candidates with the same answer (0 for a candidate with none)."""
    keys = [answer_key(item, c) for c in candidates]
    counts = Counter(k for k in keys if k is not None)
    return [counts[k] / len(candidates) if k is not None else 0.0 for k in keys]


def reward_model_critic(folder: str, outcome: bool) -> Critic:
    from internvl.reward import ProcessRewardModel

    prm = ProcessRewardModel.load(folder)

    def critic(item: EvalItem, pictures: list[Any], budget: int, candidates: list[str]) -> list[float]:
        if item.meta.get("media") == "video":
            from internvl.inputs.prompt import frame_lines

            question = frame_lines(len(pictures)) + item.prompt
        else:
            question = media_lines(len(pictures)) + item.prompt
        solutions: list[Any] = [[c] for c in candidates] if outcome else list(candidates)
        return prm.rank_scores(question, pictures, solutions, max_tiles=budget)

    return critic


def parse_critic(spec: str) -> tuple[str, str]:
    """("self-consistency", "") or ("prm" | "orm", DIR); anything else is refused with one line."""
    if spec == "self-consistency":
        return spec, ""
    kind, _, folder = spec.partition(":")
    if kind in ("prm", "orm") and folder:
        return kind, folder
    raise InputError(f"--critic {spec!r}: use prm:DIR, orm:DIR or self-consistency")


def load_critic(spec: str, settings: RunSettings) -> Critic:
    """The critic a `--critic` spec names (module docstring)."""
    kind, folder = parse_critic(spec)
    if kind == "self-consistency":
        return self_consistency
    return reward_model_critic(folder, outcome=kind == "orm")


def best_of_n_answerer(chat: Any, settings: RunSettings, n: int, critic: Critic) -> Answerer:
    """Answers that are each the best of `n` sampled candidates under `critic`."""
    if n < 2:
        raise InputError(f"--best-of-n must be at least 2, got {n}")
    overrides = generation_overrides(settings)
    if overrides["temperature"] == 0.0:
        overrides["temperature"] = DEFAULT_TEMPERATURE

    def answer(items: Sequence[EvalItem]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            conversation, images, budget = item_conversation(item, settings)
            seed = zlib.crc32(item.id.encode())
            candidates = chat.ask_batch_messages(
                [conversation] * n, [images] * n, max_tiles=budget, seed=seed, **overrides
            )
            pictures = images or [part["image"] for part in conversation[0]["content"][:-1]]
            scores = [float(s) for s in critic(item, pictures, budget, candidates)]
            best = max(range(n), key=lambda k: scores[k])  # the first of equals
            out.append({"prediction": candidates[best], "candidates": candidates, "candidate_scores": scores})
        return out

    return answer
