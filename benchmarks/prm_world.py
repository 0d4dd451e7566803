"""Best-of-N on the world: accuracy against N for the PRM, the ORM and self-consistency, from what
`scripts/prm_world.sh` wrote in RUN.

The eval run RUN/bon-prm (`internvl eval run --best-of-n N --critic prm:...`) sampled N candidates per test
item and recorded each with the PRM's score. Here the same candidates are scored again by each critic
through the eval's own critic functions (`internvl.eval.best_of_n`): the PRM (its scores must equal the
recorded ones), the ORM and self-consistency, timed per item. Best-of-n for n < N is read from the first n
candidates (the PRM and the ORM score each candidate alone; self-consistency is recounted over the n).
Every candidate is scored by the world's rule (the eval's scorer), so pass@1 is the mean over all N
candidates (the expected accuracy of one sample). The report states each difference at N = 8 with one
standard error of the paired difference, the PRM's accuracy on held-out steps that Monte-Carlo
continuations labelled (RUN/held-out), and the cost per item.

Run: `.venv/bin/python benchmarks/prm_world.py RUN [--out report.md] [--plot accuracy.png] [--append]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, paired_difference, publish

from internvl.eval import ScoringSettings, load_items, score_answer
from internvl.eval.best_of_n import reward_model_critic, self_consistency
from internvl.eval.prompts import build_cot_prompt

CRITICS = ("prm", "orm", "self-consistency")
NAMES = {"prm": "PRM", "orm": "ORM", "self-consistency": "self-consistency"}


def read_candidates(folder: Path) -> dict[str, dict[str, Any]]:
    """{item id: its predictions.jsonl record (candidates, candidate_scores)}."""
    lines = (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return {record["id"]: record for record in map(json.loads, lines)}


def best_of(scores: list[float], n: int) -> int:
    """The index of the best of the first n candidates (the first of equals, as the eval keeps)."""
    return max(range(n), key=lambda k: scores[k])


def critic_scores(run: Path, items: dict[str, Any], records: dict[str, dict[str, Any]]) -> tuple[dict, dict]:
    """({critic: {item id: one score per candidate}}, {critic: seconds per item}) for the recorded candidates,
    scored by the eval's own critics (`internvl.eval.best_of_n`)."""
    settings = json.loads((run / "bon-prm" / "settings.json").read_text(encoding="utf-8"))
    budget = settings["settings"]["max_tiles"]
    judges = {
        "prm": reward_model_critic(str(run / "prm-model"), outcome=False),
        "orm": reward_model_critic(str(run / "orm-model"), outcome=True),
        "self-consistency": self_consistency,
    }
    pictures = {i: items[i].load_images() for i in records}  # once, outside the timed scoring
    scores: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, float] = {}
    for critic, judge in judges.items():
        started = time.perf_counter()
        scores[critic] = {i: judge(items[i], pictures[i], budget, r["candidates"]) for i, r in records.items()}
        seconds[critic] = (time.perf_counter() - started) / len(records)
    return scores, seconds


def picks(scores: dict[str, dict[str, list[float]]], items: dict[str, Any], candidates: dict[str, list[str]], n: int):
    """{critic: {item id: the candidate it keeps among the first n}}."""
    out: dict[str, dict[str, int]] = {}
    for critic, table in scores.items():
        chosen = {}
        for item_id, values in table.items():
            if critic == "self-consistency":  # a majority among these n, not among all N
                values = self_consistency(items[item_id], [], 0, candidates[item_id][:n])
            chosen[item_id] = best_of(values, n)
        out[critic] = chosen
    return out


def step_accuracy(run: Path) -> str:
    """The PRM's accuracy on held-out steps, labelled "+" when a Monte-Carlo continuation was right."""
    samples = run / "held-out" / "samples.jsonl"
    if not samples.is_file() or not (run / "prm-model").is_dir():
        return "Held-out steps: not measured (no RUN/held-out/samples.jsonl or RUN/prm-model)."
    from internvl.data.mmpr import cot_question, read_questions
    from internvl.reward import ProcessRewardModel

    questions = {q.key: q for q in read_questions(run / "questions-val" / "val.jsonl")}
    media = run / "questions-val" / "images"
    prm = ProcessRewardModel.load(run / "prm-model")
    right = total = plus = 0
    for line in map(json.loads, samples.read_text(encoding="utf-8").splitlines()):
        q = questions[line["key"]]
        solutions, labels = [], []
        for solution in line["solutions"]:
            scored = solution["steps_with_score"]
            marks = [s["score"] > 0 for s in scored]
            if False in marks:  # as the training data: nothing after the first "-" (early stop)
                marks = marks[: marks.index(False) + 1]
            solutions.append([s["step"] for s in scored][: len(marks)])
            labels.append(marks)
        images = [str(media / p) for p in q.images]
        for scores, marks in zip(prm.step_scores(cot_question(q.question, len(images)), images, solutions), labels):
            right += sum((p > 0.5) == m for p, m in zip(scores, marks))
            total += len(marks)
            plus += sum(marks)
    return (
        f"Held-out steps ({total} steps of {len(questions)} val questions, Monte-Carlo labels): the PRM "
        f"(P(+) > 0.5) is right on {100 * right / max(total, 1):.1f}%; always answering the majority label "
        f"would be right on {100 * max(plus, total - plus) / max(total, 1):.1f}% ({plus} '+')."
    )


def cost_line(run: Path, n: int, items: int, seconds: dict[str, float]) -> str:
    """Forward passes and wall time per item: sampling (the eval run's wall time, bon-prm/wall_s.txt, less
    its PRM scoring) and each critic's scoring."""
    timing = run / "bon-prm" / "wall_s.txt"
    sampling = ""
    if timing.is_file():
        sampling = f" ({float(timing.read_text()) / items - seconds['prm']:.2f} s per item)"
    forward = {"prm": "1 batched forward pass", "orm": "1 batched forward pass", "self-consistency": "no model"}
    parts = [f"{NAMES[c]} {forward[c]}, {seconds[c]:.3f} s" for c in CRITICS]
    return f"Cost per item: sampling {n} candidates{sampling}; scoring them: " + "; ".join(parts) + "."


def report(run: Path) -> tuple[list[str], dict[str, dict[int, float]], list[int]]:
    # the eval run asked with --cot: its critic saw each prompt as the harness wraps it
    items = {item.id: replace(item, prompt=build_cot_prompt(item.prompt)) for item in load_items(run / "test-cot.tsv")}
    records = {i: r for i, r in read_candidates(run / "bon-prm").items() if "candidates" in r}
    candidates = {i: r["candidates"] for i, r in records.items()}
    n_max = len(next(iter(candidates.values())))
    scores, seconds = critic_scores(run, items, records)
    recorded_gap = max(abs(a - b) for i, r in records.items() for a, b in zip(r["candidate_scores"], scores["prm"][i]))
    correct = {
        item_id: [
            float(
                score_answer(
                    items[item_id].metric,
                    c,
                    items[item_id].answers,
                    items[item_id].options,
                    ScoringSettings(),
                    items[item_id].tolerance,
                ).value
                or 0.0
            )
            for c in cands
        ]
        for item_id, cands in candidates.items()
    }
    pass1 = {i: sum(c) / len(c) for i, c in correct.items()}
    sizes = [n for n in (1, 2, 4, 8, 16, 32) if n <= n_max]
    accuracy: dict[str, dict[int, float]] = {"pass@1": {n: 100 * sum(pass1.values()) / len(pass1) for n in sizes}}
    kept_at: dict[int, dict[str, dict[str, float]]] = {}
    for n in sizes:
        chosen = picks(scores, items, candidates, n)
        kept_at[n] = {c: {i: correct[i][chosen[c][i]] for i in correct} for c in CRITICS}
        for critic in CRITICS:
            accuracy.setdefault(critic, {})[n] = 100 * sum(kept_at[n][critic].values()) / len(correct)

    lines = [f"## Best-of-N on the world ({run})", "", machine_line(), ""]
    lines += [
        f"{len(correct)} test items of reasoning, counting and charts, chain of thought, {n_max} candidates each "
        f"(temperature 0.7; {len(items) - len(records)} items without candidates: an error in the eval run). "
        f"The PRM's scores here and the eval run's recorded ones differ by at most {recorded_gap:.1e}.",
        "",
        "| critic | " + " | ".join(f"N = {n}" for n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for name, row in accuracy.items():
        lines.append(f"| {NAMES.get(name, name)} | " + " | ".join(f"{row[n]:.1f}" for n in sizes) + " |")
    n8 = 8 if 8 in kept_at else sizes[-1]
    kept, ids = kept_at[n8], sorted(correct)
    bars = [
        (f"PRM Best-of-{n8} beats pass@1 by >= 5 points", paired_difference(kept["prm"], pass1, ids), 5.0),
        (f"PRM beats ORM at N = {n8}", paired_difference(kept["prm"], kept["orm"], ids), None),
        (
            f"ORM beats self-consistency at N = {n8}",
            paired_difference(kept["orm"], kept["self-consistency"], ids),
            None,
        ),
    ]
    lines += ["", "| bar | difference (points) | one standard error | met |", "|---|---:|---:|---|"]
    for text, (difference, error), floor in bars:
        met = difference >= floor if floor is not None else difference > error
        lines.append(f"| {text} | {difference:+.1f} | {error:.1f} | {'yes' if met else 'no'} |")
    lines += [
        "",
        "A difference counts as beating only when it is larger than its one standard error (the sampling noise).",
        "",
        step_accuracy(run),
        "",
        cost_line(run, n_max, len(correct), seconds),
    ]
    data = run / "data" / "summary.json"
    if data.is_file():
        s = json.loads(data.read_text(encoding="utf-8"))
        lines += [
            "",
            f"PRM data: {s['questions']} questions, {s['solutions']} solutions, {s['steps']} steps of which "
            f"{s['steps_plus']} '+'; {s['solutions_last_step_plus']} solutions end '+' (the ORM's positives).",
        ]
    return lines, accuracy, sizes


def plot(accuracy: dict[str, dict[int, float]], sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, row in accuracy.items():
        style = "--" if name == "pass@1" else "-o"
        ax.plot(sizes, [row[n] for n in sizes], style, label=NAMES.get(name, name))
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("candidates N")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Best-of-N on the world (reasoning, counting, charts)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="scripts/prm_world.sh's run folder")
    parser.add_argument("--out", type=Path, default=None, help="write the report here too")
    parser.add_argument("--plot", type=Path, default=None, help="draw accuracy against N here")
    parser.add_argument("--append", action="store_true", help="append the report to BENCHMARKS.md")
    args = parser.parse_args()
    lines, accuracy, sizes = report(args.run)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.plot is not None:
        plot(accuracy, sizes, args.plot)
    publish(lines, args.append)


if __name__ == "__main__":
    main()
