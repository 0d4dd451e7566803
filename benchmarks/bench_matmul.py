"""The matrix products behind `internvl.model.linear`'s choices, on one InternVL3-1B layer shape.

For x (rows, 896) times the fused gate/up weight (9728, 896): fp32 (MKL), fp32 with the weight
pre-packed for oneDNN (`PackedLinear`, what `internvl.load` uses on the CPU), emulated-or-native bf16, bf16
weights converted to fp32 per call (what `Linear` does for more than `BF16_MAX_EMULATED_ROWS` rows on a
CPU without native bf16), and weight-only int8 (`aten._weight_int8pack_mm`, bf16 activations). Prints
milliseconds per product (best of 10) and the weight bytes read per second; `--append` adds the table
to BENCHMARKS.md.

    python benchmarks/bench_matmul.py --append
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, publish  # noqa: E402

from internvl.model.linear import CPU_HAS_NATIVE_BF16, Int8Linear, PackedLinear  # noqa: E402

OUT, IN = 9728, 896


def best_ms(work, repeats: int = 10) -> float:  # type: ignore[no-untyped-def]
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    weight = torch.randn(OUT, IN) * 0.02
    weight_bf16 = weight.bfloat16()
    int8 = Int8Linear(weight, None)
    packed = PackedLinear(weight, None)
    lines = [
        f"### Matrix products of one InternVL3-1B layer shape, x (rows, {IN}) @ W ({OUT}, {IN}).T "
        "(`python benchmarks/bench_matmul.py`)",
        "",
        f"{machine_line()}; native bf16 on this CPU: {CPU_HAS_NATIVE_BF16}; torch threads {torch.get_num_threads()}",
        "",
        "| rows | fp32 ms | fp32 packed (oneDNN) ms | bf16 ms | bf16 weights -> fp32 product ms | int8 weights ms "
        "| fp32 GFLOP/s | packed GFLOP/s | bf16 GFLOP/s | fp32 weight GB/s | packed weight GB/s | bf16 weight GB/s "
        "| int8 weight GB/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with torch.no_grad():
        for rows in (1, 8, 16, 32, 64, 256):
            x = torch.randn(rows, IN)
            xb = x.bfloat16()
            fp32 = best_ms(lambda x=x: F.linear(x, weight))
            fp32_packed = best_ms(lambda x=x: packed(x))
            bf16 = best_ms(lambda xb=xb: F.linear(xb, weight_bf16))
            upcast = best_ms(lambda xb=xb: F.linear(xb.float(), weight_bf16.float()).bfloat16())
            q = best_ms(lambda xb=xb: int8(xb))
            flop = 2 * rows * OUT * IN
            lines.append(
                f"| {rows} | {fp32:.2f} | {fp32_packed:.2f} | {bf16:.2f} | {upcast:.2f} | {q:.2f} | "
                f"{flop / fp32 / 1e6:.0f} | {flop / fp32_packed / 1e6:.0f} | {flop / bf16 / 1e6:.0f} | "
                f"{OUT * IN * 4 / fp32 / 1e6:.1f} | {OUT * IN * 4 / fp32_packed / 1e6:.1f} | "
                f"{OUT * IN * 2 / bf16 / 1e6:.1f} | {OUT * IN / q / 1e6:.1f} |"
            )
    publish(lines, args.append)


if __name__ == "__main__":
    main()
