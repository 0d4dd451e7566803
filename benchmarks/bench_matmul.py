"""The matrix products behind `internvl.model.linear`'s choices, on one InternVL3-1B layer shape.

For x (rows, 896) times the fused gate/up weight (9728, 896): fp32 (MKL), fp32 with the weight
pre-packed for oneDNN (`PackedLinear`), our fp32 kernel (`internvl_cpu.fp32_linear`, what `KernelLinear`
runs up to `KERNEL_MAX_ROWS` rows), emulated-or-native bf16, bf16 weights converted to fp32 per call (what
`EmulatedBf16Linear` does for more than `BF16_MAX_EMULATED_ROWS` rows on a CPU without native bf16),
PyTorch's int8 (`Int8Linear`) and our q8_0 / q4_0 kernels (`BlockQuantLinear`). Prints milliseconds per
product (best of 10) and the weight bytes read per second of the fp32 and quantized products; `--append`
adds the table to BENCHMARKS.md.

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

from internvl.model.cpu_kernels import block_kernels  # noqa: E402
from internvl.model.linear import CPU_HAS_NATIVE_BF16, BlockQuantLinear, Int8Linear, PackedLinear  # noqa: E402

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
    kernels = block_kernels()
    q8 = BlockQuantLinear(weight, None, "q8_0") if kernels is not None else None
    q4 = BlockQuantLinear(weight, None, "q4_0") if kernels is not None else None
    lines = [
        f"### Matrix products of one InternVL3-1B layer shape, x (rows, {IN}) @ W ({OUT}, {IN}).T "
        "(`python benchmarks/bench_matmul.py`)",
        "",
        f"{machine_line()}; native bf16 on this CPU: {CPU_HAS_NATIVE_BF16}; torch threads {torch.get_num_threads()}; "
        f"our kernels built: {kernels is not None}. Milliseconds per product, best of 10; GB/s = weight bytes / time.",
        "",
        "| rows | fp32 MKL | fp32 oneDNN packed | fp32 ours | bf16 | bf16 weights -> fp32 | int8 PyTorch | q8_0 ours "
        "| q4_0 ours | fp32 packed GB/s | fp32 ours GB/s | q8_0 ours GB/s | q4_0 ours GB/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    missing = float("nan")
    with torch.no_grad():
        for rows in (1, 2, 4, 8, 16, 32, 64, 256):
            x = torch.randn(rows, IN)
            xb = x.bfloat16()
            fp32 = best_ms(lambda x=x: F.linear(x, weight))
            fp32_packed = best_ms(lambda x=x: packed(x))
            ours = best_ms(lambda x=x: kernels.fp32_linear(x, weight, None)) if kernels is not None else missing
            bf16 = best_ms(lambda xb=xb: F.linear(xb, weight_bf16))
            upcast = best_ms(lambda xb=xb: F.linear(xb.float(), weight_bf16.float()).bfloat16())
            q = best_ms(lambda xb=xb: int8(xb))
            ours_q8 = best_ms(lambda x=x: q8(x)) if q8 is not None else missing
            ours_q4 = best_ms(lambda x=x: q4(x)) if q4 is not None else missing
            lines.append(
                f"| {rows} | {fp32:.2f} | {fp32_packed:.2f} | {ours:.2f} | {bf16:.2f} | {upcast:.2f} | {q:.2f} | "
                f"{ours_q8:.2f} | {ours_q4:.2f} | {OUT * IN * 4 / fp32_packed / 1e6:.1f} | "
                f"{OUT * IN * 4 / ours / 1e6:.1f} | {OUT * IN * 34 / 32 / ours_q8 / 1e6:.1f} | "
                f"{OUT * IN * 18 / 32 / ours_q4 / 1e6:.1f} |"
            )
    publish(lines, args.append)


if __name__ == "__main__":
    main()
