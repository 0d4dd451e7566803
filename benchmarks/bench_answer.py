"""How long one 1-tile question takes on the CPU: prefill and decode, tiny test model and 1B shape.

Run: `.venv/bin/python benchmarks/bench_answer.py [--bf16]` (prints; bf16 is opt-in because CPUs
without bf16 matrix units run it far slower than fp32).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from internvl.chat import Chat, load  # noqa: E402
from internvl.generate import GenerationConfig, stream  # noqa: E402
from internvl.model.internvl import InternVL  # noqa: E402
from internvl.nano.tokenizer import save_tokenizer, train_tokenizer  # noqa: E402
from internvl.presets import internvl3_1b  # noqa: E402
from internvl.weights import save_model
from tests.tiny import build_chat_model_folder  # noqa: E402


def measure(chat: Chat, label: str, new_tokens: int = 32) -> None:
    image = Image.new("RGB", (448, 448), "red")
    inputs = chat.processor([{"role": "user", "content": "What colour is it?"}], images=[image], max_tiles=1)
    ids = inputs.input_ids[None]
    pixels = inputs.pixel_values.to(next(chat.model.parameters()).dtype)
    for _ in range(2):  # the second round is reported (the first warms up kernels)
        start = time.perf_counter()
        steps = stream(chat.model, ids, None, pixels, GenerationConfig(max_new_tokens=new_tokens))
        next(steps)
        first = time.perf_counter()
        decoded = sum(1 for _ in steps)
        end = time.perf_counter()
    print(
        f"{label}: prompt {ids.shape[1]} tokens (1 tile); prefill {first - start:.3f} s "
        f"({ids.shape[1] / (first - start):.0f} tok/s); decode {decoded} tokens in {end - first:.3f} s "
        f"({decoded / (end - first):.1f} tok/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bf16", action="store_true", help="also time the 1B shape in bf16")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure(load(build_chat_model_folder(Path(tmp) / "tiny"), max_tiles=1), "tiny test model (fp32)")
        big = Path(tmp) / "big"
        save_tokenizer(train_tokenizer(["what colour is it red blue"] * 10, vocab_size=300), big)
        torch.manual_seed(0)
        model = InternVL(internvl3_1b())
        save_model(model, big)
        del model
        dtypes = [torch.float32, torch.bfloat16] if args.bf16 else [torch.float32]
        for dtype in dtypes:
            measure(load(big, max_tiles=1, dtype=dtype), f"InternVL3-1B shape, random weights ({dtype})", 16)


if __name__ == "__main__":
    main()
