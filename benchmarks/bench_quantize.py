"""int8 and int4 (our q8_0 / q4_0 kernels where they are built) against fp32 on this CPU: decode speed and its share of
the bandwidth limit on the InternVL3-1B shape (random weights), prefill time, the output error on a fixed
text, and the greedy agreement and world accuracy of the nano model.

For the 1B shape, one process, side by side: fp32 (`fast_fp32_linears`, as `internvl.load` does),
`quantize_int8`, `quantize_int4`; decode tok/s at batch 1 (32 new tokens after 20, prefill subtracted),
the batch-1 limit (read bandwidth / bytes of the language model read per token) and the share of it,
prefill of 1 tile + 20 tokens (s). Accuracy of the 1B shape: the mean KL(fp32 || quantized) of the next-
token distributions over a fixed 256-token random text (random weights have no perplexity to speak of).
Nano: the first `--world N` items of a world TSV (`internvl world export-tsv --split test`) answered
greedily in each mode, as `internvl eval run` asks and scores them: how many answers equal fp32's, and the
accuracy (0 = skip).

Run: `.venv/bin/python benchmarks/bench_quantize.py [--world 200 [--tsv FILE.tsv]] [--append]`.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import answer_and_score, machine_line, publish, random_one_b

from internvl.bench import (
    _decode_tok_s,
    _ours_generate,
    _prompt,
    _ttft_s,
    decoder_bytes_per_token,
    read_bandwidth_gb_s,
)
from internvl.model.internvl import InternVL
from internvl.model.linear import choose_cpu_kernels, fast_fp32_linears, quantize_int4, quantize_int8

DEFAULT_TSV = Path("runs/world/world-test.tsv")  # written on first use: the world's test split, seed 0
MODES = ("fp32", "int8", "int4")


def one_b_models(base: InternVL) -> dict[str, InternVL]:
    """fp32 (`base` itself, `fast_fp32_linears`), int8 and int4 copies of `base`, each as `internvl.load` sets up
    a CPU model (`choose_cpu_kernels` first)."""
    choose_cpu_kernels(base)
    models = {"int8": copy.deepcopy(base), "int4": copy.deepcopy(base), "fp32": base}
    quantize_int8(models["int8"].language)
    quantize_int4(models["int4"].language)
    fast_fp32_linears(base.language)
    return models


@torch.no_grad()
def mean_kl(reference: InternVL, other: InternVL, ids: torch.Tensor) -> float:
    p = F.log_softmax(reference(ids).float(), -1)
    q = F.log_softmax(other(ids).float(), -1)
    return float(F.kl_div(q, p, log_target=True, reduction="none").sum(-1).mean())


def world_agreement(tsv: Path, items: int) -> list[str]:
    """The nano's greedy answers to the first `items` of a world TSV in each mode, as `internvl eval run`
    asks and scores them."""
    from internvl.chat import load
    from internvl.eval.formats import load_items

    if not tsv.exists() and tsv == DEFAULT_TSV:
        from internvl.data.world.export import export_tsv

        export_tsv(tsv, items, split="test", seed=0, workers=2)
    chosen = load_items(str(tsv))[:items]
    answers, scores = {}, {}
    for mode in MODES:
        chat = load(None, device="cpu", quantize=None if mode == "fp32" else mode)
        answers[mode], scores[mode] = answer_and_score(chat, chosen)
    lines = ["", f"Nano, the first {len(chosen)} items of {tsv.name}, greedy:", ""]
    lines += ["| mode | answers equal to fp32 | accuracy (%) |", "|---|---|---|"]
    for mode in MODES:
        same = sum(a == b for a, b in zip(answers[mode], answers["fp32"]))
        lines.append(f"| {mode} | {same} / {len(chosen)} | {scores[mode]:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=200, help="nano world test items (0: skip)")
    parser.add_argument(
        "--tsv",
        type=Path,
        default=DEFAULT_TSV,
        help="`internvl world export-tsv` output; the default is written (the test split, seed 0) if missing",
    )
    parser.add_argument("--append", action="store_true", help="append the tables to BENCHMARKS.md")
    args = parser.parse_args()

    models = one_b_models(random_one_b())
    config = models["fp32"].config
    g = torch.Generator().manual_seed(0)
    ids = _prompt(config, 1, 0, g)
    prefill_ids = _prompt(config, 1, 1, g)
    pixels = torch.randn(1, 3, 448, 448, generator=g)
    text = torch.randint(10, config.text.vocab_size - 100, (1, 256), generator=g)
    bandwidth = read_bandwidth_gb_s()
    lines = [
        f"### int8 and int4 (our q8_0 / q4_0 kernels where built), InternVL3-1B shape ({machine_line()})",
        "",
        f"Read bandwidth {bandwidth:.1f} GB/s. Decode: batch 1, 32 new tokens after 20 (prefill subtracted).",
        "",
        "| mode | GB read per token | decode (tok/s) | limit (tok/s) | share of limit | prefill 1 tile + 20 (s) "
        "| KL to fp32 (nats/token) |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        model = models[mode]
        run = lambda i, px, new, m=model: _ours_generate(m, i, px, new)  # noqa: E731
        size = decoder_bytes_per_token(model)
        rate = _decode_tok_s(run, ids)
        limit = bandwidth * 1e9 / size
        prefill = _ttft_s(run, prefill_ids, pixels)
        kl = 0.0 if mode == "fp32" else mean_kl(models["fp32"], model, text)
        lines.append(
            f"| {mode} | {size / 1e9:.3f} | {rate:.1f} | {limit:.1f} | {100 * rate / limit:.0f}% | {prefill:.2f} "
            f"| {kl:.4f} |"
        )
    del models
    if args.world:
        lines += world_agreement(args.tsv, args.world)
    publish(lines, args.append)


if __name__ == "__main__":
    main()
