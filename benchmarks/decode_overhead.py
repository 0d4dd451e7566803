"""The non-weight time of a batch-1 decode step of the InternVL3-1B shape: every projection of the language
model is replaced by a no-op that returns zeros of the right shape, so what is left is the norms, rotary,
the cache, attention, the activation, the argmax and the framework's dispatch of all of them.

    python benchmarks/decode_overhead.py [--append]

docs/cpu-speed.md follows this number through the changes that cut it (9.0 -> 6.3 ms on the 2-core EPYC).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, publish  # noqa: E402

from internvl.bench import SHAPES, _decode_tok_s, _ours_generate, _prompt  # noqa: E402
from internvl.model.internvl import InternVL  # noqa: E402
from internvl.model.linear import choose_cpu_kernels, replace_linears  # noqa: E402


class Zeros(nn.Module):
    """A projection that reads no weights: zeros of its output width."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.out_features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--append", action="store_true", help="append the line to BENCHMARKS.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = SHAPES["1b"]()
    plain = InternVL(config).eval()
    replace_linears(plain.language, lambda layer: Zeros(layer.out_features))
    prepared = copy.deepcopy(plain)
    choose_cpu_kernels(prepared)  # as internvl.load does: our RMS norm kernel where it is built
    ids = _prompt(config, 1, 0, torch.Generator().manual_seed(0))
    rates: dict[str, list[float]] = {"plain": [], "prepared": []}
    for _ in range(3):  # alternating, so that a slow minute weighs on both
        for name, model in (("plain", plain), ("prepared", prepared)):
            rates[name].append(_decode_tok_s(lambda i, px, new, m=model: _ours_generate(m, i, px, new), ids))
    lines = [
        f"### Non-weight time of a 1B decode step ({machine_line()})",
        "",
        "Every language-model projection a no-op (`benchmarks/decode_overhead.py`), best of 3 alternating runs: "
        f"{1000 / max(rates['plain']):.2f} ms per token as built, {1000 / max(rates['prepared']):.2f} ms after "
        "`choose_cpu_kernels` (as `internvl.load` prepares a CPU model).",
    ]
    publish(lines, args.append)


if __name__ == "__main__":
    main()
