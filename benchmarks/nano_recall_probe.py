"""Can the nano decoder learn to look things up in its context, and how does its initialisation matter?

A synthetic recall task in the world's words, language-model style (every token a target):

    a bar chart: owls 8, kiwis 3, seals 7, mice 2
    Question: What is the value of the kiwis bar?
    Answer: The kiwis bar has a value of 3.

The answer's name must be copied from the question (a few tokens back) and its value looked up in the list.
Without lookup the loss on those tokens stays at a uniform guess (ln 20 = 3.0 on names, ln 10 = 2.3 on
values). Each arm trains the nano decoder alone (no encoder, no image) from a fresh random init, on the
same batches, and logs the mean loss on the name and value tokens of held-out sequences. The arms differ in
the token embeddings' initial scale: `--embed-std 1.0` is what the nano has had (nn.Embedding's default),
0.02 is Qwen2's `initializer_range`.

`--start nano` (or a checkpoint folder) trains that model's decoder instead of a fresh one, and `--filler N`
puts 0 to N random filler words between the question and the answer, so that the name to copy is not at a
fixed distance: a decoder can copy from a fixed distance with a positional head, without matching content
(docs/nano/README.md#copying-the-question).

Run: `.venv/bin/python benchmarks/nano_recall_probe.py --tokenizer runs/nano2/init --steps 600 --append`
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, publish
from nano_copy_probe import in_spans

import internvl
from internvl.data.world.vocab import LABELS
from internvl.inputs.tokens import load_tokenizer
from internvl.model.llm import LanguageModel
from internvl.presets import nano

FILLER = "please look at the chart and read each bar with care before you write the answer".split()


def example(rng: random.Random, filler: int = 0) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """(text, name spans, value spans) of one sequence; the spans are those of the answer. With `filler`, 0 to
    `filler` random words stand between the question and the answer."""
    names = rng.sample(LABELS, rng.randint(3, 6))
    values = [rng.randint(1, 10) for _ in names]
    k = rng.randrange(len(names))
    listing = ", ".join(f"{n} {v}" for n, v in zip(names, values))
    words = " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, filler))) if filler else ""
    question = f"Question: What is the value of the {names[k]} bar?" + (f" {words}" if words else "")
    head = f"a bar chart: {listing}\n{question}\nAnswer: The "
    text = f"{head}{names[k]} bar has a value of {values[k]}."
    name_start = len(head)
    value_start = text.rindex(str(values[k]))
    return text, [(name_start, name_start + len(names[k]))], [(value_start, value_start + len(str(values[k])))]


def encode(tokenizer, texts: list[tuple[str, list, list]]) -> tuple[torch.Tensor, ...]:  # type: ignore[no-untyped-def]
    """Token ids (B, T) right-padded, and (B, T) masks: tokens inside name spans, inside value spans, real."""
    rows, names, values = [], [], []
    for text, name_spans, value_spans in texts:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        rows.append(enc["input_ids"])
        names.append([in_spans(offset, name_spans) for offset in enc["offset_mapping"]])
        values.append([in_spans(offset, value_spans) for offset in enc["offset_mapping"]])
    length = max(map(len, rows))
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    name_mask = torch.zeros(len(rows), length, dtype=torch.bool)
    value_mask = torch.zeros_like(name_mask)
    pad = torch.zeros_like(name_mask)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        name_mask[i, : len(row)] = torch.tensor(names[i])
        value_mask[i, : len(row)] = torch.tensor(values[i])
        pad[i, : len(row)] = True
    return ids, name_mask, value_mask, pad


def token_losses(model: LanguageModel, ids: torch.Tensor) -> torch.Tensor:
    """(B, T-1) next-token losses."""
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    hidden = model(model.embed(ids), positions)
    logits = model.lm_head(hidden[:, :-1]).float()
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")


def train_recall(
    model: LanguageModel, tokenizer, steps: int, batch: int, lr: float, every: int, filler: int, label: str
) -> list[tuple[int, float, float, float]]:  # type: ignore[no-untyped-def]
    """Train `model` on recall text, every token a target; the held-out (step, name loss, value loss, minutes)
    every `every` steps and at the last, each also printed to stderr after `label`."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    data_rng, held_rng = random.Random(1), random.Random(2)
    held = encode(tokenizer, [example(held_rng, filler) for _ in range(256)])
    curve = []
    started = time.perf_counter()
    for step in range(1, steps + 1):
        ids, _, _, pad = encode(tokenizer, [example(data_rng, filler) for _ in range(batch)])
        losses = token_losses(model, ids)
        weight = pad[:, 1:].float()
        loss = (losses * weight).sum() / weight.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, step / 50)
        optimizer.step()
        if step % every == 0 or step == steps:
            with torch.no_grad():
                ids, names, values, _ = held
                held_losses = token_losses(model, ids)
                name = float(held_losses[names[:, 1:]].mean())
                value = float(held_losses[values[:, 1:]].mean())
            curve.append((step, name, value, (time.perf_counter() - started) / 60))
            print(f"{label}: step {step} names {name:.2f} values {value:.2f}", file=sys.stderr, flush=True)
    return curve


def run_arm(
    tokenizer, embed_std: float, steps: int, batch: int, lr: float, every: int, start: str | None, filler: int
) -> list[tuple[int, float, float, float]]:  # type: ignore[no-untyped-def]
    """The held-out curve of one arm: a fresh decoder whose token embeddings start at `embed_std`, or `start`'s
    decoder (then `embed_std` is not used)."""
    torch.manual_seed(0)
    if start is None:
        model = LanguageModel(nano(len(tokenizer)).text)
        torch.nn.init.normal_(model.embed.weight, std=embed_std)
    else:
        model = internvl.load(None if start == "nano" else start).model.float().language
    return train_recall(model, tokenizer, steps, batch, lr, every, filler, start or f"embed std {embed_std}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="a nano checkpoint folder (its tokenizer)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--embed-std", type=float, nargs="+", default=[1.0, 0.02])
    parser.add_argument("--start", help="train this model's decoder (a folder, or nano) instead of fresh ones")
    parser.add_argument("--filler", type=int, default=0, help="up to this many filler words before the answer")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.tokenizer)
    stds = [0.0] if args.start else args.embed_std
    curves = {
        std: run_arm(tokenizer, std, args.steps, args.batch, args.lr, args.every, args.start, args.filler)
        for std in stds
    }
    label = {std: (f"from {args.start}" if args.start else f"embed std {std}") for std in stds}
    lines = [
        "## Can the nano decoder learn lookup? (benchmarks/nano_recall_probe.py)",
        "",
        machine_line(),
        "",
        f"The nano decoder alone, {'from ' + args.start if args.start else 'from random init'}, on synthetic "
        f"bar-chart recall ({args.batch} sequences per step, lr {args.lr}, 0-{args.filler} filler words before the "
        "answer); held-out loss in nats on the answer's copied name (uniform: 3.0) and looked-up value (uniform: 2.3).",
        "",
        "| step | " + " | ".join(f"names, {label[s]} | values, {label[s]}" for s in stds) + " |",
        "|---:|" + "---:|---:|" * len(stds),
    ]
    for i, (step, *_rest) in enumerate(curves[stds[0]]):
        cells = " | ".join(f"{curves[s][i][1]:.2f} | {curves[s][i][2]:.2f}" for s in stds)
        lines.append(f"| {step} | {cells} |")
    minutes = ", ".join(f"{label[s]}: {curves[s][-1][3]:.1f} min" for s in stds)
    lines += ["", f"Training time: {minutes}."]
    publish(lines, args.append)


if __name__ == "__main__":
    main()
