"""The non-weight time of a batch-1 decode step of the InternVL3-1B shape, with the decoder layers fused (one
`decoder_layer_step` call each, as `internvl.load` prepares a CPU model) and unfused (`DecoderLayer`: about
30 PyTorch operations per layer around the projections), at fp32, int8 and int4.

    python benchmarks/decode_overhead.py [--modes fp32,int8,int4] [--append]

Non-weight time = a decode step (the median of 32, after a 20-token prompt) minus the same step's weight
products called alone, in the same order, on the same modules (every layer's qkv, o, gate_up and down, then
the output head): what is left is the norms, rotary, the cache write, attention, the activation, the residual
adds, the argmax and the framework's dispatch of all of them. The two layer kinds alternate three times and
the best of each is kept (the machine's speed drifts by tens of percent over minutes).

Earlier versions of this script replaced every projection by a no-op instead (docs/cpu-speed.md quotes those
numbers); a fused layer takes only our kernels' projections, so the difference method replaced it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, publish, random_one_b  # noqa: E402

from internvl.model.cache import KVCache  # noqa: E402
from internvl.model.kernel_layer import KernelDecoderLayer  # noqa: E402
from internvl.model.linear import choose_cpu_kernels, fast_fp32_linears, quantize_int4, quantize_int8  # noqa: E402
from internvl.model.llm import DecoderLayer  # noqa: E402

PREPARE = {"fp32": fast_fp32_linears, "int8": quantize_int8, "int4": quantize_int4}


def step_ms(model, steps: int = 32) -> float:  # type: ignore[no-untyped-def]
    """Median ms of a greedy batch-1 decode step after a 20-token prompt."""
    ids = torch.randint(10, 1000, (1, 20), generator=torch.Generator().manual_seed(0))
    cache = KVCache.for_model(model, 1, 20 + steps + 1)
    times = []
    with torch.inference_mode():
        token = model(ids, cache=cache, last_only=True)[:, -1].argmax(-1)
        for _ in range(steps):
            start = time.perf_counter()
            token = model(token[:, None], cache=cache, last_only=True)[:, -1].argmax(-1)
            token.tolist()  # the generation loop's one host sync
            times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[steps // 2]


def products_ms(model, repeats: int = 8) -> float:  # type: ignore[no-untyped-def]
    """Median ms of one step's weight products alone: every layer's four projections, then the head."""
    text = model.config.text
    hidden, inner = torch.randn(1, 1, text.hidden_size), torch.randn(1, 1, text.intermediate_size)
    calls = [(p, hidden) for layer in model.language.layers for p in (layer.attn.qkv, layer.attn.o, layer.mlp.gate_up)]
    calls += [(layer.mlp.down, inner) for layer in model.language.layers]
    calls.append((model.language.lm_head, hidden))
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            for projection, x in calls:
                projection(x)
            times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[repeats // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="fp32,int8,int4", help="comma list of fp32, int8, int4")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    lines = [
        f"### Non-weight time of a 1B decode step, fused and unfused layers ({machine_line()})",
        "",
        "`benchmarks/decode_overhead.py`: a decode step minus its weight products called alone (ms per token; "
        "best of 3 alternating runs of each).",
        "",
        "| mode | layers | step | weight products alone | non-weight time |",
        "|---|---|---:|---:|---:|",
    ]
    for mode in args.modes.split(","):
        model = random_one_b()
        choose_cpu_kernels(model)
        PREPARE[mode](model.language)
        assert isinstance(model.language.layers[0], KernelDecoderLayer), "our CPU kernels are not built here"
        best: dict[str, tuple[float, float]] = {}
        for _ in range(3):
            for name, kind in (("unfused", DecoderLayer), ("fused", KernelDecoderLayer)):
                model.language.use_layer_kind(kind)
                step, products = step_ms(model), products_ms(model)
                if name not in best or step < best[name][0]:
                    best[name] = (step, products)
        for name, (step, products) in best.items():
            lines.append(f"| {mode} | {name} | {step:.2f} | {products:.2f} | {step - products:.2f} |")
            print(lines[-1], flush=True)
        del model
    publish(lines, args.append)


if __name__ == "__main__":
    main()
