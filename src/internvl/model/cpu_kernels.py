"""Our compiled CPU kernels (`csrc/block_quant.cpp`): built for this machine on first use, or absent.

The q8_0 and q4_0 products (llama.cpp's block formats, docs/cpu-speed.md), the fp32 decoding product, the
RMS norm and a decoder layer's decode step are C++ that the first process to ask compiles with `-march=native` against the installed PyTorch (about 20 s), into
`$XDG_CACHE_HOME/internvl/kernels/` (default `~/.cache`) under a name that hashes the source, the flags,
PyTorch's version and the CPU's flags; later processes load it in milliseconds. Where no C++ compiler is
at hand, or the build fails, `block_kernels()` returns None (logged once) and the layers use PyTorch's
own kernels. `INTERNVL_CPU_KERNELS=0` turns ours off.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "block_quant.cpp"
FLAGS = ["-O3", "-march=native", "-fopenmp", "-std=c++17", "-shared", "-fPIC", "-w"]
BLOCK_SIZE = 32  # inputs per block: one fp16 scale per 32 weights of an output row
GROUP_ROWS = 16  # output rows per group of the kernels' layout


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "internvl" / "kernels"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _build(compiler: str, library: Path) -> None:
    """Compile SOURCE into `library`, atomically (parallel test workers may build at once)."""
    from torch.utils import cpp_extension

    includes = [f"-I{path}" for path in cpp_extension.include_paths()]
    libraries = [f"-L{path}" for path in cpp_extension.library_paths()]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        partial = Path(scratch) / library.name
        command = [
            compiler,
            *FLAGS,
            abi,
            *includes,
            str(SOURCE),
            "-o",
            str(partial),
            *libraries,
            "-lc10",
            "-ltorch_cpu",
        ]
        subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(partial, library)


@functools.cache
def block_kernels() -> object | None:
    """`torch.ops.internvl_cpu` (`q8_0x8_linear`, `q4_0x8_linear`, `fp32_linear`, `rms_norm`,
    `decoder_layers_step`, `argmax_rows`) once built, or None."""
    if os.environ.get("INTERNVL_CPU_KERNELS", "1") == "0":
        return None
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        log.info("internvl CPU kernels unavailable (no C++ compiler): PyTorch's quantized kernels are used")
        return None
    key = hashlib.sha256(
        b"\0".join([SOURCE.read_bytes(), " ".join(FLAGS).encode(), torch.__version__.encode(), _cpu_flags().encode()])
    ).hexdigest()[:16]
    library = _cache_dir() / f"block_quant-{key}.so"
    try:
        if not library.exists():
            # a warning, so that the one slow first start is explained even where only warnings are shown
            log.warning("building internvl's CPU kernels for this machine (once, about 20 s) into %s", library)
            _build(compiler, library)
        torch.ops.load_library(str(library))
    except subprocess.CalledProcessError as error:
        last_line = (error.stderr or "").strip().splitlines()[-1:] or ["?"]
        log.warning("internvl CPU kernels failed to build (%s): PyTorch's kernels are used", last_line[0])
        return None
    except OSError as error:
        log.warning("internvl CPU kernels failed to load (%s): PyTorch's kernels are used", error)
        return None
    return torch.ops.internvl_cpu


def argmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """`logits.argmax(dim=-1)` for (rows, vocab) logits: through our kernel for float32 on the CPU (the same
    index, first of equals, NaN the largest; 20 microseconds over 151,936 logits where PyTorch's CPU argmax
    takes 130), PyTorch's elsewhere."""
    on_kernel = logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.dim() == 2
    # the checks first: other devices and dtypes must not start a build of the kernels
    kernels = block_kernels() if on_kernel and logits.shape[1] and not logits.requires_grad else None
    if kernels is None:
        return logits.argmax(dim=-1)
    return kernels.argmax_rows(logits)  # type: ignore[attr-defined]


def quantize_q8_0(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weights -> int8 values (out, in) and fp16 scales (out, in / 32): per block of 32
    inputs, scale = max |w| / 127 and value = w / scale rounded half away from zero (llama.cpp's q8_0,
    bit for bit: tests/test_cpu_kernels.py checks it against the `gguf` package)."""
    blocks = _blocks(weight)
    scale = blocks.abs().amax(dim=2) / 127.0
    inverse = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
    scaled = blocks * inverse[..., None]
    values = (scaled.sign() * torch.floor(scaled.abs() + 0.5)).to(torch.int8)  # halves away from zero, as roundf
    return values.reshape(weight.shape), scale.to(torch.float16)


def quantize_q4_0(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weights -> packed 4-bit values (out, in / 2) uint8 and fp16 scales (out, in / 32):
    per block, scale = (the value of largest magnitude) / -8 so that it maps to -8 exactly, nibble =
    floor(w / scale + 8.5) in 0..15 (llama.cpp's q4_0, bit for bit); byte j of a block holds input j (low
    nibble) and input j + 16 (high nibble)."""
    blocks = _blocks(weight)
    extreme = blocks.gather(2, blocks.abs().argmax(dim=2, keepdim=True)).squeeze(2)
    scale = extreme / -8.0
    inverse = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
    nibbles = torch.floor(blocks * inverse[..., None] + 8.5).clamp(0, 15).to(torch.uint8)
    low, high = nibbles[..., : BLOCK_SIZE // 2], nibbles[..., BLOCK_SIZE // 2 :]
    packed = low | (high << 4)
    return packed.reshape(weight.shape[0], -1), scale.to(torch.float16)


def interleave(values: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q8_0 or q4_0 rows -> the kernels' layout (groups of 16 rows, two halves of 8 rows interleaved 4 bytes at a
    time, csrc/block_quant.cpp): values (ceil(out / 16), blocks, 512 or 256) uint8, q8_0's as value + 128, and
    scales (ceil(out / 16), blocks, 16); the rows past `out` have zero scales."""
    out_features, blocks = scales.shape
    padding = -out_features % GROUP_ROWS
    if values.dtype == torch.int8:  # q8_0: stored as value + 128, the unsigned operand of the kernel's products
        values = (values.to(torch.int16) + 128).to(torch.uint8)
    values = F.pad(values, (0, 0, 0, padding))
    values = values.reshape(-1, 2, 8, blocks, values.shape[1] // blocks // 4, 4)  # group, half, row, block, run, byte
    values = values.permute(0, 3, 1, 4, 2, 5).reshape(len(values), blocks, -1)
    scales = F.pad(scales, (0, 0, 0, padding)).reshape(-1, GROUP_ROWS, blocks).transpose(1, 2)
    return values.contiguous(), scales.contiguous()


def dequantize_q8_0(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The fp32 weights that q8_0 `values` and `scales` stand for (for tests and other devices)."""
    blocks = values.float().reshape(values.shape[0], -1, BLOCK_SIZE)
    return (blocks * scales.float()[..., None]).reshape(values.shape)


def dequantize_q4_0(packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The fp32 weights that q4_0 `packed` and `scales` stand for (for tests and other devices)."""
    blocks = packed.reshape(packed.shape[0], -1, BLOCK_SIZE // 2)
    nibbles = torch.cat([blocks & 0x0F, blocks >> 4], dim=2).float() - 8
    return (nibbles * scales.float()[..., None]).reshape(packed.shape[0], -1)


def _blocks(weight: torch.Tensor) -> torch.Tensor:
    out_features, in_features = weight.shape
    if in_features % BLOCK_SIZE:
        raise ValueError(f"in_features {in_features} is not a multiple of the block size {BLOCK_SIZE}")
    return weight.detach().float().reshape(out_features, -1, BLOCK_SIZE)
