"""Decode speed and time to first token, ours vs transformers, same random InternVL3-1B-shaped weights.

Greedy decoding of 32 new tokens after a 20-token text prompt at batch 1 and 8, and the time to the
first token for 1 tile + 20 text tokens, in fp32 (this machine's CPU has no fast bf16). Also the
memory-bandwidth limit of batch-1 decoding (bytes of the language model's weights per token vs a
measured copy bandwidth). Run: `.venv/bin/python benchmarks/bench_decode.py [--append]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, publish  # noqa: E402

NEW_TOKENS = 32


def bandwidth_gb_s() -> float:
    """Copy bandwidth (read + write) of a 1 GiB buffer, best of 3."""
    src = torch.empty(2**28, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9


def time_ours(model, ids, pixels) -> float:  # type: ignore[no-untyped-def]
    from internvl.generate import GenerationConfig, generate

    start = time.perf_counter()
    generate(model, ids, None, pixels, GenerationConfig(max_new_tokens=NEW_TOKENS if pixels is None else 1))
    return time.perf_counter() - start


def time_hf(model, ids, pixels) -> float:  # type: ignore[no-untyped-def]
    images = {} if pixels is None else {"pixel_values": pixels}
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(input_ids=ids, **images, attention_mask=torch.ones_like(ids), do_sample=False,
                       max_new_tokens=NEW_TOKENS if pixels is None else 1, min_new_tokens=NEW_TOKENS if pixels is None else 1,
                       eos_token_id=None, pad_token_id=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args()
    from transformers import InternVLForConditionalGeneration

    from internvl.model.internvl import InternVL
    from internvl.presets import internvl3_1b

    config = internvl3_1b()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        InternVL(config).save_pretrained(tmp, layout="hf")
        ours = InternVL.from_pretrained(tmp, dtype=torch.float32)
        theirs = InternVLForConditionalGeneration.from_pretrained(tmp, dtype=torch.float32).eval()
    lm_bytes = sum(p.numel() * p.element_size() for n, p in ours.named_parameters() if n.startswith("language."))
    lm_bytes -= ours.language.embed.weight.numel() * 4  # embedding rows are gathered, not read whole
    bandwidth = bandwidth_gb_s()
    limit = bandwidth * 1e9 / lm_bytes

    rows = []
    g = torch.Generator().manual_seed(1)
    for batch in (1, 8):
        ids = torch.randint(0, 150000, (batch, 20), generator=g)
        time_ours(ours, ids, None), time_hf(theirs, ids, None)  # warm-up
        t_ours, t_hf = time_ours(ours, ids, None), time_hf(theirs, ids, None)
        rows.append((f"decode batch {batch} (tok/s)", batch * NEW_TOKENS / t_ours, batch * NEW_TOKENS / t_hf))
    image = [config.image_token_id] * config.num_image_token
    ids = torch.tensor([[151644] + image + torch.randint(0, 150000, (19,), generator=g).tolist()])
    pixels = torch.randn(1, 3, 448, 448, generator=g)
    time_ours(ours, ids, pixels), time_hf(theirs, ids, pixels)
    rows.append(("time to first token, 1 tile + 20 text (s)", time_ours(ours, ids, pixels), time_hf(theirs, ids, pixels)))

    lines = [
        "### Decode and time to first token: InternVL3-1B shape, random weights, fp32, greedy",
        "",
        machine_line(),
        f"Copy bandwidth {bandwidth:.1f} GB/s; language-model weights read per token {lm_bytes / 1e9:.2f} GB; "
        f"batch-1 limit {limit:.1f} tok/s.",
        "",
        "| measure | internvl | transformers | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name, a, b in rows:
        ratio = a / b if "tok/s" in name else b / a
        lines.append(f"| {name} | {a:.2f} | {b:.2f} | {ratio:.2f}x |")
    lines.append(f"| batch-1 decode as a share of the bandwidth limit | {rows[0][1] / limit:.0%} | {rows[0][2] / limit:.0%} | |")
    publish(lines, args.append)


if __name__ == "__main__":
    main()
