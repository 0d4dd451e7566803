"""The effect of ViCO on the world: accuracy and visual tokens of a Flash model answering every tile full,
every tile compressed, and as its router decides; then prefill and serving speed in the three modes.

Reads what `scripts/vico_world.sh` wrote in RUN (the Flash model, the test TSV, the three evaluations),
counts the visual tokens of every test item in each mode (the router runs on each item's tiles, as in
answering), draws which tiles the router compressed on a few items (docs/flash-router.png), times the
server's engine on an image-heavy load in each mode, prints the tables and appends them to BENCHMARKS.md
with --append.

`--sweep 0.3,0.7` also answers the test split with the router at those absolute thresholds (the trade-off
between tokens saved and accuracy).

Run: `.venv/bin/python benchmarks/vico_world.py --run runs/vico [--requests 16] [--sweep 0.3,0.7] [--append]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import answer_and_score, eval_scores, machine_line, publish

from internvl.chat import Chat, load
from internvl.eval.answerer import item_conversation
from internvl.eval.formats import load_items
from internvl.eval.runner import RunSettings
from internvl.model.flash import route_prompts

MODES = ("full", "compressed", "router")
REPO = Path(__file__).resolve().parent.parent


@torch.no_grad()
def visual_tokens(chat: Chat, tsv: Path) -> tuple[dict[str, dict[str, int]], list[tuple[str, list, torch.Tensor]]]:
    """{mode: {family: visual tokens}} over the test items, and (family, tiles, choices) of each image item."""
    settings = RunSettings(max_tiles=chat.processor.max_tiles)
    counts: dict[str, dict[str, int]] = {mode: defaultdict(int) for mode in MODES}
    examples = []
    ctx = chat.model.image_token_id
    for item in load_items(str(tsv)):
        conversation, images, budget = item_conversation(item, settings)
        inputs = chat.processor(conversation, images=images, max_tiles=budget)
        if inputs.pixel_values is None:
            continue
        family = item.category
        for mode in MODES:
            prompts, _, compressed = route_prompts(chat.model, [inputs.input_ids], [inputs.pixel_values], mode)
            tokens = int((prompts[0] == ctx).sum())
            counts[mode][family] += tokens
            counts[mode]["overall"] += tokens
            if mode == "router" and compressed is not None:
                examples.append((family, inputs.pixel_values, compressed.cpu()))
    return counts, examples


def threshold_sweep(chat: Chat, tsv: Path, thresholds: list[float]) -> list[str]:
    """Accuracy and visual tokens saved by the router at other absolute thresholds (the trade-off curve)."""
    items = load_items(str(tsv))
    config, ctx = chat.model.config, chat.model.image_token_id
    kept = config.flash_absolute_threshold
    lines = ["", "The router at other thresholds (P(compress) >= t compresses a tile):", ""]
    lines += ["| threshold | visual tokens saved | accuracy (%) |", "|---|---|---|"]
    settings = RunSettings(max_tiles=chat.processor.max_tiles)
    chat.visual_resolution = "router"
    try:
        for threshold in thresholds:
            config.flash_absolute_threshold = threshold
            full = routed = 0
            for item in items:
                conversation, images, budget = item_conversation(item, settings)
                inputs = chat.processor(conversation, images=images, max_tiles=budget)
                if inputs.pixel_values is not None:
                    prompts, _, _ = route_prompts(chat.model, [inputs.input_ids], [inputs.pixel_values], "router")
                    full += int((inputs.input_ids == ctx).sum())
                    routed += int((prompts[0] == ctx).sum())
            _, score = answer_and_score(chat, items)
            lines.append(f"| {threshold:g} | {100 * (1 - routed / full):.0f}% | {score:.1f} |")
    finally:
        config.flash_absolute_threshold = kept
    return lines


def draw_router(examples: list, out: Path, per_family: int = 1) -> None:
    """Each chosen item's tiles in a row, compressed ones crossed out in red."""
    chosen, seen = [], defaultdict(int)
    for family, pixels, compressed in examples:
        if seen[family] < per_family and pixels.shape[0] <= 7:
            chosen.append((family, pixels, compressed))
            seen[family] += 1
    size, pad, top = 112, 6, 24
    width = max(p.shape[0] for _, p, _ in chosen) * (size + pad) + 140
    canvas = Image.new("RGB", (width, top + len(chosen) * (size + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 6), "tiles the router compressed (red) and kept, one test item per family", fill="black")
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    for row, (family, pixels, compressed) in enumerate(chosen):
        y = top + pad + row * (size + pad)
        draw.text((4, y + size // 2 - 6), family, fill="black")
        for col in range(pixels.shape[0]):
            tile = ((pixels[col] * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
            x = 140 + col * (size + pad)
            canvas.paste(Image.fromarray(tile).resize((size, size)), (x, y))
            if bool(compressed[col]):
                draw.rectangle((x, y, x + size - 1, y + size - 1), outline="red", width=4)
                draw.line((x, y, x + size, y + size), fill="red", width=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)


def time_engine(chat: Chat, mode: str, requests: int, max_tokens: int) -> tuple[float, float]:
    """(mean time to first token in s, completion tokens per second) of `requests` concurrent requests, each
    with one 896x896 picture (4 tiles + thumbnail) and an answer of exactly `max_tokens` tokens (ignore_eos),
    through the server's engine (max batch 8)."""
    from internvl.serve.engine import Engine, EngineSettings, Job

    chat.visual_resolution = mode
    picture = Image.new("RGB", (896, 896), "white")
    ImageDraw.Draw(picture).ellipse((200, 200, 700, 700), fill="red")
    engine = Engine(chat, EngineSettings(max_batch=8, max_seq_len=2048))
    first: dict[int, float] = {}

    def recorder(index: int):  # type: ignore[no-untyped-def]
        def emit(event) -> None:  # type: ignore[no-untyped-def]
            first.setdefault(index, time.perf_counter())

        return emit

    messages = [{"role": "user", "content": [{"type": "image", "image": picture}, "Describe what the picture shows."]}]
    jobs = []
    for index in range(requests):
        inputs, config = chat._prepare(messages, (), (), None, {"max_new_tokens": max_tokens})
        jobs.append(Job(inputs, config, recorder(index), n=1, ignore_eos=True))  # every answer max_tokens long
    start = time.perf_counter()
    for job in jobs:
        engine.submit(job)
    while engine.stats()["running_rows"] or engine.stats()["waiting"]:
        engine.step()
    elapsed = time.perf_counter() - start
    return sum(first[i] - start for i in first) / max(len(first), 1), requests * max_tokens / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/vico"))
    parser.add_argument("--requests", type=int, default=16, help="concurrent requests of the speed test")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--picture", type=Path, default=REPO / "docs" / "flash-router.png")
    parser.add_argument(
        "--sweep", default="", help="comma-separated router thresholds to evaluate as well (e.g. 0.3,0.7)"
    )
    parser.add_argument("--append", action="store_true", help="append the tables to BENCHMARKS.md")
    args = parser.parse_args()

    chat = load(args.run / "flash-model", device="cpu")
    counts, examples = visual_tokens(chat, args.run / "world-test.tsv")
    draw_router(examples, args.picture)
    scores = {mode: eval_scores(args.run / f"eval-{mode}") for mode in MODES}
    families = sorted(k for k in scores["full"] if k != "overall") + ["overall"]
    lines = [
        f"### ViCO on the world ({machine_line()})",
        "",
        "Accuracy (%) and visual tokens of the test split, by mode (`bash scripts/vico_world.sh`):",
        "",
        "| family | full | compressed | router | tokens full | tokens router | router saves |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in families:
        full_tokens, router_tokens = counts["full"].get(family, 0), counts["router"].get(family, 0)
        saved = f"{100 * (1 - router_tokens / full_tokens):.0f}%" if full_tokens else "-"
        row = [f"{scores[m].get(family, float('nan')):.1f}" for m in MODES]
        lines.append(f"| {family} | {' | '.join(row)} | {full_tokens} | {router_tokens} | {saved} |")
    lines += [
        "",
        f"Engine speed: {args.requests} requests at once, an 896x896 picture (5 tiles) and "
        f"{args.max_tokens} answer tokens each:",
        "",
    ]
    lines += ["| mode | time to first token (s) | tokens/s | vs full |", "|---|---|---|---|"]
    base = None
    for mode in MODES:
        ttft, rate = time_engine(chat, mode, args.requests, args.max_tokens)
        base = base or (ttft, rate)
        lines.append(
            f"| {mode} | {ttft:.3f} | {rate:.1f} | TTFT x{base[0] / ttft:.2f}, tokens/s x{rate / base[1]:.2f} |"
        )
    if args.sweep:
        lines += threshold_sweep(chat, args.run / "world-test.tsv", [float(t) for t in args.sweep.split(",")])
    publish(lines, args.append)


if __name__ == "__main__":
    main()
