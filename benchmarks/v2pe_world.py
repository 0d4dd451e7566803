"""The effect of V2PE on the world: accuracy on `needle_colour` questions with the training family's 4-16
images and with 32, 64 and 128, for the nano model fine-tuned with V2PE (random steps) and without it (step
1), and both on the ordinary test split. Reads what `scripts/v2pe_world.sh` wrote in RUN.

    .venv/bin/python benchmarks/v2pe_world.py RUN --best-delta 1 0.25 0.0625     # the step the sweep picks
    .venv/bin/python benchmarks/v2pe_world.py RUN [--out report.md] [--plot accuracy.png] [--append]

The report measures each length's prompts (tokens, and the V2PE model's position span at its step) on the
test items themselves, checks the issue's two bars and states the sampling noise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import eval_scores, item_scores, machine_line, noise, publish, sign_test

LENGTHS = (("needle_colour", 1), ("needle_colour_x2", 2), ("needle_colour_x4", 4), ("needle_colour_x8", 8))
TRAINING_LENGTH = 2048  # tokens: the recipe's max_length


def sweep_scores(run: Path, deltas: list[str]) -> dict[str, float]:
    return {delta: eval_scores(run / f"sweep-{delta}")["overall"] for delta in deltas}


def best_delta(scores: dict[str, float]) -> str:
    """The most accurate step; a tie goes to the larger step (closer to ordinary positions)."""
    return max(scores, key=lambda d: (scores[d], float(d)))


def chosen_delta(run: Path) -> float:
    settings = json.loads((run / "eval-v2pe-needle_colour" / "settings.json").read_text())
    return float(settings.get("settings", settings)["extra"]["v2pe_delta"])


def prompt_spans(run: Path, delta: float, limit: int = 20) -> dict[str, tuple[float, float]]:
    """{family: (mean prompt tokens, mean V2PE position span at `delta`)} over the first `limit` test items."""
    from internvl.chat import load
    from internvl.eval.answerer import item_conversation
    from internvl.eval.formats import load_items
    from internvl.eval.runner import RunSettings

    chat = load(str(run / "v2pe-model"), v2pe_delta=delta)
    settings = RunSettings(max_tiles=chat.processor.max_tiles)
    spans = {}
    for family, _ in LENGTHS:
        tokens, positions = [], []
        for item in load_items(str(run / f"test-{family}.tsv"))[:limit]:
            conversation, images, budget = item_conversation(item, settings)
            ids = chat.processor(conversation, images=images, max_tiles=budget).input_ids
            tokens.append(int(ids.shape[0]))
            positions.append(float(chat.model.positions(ids[None])[0, -1]) + 1)
        spans[family] = (sum(tokens) / len(tokens), sum(positions) / len(positions))
    return spans


def discordant(run: Path, family: str) -> tuple[int, int]:
    """(items only the V2PE model answers right, items only the step-1 model answers right) of one family."""
    v2pe, plain = item_scores(run / f"eval-v2pe-{family}"), item_scores(run / f"eval-plain-{family}")
    return sum(v2pe[i] > plain[i] for i in v2pe), sum(plain[i] > v2pe[i] for i in v2pe)


def items(folder: Path) -> int:
    return int(json.loads((folder / "summary.json").read_text())["n"])


def report(run: Path, deltas: list[str]) -> tuple[list[str], dict[str, dict[int, float]], dict[str, float]]:
    delta = chosen_delta(run)
    spans = prompt_spans(run, delta)
    accuracy: dict[str, dict[int, float]] = {"v2pe": {}, "plain": {}}
    lines = [
        f"## V2PE on the world: needles beyond the training length ({machine_line()})",
        "",
        "`bash scripts/v2pe_world.sh`: the shipped nano fine-tuned twice on the same data and steps (3000",
        "`needle_colour` conversations of 4-16 images within 2048 tokens + 1500 ordinary world conversations,",
        f"1000 steps), with V2PE (random steps) and without (step 1); the V2PE model answers at step {delta:g},",
        "chosen on validation needles with 64 images. The step-1 model's context limit is lifted to 32768 tokens",
        "(its rotary embedding is unchanged); with its own 4096 it refuses every prompt of 64 or 128 images.",
        "",
        "| family | images | prompt tokens | x 2048 | V2PE positions | step 1 | V2PE | only V2PE right "
        "| only step 1 right | items |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    pooled = [0, 0]
    for family, times in LENGTHS:
        plain = eval_scores(run / f"eval-plain-{family}")["overall"]
        v2pe = eval_scores(run / f"eval-v2pe-{family}")["overall"]
        accuracy["plain"][times], accuracy["v2pe"][times] = plain, v2pe
        images = "4-16" if times == 1 else str(16 * times)
        tokens, positions = spans[family]
        n = items(run / f"eval-v2pe-{family}")
        wins, losses = discordant(run, family)
        pooled = [pooled[0] + wins, pooled[1] + losses]
        lines.append(
            f"| {family} | {images} | {tokens:.0f} | {tokens / TRAINING_LENGTH:.1f} | {positions:.0f} | {plain:.1f} "
            f"| {v2pe:.1f} | {wins} | {losses} | {n} |"
        )
    lines += [
        "",
        f"Paired over all the needle items: V2PE alone right on {pooled[0]}, step 1 alone right on {pooled[1]} "
        f"(exact sign test p = {sign_test(*pooled):.4f}).",
    ]
    prior = run / "eval-prior-needle_colour"
    if (prior / "summary.json").exists():
        lines += [
            "",
            f"The answer prior (the most frequent training answer of each question type, no picture) scores "
            f"{eval_scores(prior)['overall']:.1f} on the 4-16 image needles.",
        ]
    sweep = sweep_scores(run, deltas)
    lines += [
        "",
        "Validation sweep of the V2PE model's step (50 needles with 64 images; step 1 exceeds the context):",
        "",
    ]
    lines += ["| step | " + " | ".join(sweep) + " |", "|---|" + "---|" * len(sweep)]
    lines.append("| accuracy | " + " | ".join(f"{v:.1f}" for v in sweep.values()) + " |")
    columns = {"start": "shipped", "plain": "step 1", "v2pe": "V2PE"}  # the shipped model's run is optional
    test = {
        name: eval_scores(run / f"eval-{name}-test")
        for name in columns
        if (run / f"eval-{name}-test" / "summary.json").exists()
    }
    families = [f for f in test["plain"] if f != "overall"]
    lines += ["", "Ordinary test split:", "", "| family | " + " | ".join(columns[name] for name in test) + " |"]
    lines.append("|---|" + "---|" * len(test))
    for family in [*families, "overall"]:
        lines.append(f"| {family} | " + " | ".join(f"{scores[family]:.1f}" for scores in test.values()) + " |")
    # the bar's "4x the training length": the first family whose prompts are 4 x 2048 tokens long on average
    far = next((f for f, _ in LENGTHS if spans[f][0] >= 4 * TRAINING_LENGTH), LENGTHS[-1][0])
    times = dict(LENGTHS)[far]
    at4 = (accuracy["v2pe"][times], accuracy["plain"][times])
    n4 = items(run / f"eval-v2pe-{far}")
    ordinary = (test["v2pe"]["overall"], test["plain"]["overall"])
    n_test = items(run / "eval-v2pe-test")
    ratio = at4[0] / at4[1] if at4[1] > 0 else math.inf
    lines += [
        "",
        f"- Bar 1, V2PE at least 2x step 1 at 4x the training length ({far}, {spans[far][0]:.0f} tokens): "
        f"{at4[0]:.1f} against {at4[1]:.1f} ({ratio:.2f}x; one standard "
        f"error {noise(at4[0], n4):.1f} and {noise(at4[1], n4):.1f} points over {n4} items): "
        + ("met" if at4[0] >= 2 * at4[1] and at4[0] > 0 else "not met"),
        f"- Bar 2, V2PE within 1 point of step 1 on the ordinary split: {ordinary[0]:.1f} against {ordinary[1]:.1f}"
        f" ({ordinary[0] - ordinary[1]:+.1f}; one standard error {noise(ordinary[0], n_test):.1f} over {n_test}"
        " items): " + ("met" if ordinary[0] >= ordinary[1] - 1 else "not met"),
    ]
    return lines, accuracy, {family: spans[family][0] for family, _ in LENGTHS}


def plot(accuracy: dict[str, dict[int, float]], tokens: dict[str, float], path: Path, delta: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [tokens[family] for family, _ in LENGTHS]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [accuracy["plain"][t] for _, t in LENGTHS], "o-", label="step 1 (no V2PE)")
    ax.plot(xs, [accuracy["v2pe"][t] for _, t in LENGTHS], "s-", label=f"V2PE, step {delta:g}")
    ax.axvline(TRAINING_LENGTH, color="grey", linestyle=":", label="training sequence limit (2048)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prompt tokens (mean)")
    ax.set_ylabel("needle accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title('Nano InternVL: "What colour is the star?" among N images')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the folder scripts/v2pe_world.sh wrote")
    parser.add_argument("--best-delta", nargs="+", metavar="DELTA", help="print the sweep's best step and stop")
    parser.add_argument("--sweep", nargs="+", default=["1", "0.25", "0.0625", "0.015625"], help="the sweep's steps")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    parser.add_argument("--plot", type=Path, default=None, help="draw accuracy against prompt length here")
    parser.add_argument("--append", action="store_true", help="append the report to BENCHMARKS.md")
    args = parser.parse_args()
    if args.best_delta:
        print(best_delta(sweep_scores(args.run, args.best_delta)))
        return 0
    lines, accuracy, tokens = report(args.run, args.sweep)
    publish(lines, args.append)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.plot:
        plot(accuracy, tokens, args.plot, chosen_delta(args.run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
