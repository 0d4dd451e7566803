"""Where one batch-1 decode step of the InternVL3-1B shape spends its time (fp32 as `internvl.load` sets up a
CPU model, or `--quantize int8 / int4`), next to the memory-bandwidth limit.

    python benchmarks/profile_decode.py [--steps 32] [--quantize int8] [--unfused] [--append]

With our CPU kernels built, the decoder layers' decode step is one fused kernel call (`KernelDecoderLayer`),
timed as a whole with the decoder's rotary tables and mask; the products of each projection alone are in the
second table, and `benchmarks/decode_overhead.py` gives the fused layers' non-weight time. `--unfused` times `DecoderLayer`'s
parts instead. Forward hooks time each kind of module inside the decoder: the weight products of the layers (qkv, o,
gate_up, down), the output head, the attention core (an `Attention` module minus its two projections:
rotary, the cache write, SDPA, reshapes), the RMS norms, the SiLU-and-multiply of the MLP (a `GatedMLP`
minus its projections) and the embedding lookup. The greedy pick is timed apart. "rest" is the step minus
all of these: the model's Python between modules, the rotary tables, the mask, the cache bookkeeping and
the framework. Hooks cost time too, so the step is also timed without them; the table gives both.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))


def build(quantize: str | None = None):  # type: ignore[no-untyped-def]
    from common import random_one_b

    from internvl.model.linear import choose_cpu_kernels, fast_fp32_linears, quantize_int4, quantize_int8

    model = random_one_b()
    choose_cpu_kernels(model)
    if quantize is not None:
        {"int8": quantize_int8, "int4": quantize_int4}[quantize](model.language)
    else:
        fast_fp32_linears(model.language)  # as internvl.load does on a CPU
    return model


class ModuleTimer:
    """Wall time per category of module, from forward pre/post hooks (nested modules subtract)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.handles: list = []

    def watch(self, module: nn.Module, category: str, parent: str | None = None) -> None:
        """Time `module` as `category`; its time is taken out of `parent`'s (the enclosing module's)."""
        started: list[float] = []

        def before(*_: object) -> None:
            started.append(time.perf_counter())

        def after(*_: object) -> None:
            spent = time.perf_counter() - started.pop()
            self.seconds[category] += spent
            if parent is not None:
                self.seconds[parent] -= spent

        self.handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def watch_decoder(model, timer: ModuleTimer) -> None:  # type: ignore[no-untyped-def]
    from internvl.model.kernel_layer import KernelDecoderLayer

    language = model.language
    timer.watch(language.embed, "embedding lookup")
    timer.watch(language.lm_head, "output head (lm_head)")
    if language.layer_kind is KernelDecoderLayer:  # one kernel call a step for all layers: no parts to time apart
        fused = "decoder layers, fused (weight products, attention, norms, MLP activation; the rotary tables)"
        timer.watch(language, fused)
        timer.watch(language.norm, "RMS norms", parent=fused)
        return
    timer.watch(language.norm, "RMS norms")
    for layer in language.layers:
        timer.watch(layer.attn, "attention core")
        timer.watch(layer.attn.qkv, "layer weight products", parent="attention core")
        timer.watch(layer.attn.o, "layer weight products", parent="attention core")
        timer.watch(layer.mlp, "MLP activation")
        timer.watch(layer.mlp.gate_up, "layer weight products", parent="MLP activation")
        timer.watch(layer.mlp.down, "layer weight products", parent="MLP activation")
        timer.watch(layer.attn_norm, "RMS norms")
        timer.watch(layer.mlp_norm, "RMS norms")


def decode_steps(  # type: ignore[no-untyped-def]
    model, steps: int, on_step: Callable[[float, float], None], after_prefill: Callable[[], None] = lambda: None
) -> None:
    """Prefill 64 random tokens, call `after_prefill`, then `steps` greedy decode steps with
    `on_step(step_s, pick_s)` after each."""
    from internvl.model.cache import KVCache
    from internvl.model.cpu_kernels import argmax_rows  # the greedy pick of `generate`

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, model.config.text.vocab_size - 100, (1, 64), generator=g)
    cache = KVCache.for_model(model, 1, 64 + steps + 1)
    with torch.inference_mode():
        logits = model(ids, cache=cache, last_only=True)[:, -1]
        token = argmax_rows(logits)
        after_prefill()
        for _ in range(steps):
            start = time.perf_counter()
            logits = model(token[:, None], cache=cache, last_only=True)[:, -1]
            picked = time.perf_counter()
            token = argmax_rows(logits)
            end = time.perf_counter()
            on_step(end - start, end - picked)


def projection_rates(model, bandwidth: float) -> list[str]:  # type: ignore[no-untyped-def]
    """Each projection of layer 0 and the output head timed alone at batch 1: weight GB/s and its share of
    the read bandwidth. A weight that fits the CPU's cache reads faster alone than inside a step."""
    layer = model.language.layers[0]
    modules = {
        "qkv": layer.attn.qkv,
        "o": layer.attn.o,
        "gate_up": layer.mlp.gate_up,
        "down": layer.mlp.down,
        "lm_head": model.language.lm_head,
    }
    from internvl.bench import weight_bytes

    rows = ["| projection | weight MB | ms alone | GB/s | share of read bandwidth |", "|---|---:|---:|---:|---:|"]
    with torch.inference_mode():
        for name, module in modules.items():
            x = torch.randn(
                1, 1, model.config.text.hidden_size if name != "down" else model.config.text.intermediate_size
            )
            repeats = 20 if name == "lm_head" else 200
            for _ in range(5):
                module(x)
            start = time.perf_counter()
            for _ in range(repeats):
                module(x)
            seconds = (time.perf_counter() - start) / repeats
            size = weight_bytes(module)
            rate = size / seconds / 1e9
            rows.append(
                f"| {name} | {size / 1e6:.1f} | {1000 * seconds:.3f} | {rate:.1f} | {100 * rate / bandwidth:.0f}% |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--quantize", choices=["int8", "int4"], default=None, help="default: fp32, packed")
    parser.add_argument("--unfused", action="store_true", help="DecoderLayer's decode steps (the split by part)")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()

    from common import machine_line, publish  # benchmarks/common.py

    from internvl.bench import decoder_bytes_per_token, read_bandwidth_gb_s

    model = build(args.quantize)
    if args.unfused:
        from internvl.model.llm import DecoderLayer

        model.language.use_layer_kind(DecoderLayer)
    plain: list[float] = []
    decode_steps(model, 4, lambda s, p: None)  # warm-up
    decode_steps(model, args.steps, lambda s, p: plain.append(s))
    timer = ModuleTimer()
    watch_decoder(model, timer)
    hooked: list[float] = []
    picks: list[float] = []
    decode_steps(model, args.steps, lambda s, p: (hooked.append(s), picks.append(p)), timer.seconds.clear)
    timer.remove()

    n = args.steps
    step_ms = 1000 * sum(hooked) / n
    parts = {name: 1000 * seconds / n for name, seconds in timer.seconds.items()}
    parts["greedy pick (argmax_rows)"] = 1000 * sum(picks) / n
    parts["rest (Python, rotary tables, cache, framework)"] = step_ms - sum(parts.values())
    bandwidth = read_bandwidth_gb_s()
    weight_bytes = decoder_bytes_per_token(model)
    limit_ms = 1000 * weight_bytes / (bandwidth * 1e9)  # the limit `internvl bench` uses (read bandwidth / bytes)
    plain_ms = 1000 * sorted(plain)[n // 2]
    mode_line = {
        None: "fp32 (`fast_fp32_linears`)",
        "int8": "int8 (`quantize_int8`)",
        "int4": "int4 (`quantize_int4`)",
    }[args.quantize]
    lines = [
        f"## Where a batch-1 decode step of the 1B shape goes, {args.quantize or 'fp32'} (benchmarks/profile_decode.py)",
        "",
        machine_line(),
        "",
        f"{mode_line}, {'unfused' if args.unfused else 'fused'} layers; {n} steps after a 64-token prompt. Median step without hooks "
        f"{plain_ms:.1f} ms; with the timing hooks {step_ms:.1f} ms (mean). Weights read per token "
        f"{weight_bytes / 1e9:.2f} GB; read bandwidth {bandwidth:.1f} GB/s, so the limit `internvl bench` uses is "
        f"{limit_ms:.1f} ms a step: the step runs at {100 * limit_ms / plain_ms:.0f}% of it.",
        "",
        "| part | ms per step | share |",
        "|---|---:|---:|",
    ]
    for name, ms in sorted(parts.items(), key=lambda item: -item[1]):
        lines.append(f"| {name} | {ms:.2f} | {100 * ms / step_ms:.0f}% |")
    lines += ["", "Each projection alone (layer 0; the same shapes in every layer):", ""]
    lines += projection_rates(model, bandwidth)
    publish(lines, append=args.append)


if __name__ == "__main__":
    main()
