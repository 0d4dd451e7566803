"""How the model's matrix products run on this machine, chosen once when a model is prepared.

The model code uses plain `nn.Linear`. `choose_cpu_kernels(model)`, called by `internvl.load` (and the
benchmarks), looks at the weights' dtype and this CPU once and swaps modules where another kernel is
faster (as gpt-fast swaps modules at load time), so the layers read the same on every machine:

* bf16 weights on a CPU without native bf16 (no AVX512-BF16, no AMX): PyTorch emulates bf16 there. A
  bf16 matrix-vector product is still about twice as fast as fp32 (decoding is bound by reading the
  weights, and bf16 weights are half the bytes), but a bf16 matrix-matrix product (a prefill, the
  vision encoder, a large decode batch) is several times slower than fp32 (BENCHMARKS.md). The
  decoder's layers become `EmulatedBf16Linear` (bf16 weights, products with more than
  `BF16_MAX_EMULATED_ROWS` rows in fp32), and the vision encoder and projector move to fp32.
* Everywhere else (CUDA, native bf16, fp32 weights) the projections stay as they are.
* On a CPU where our compiled kernels are built (`internvl.model.cpu_kernels`), the decoder's RMS norms
  become `KernelRMSNorm` (one pass per row, for fp32 inference) and its layers `KernelDecoderLayer`
  (`internvl.model.kernel_layer`: a decode step of a layer is one kernel call).

`quantize_int8(module)` and `quantize_int4(module)` swap every `nn.Linear` below `module` for a quantized
layer. Where our compiled CPU kernels are built (`internvl.model.cpu_kernels`: a C++ compiler is at hand)
that is a `BlockQuantLinear` in llama.cpp's q8_0 or q4_0 format, which decodes at the memory bandwidth.
Elsewhere: `Int8Linear` stores each output row as int8 with one scale (symmetric, per channel) and, on a
CPU, quantizes the activations to 8 bits per call too (PyTorch's dynamic-quantized linear kernel);
`Int4Linear` stores groups of `INT4_GROUP_SIZE` input weights of each output row as 4-bit integers with a
bf16 scale and offset per group (asymmetric min-max, gpt-fast's scheme) and multiplies with PyTorch's CPU
int4 kernel (`aten._weight_int4pack_mm_for_cpu`).
For fp32, `fast_fp32_linears(module)` swaps in `KernelLinear` (our kernel for decoding, the same
parameters) or, without our kernels, `PackedLinear` (weights pre-packed for oneDNN). Checkpoint keys are
unchanged by all of them; none of them can be saved back except through the original layers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from internvl.model.cpu_kernels import BLOCK_SIZE, block_kernels, interleave, quantize_q4_0, quantize_q8_0
from internvl.model.kernel_layer import KernelDecoderLayer
from internvl.model.norm import RMSNorm

if TYPE_CHECKING:
    from internvl.model.internvl import InternVL

# Up to this many rows an emulated bf16 product beats converting the weights to fp32 and multiplying
# there (InternVL3-1B's layers; `benchmarks/bench_matmul.py` measures it on the machine at hand).
BF16_MAX_EMULATED_ROWS = 16


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (AMX tiles or AVX512-BF16)."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


CPU_HAS_NATIVE_BF16 = cpu_has_native_bf16()


SwappedLinear = TypeVar("SwappedLinear", bound="SharedParametersLinear")


class SharedParametersLinear(nn.Linear):
    """An `nn.Linear` with another forward, made from a loaded layer: the parameters are shared, not copied,
    so a model with these layers keeps its memory and still saves as before."""

    @classmethod
    def from_linear(cls: type[SwappedLinear], layer: nn.Linear) -> SwappedLinear:
        """The same parameters behind this class's forward."""
        swapped = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        swapped.weight, swapped.bias = layer.weight, layer.bias
        return swapped


class EmulatedBf16Linear(SharedParametersLinear):
    """bf16 weights on a CPU that emulates bf16: big products are computed in fp32 (exact products of the
    stored bf16 numbers, rounded once), small ones (decoding) stay in bf16, which is faster there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() > BF16_MAX_EMULATED_ROWS * x.shape[-1]:
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), bias).to(x.dtype)
        return F.linear(x, self.weight, self.bias)


# PyTorch's dynamic-quantized linear kernel (torch.ao); without it, int8 weights are dequantized per call
DYNAMIC_INT8_KERNEL = hasattr(torch.ops.quantized, "linear_dynamic") and hasattr(torch.ops.quantized, "linear_prepack")


class Int8Linear(nn.Module):
    """int8 linear layer: weights int8 per output channel (symmetric); on a CPU the activations are also
    quantized to 8 bits on the fly, per call (one scale and zero point for the call's rows: per token when
    decoding), and multiplied by PyTorch's dynamic-quantized kernel (`quantized::linear_dynamic`, fbgemm
    on x86), as llama.cpp's q8_0 quantizes activations per block.

    Why not weight-only: on a CPU without native bf16, PyTorch's weight-only int8 kernel
    (`aten._weight_int8pack_mm`) read weights at about 14 GB/s and prefilled slower than fp32; the
    dynamic kernel reads them at 24-30 GB/s and prefills faster than fp32, for a next-token KL to fp32 of
    0.007-0.011 nats on the 1B shape (BENCHMARKS.md). Elsewhere (CUDA) the weights are dequantized per call.
    """

    weight_int8: torch.Tensor | None
    scale: torch.Tensor | None
    bias: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # (out,)
        self.packed = None  # the CPU kernel's packed weights (which hold their own copy of the int8 values)
        self.has_bias = bias is not None
        if weight.device.type == "cpu" and DYNAMIC_INT8_KERNEL:
            zero_points = torch.zeros(self.out_features, dtype=torch.long)
            with warnings.catch_warnings():  # torch.ao's quantized tensors are deprecated (torch pinned < 2.15)
                warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")
                quantized = torch.quantize_per_channel(weight, scale.double(), zero_points, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.detach().float())
            self.register_buffer("weight_int8", None)
            self.register_buffer("scale", None)
            self.register_buffer("bias", None)
        else:
            quantized = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
            self.register_buffer("weight_int8", quantized)  # (out, in)
            self.register_buffer("scale", scale.to(weight.dtype))
            self.register_buffer("bias", None if bias is None else bias.detach())

    @property
    def packed_bytes(self) -> int:
        """Bytes held by the packed weights (int8 values, fp32 scales and bias), which are no buffers."""
        if self.packed is None:
            return 0
        return self.out_features * (self.in_features + 4 + (4 if self.has_bias else 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.packed is not None:
            # reduce_range: 7-bit activations, so that fbgemm's AVX2 int8 products cannot overflow int16
            out = torch.ops.quantized.linear_dynamic(rows.float().contiguous(), self.packed, True)
        else:
            assert self.weight_int8 is not None and self.scale is not None
            out = F.linear(rows, self.weight_int8.to(rows.dtype)) * self.scale.to(rows.dtype)
            if self.bias is not None:
                out = out + self.bias.to(rows.dtype)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


INT4_GROUP_SIZE = 32  # input weights per scale / offset pair
INT4_ROW_MULTIPLE = 16  # the CPU kernel packs output rows in blocks of 16


class Int4Linear(nn.Module):
    """Weight-only int4 linear layer, grouped along the input: w = (q - 8) * scale + offset per group of
    `group_size` inputs of an output row, q in 0..15; activations in bf16."""

    weight_packed: torch.Tensor
    scales_and_zeros: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group_size: int = INT4_GROUP_SIZE) -> None:
        super().__init__()
        weight = weight.detach().float()
        out_features, in_features = weight.shape
        if in_features % group_size:
            raise ValueError(f"in_features {in_features} is not a multiple of the int4 group size {group_size}")
        padded_rows = -out_features % INT4_ROW_MULTIPLE  # the kernel packs rows in blocks: pad with zeros
        weight = F.pad(weight, (0, 0, 0, padded_rows))
        groups = weight.reshape(-1, group_size)
        low, high = groups.amin(1), groups.amax(1)
        scale = (high - low).clamp(min=1e-6) / 15
        offset = low + scale * 8
        quantized = ((groups - low[:, None]) / scale[:, None]).round().clamp(0, 15).to(torch.int32)
        quantized = quantized.reshape(out_features + padded_rows, in_features)
        constants = torch.stack([scale.reshape(len(quantized), -1), offset.reshape(len(quantized), -1)], dim=2)
        self.register_buffer("scales_and_zeros", constants.transpose(0, 1).contiguous().to(torch.bfloat16))
        self.register_buffer("weight_packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(quantized, 1))
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16))
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows, self.weight_packed, self.group_size, self.scales_and_zeros
        )[:, : self.out_features]
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


class BlockQuantLinear(nn.Module):
    """q8_0 or q4_0 linear layer (llama.cpp's block formats: one fp16 scale per 32 inputs of a row) on our
    compiled CPU kernels (`internvl.model.cpu_kernels`), the activations quantized to int8 per block of 32
    on the fly. Decoding runs at the memory bandwidth (docs/cpu-speed.md): 8 output rows are interleaved
    so that a block's products for the 8 rows come out of the integer units as one vector, and decoding
    reads 16 rows (two such halves) as one stream.

    `quantize_int8` / `quantize_int4` build these when the kernels are built on this machine, and fall back
    to `Int8Linear` / `Int4Linear` (PyTorch's kernels) where they are not.
    """

    weight_values: torch.Tensor
    weight_scales: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, kind: str) -> None:
        super().__init__()
        if block_kernels() is None:
            raise RuntimeError("BlockQuantLinear needs internvl's CPU kernels, which are not built on this machine")
        quantize = {"q8_0": quantize_q8_0, "q4_0": quantize_q4_0}[kind]
        values, scales = interleave(*quantize(weight))
        self.register_buffer("weight_values", values)
        self.register_buffer("weight_scales", scales)
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        self.in_features, self.out_features, self.kind = weight.shape[1], weight.shape[0], kind
        kernels = torch.ops.internvl_cpu  # loaded by block_kernels()
        self.linear = kernels.q8_0x8_linear if kind == "q8_0" else kernels.q4_0x8_linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            return self.forward(x.float()).to(x.dtype)
        # one call: reshaping, the bias and the padding rows are handled in the kernel (each small PyTorch
        # operation costs microseconds, and a decode step makes about a hundred of these calls)
        return self.linear(x, self.weight_values, self.weight_scales, self.bias, self.out_features)

    def kernel_operands(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What `KernelDecoderLayer`'s fused step multiplies with: values, scales, bias."""
        return self.weight_values, self.weight_scales, self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kind={self.kind}"


def _block_kernels_fit(layer: nn.Linear) -> bool:
    """Our kernels are built here and can take this layer (a CPU weight, in-features a multiple of 32)."""
    return layer.weight.device.type == "cpu" and layer.in_features % BLOCK_SIZE == 0 and block_kernels() is not None


def replace_linears(
    module: nn.Module, make: Callable[[nn.Linear], nn.Module], keep: tuple[str, ...] = ("router",)
) -> nn.Module:
    """Replace (in place) every `nn.Linear` below `module` by `make(layer)`; returns `module`.

    Layers named in `keep` stay as they are: a MoE router is tiny, and rounding or reordering its
    logits would change which experts run. `make` may return the layer itself to leave it unchanged.
    """
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            if name not in keep:
                setattr(module, name, make(child))
        else:
            replace_linears(child, make, keep)
    return module


def quantize_int8(module: nn.Module, keep: tuple[str, ...] = ("router",)) -> nn.Module:
    """Every `nn.Linear` below `module` (but `keep`) becomes an int8 layer, in place; returns `module`: a
    q8_0 `BlockQuantLinear` where our CPU kernels are built and the in-features are a multiple of 32,
    otherwise an `Int8Linear`.

    A tied output head (sharing the embedding's weight) is quantized as its own copy; the embedding
    itself keeps its dtype (its rows are gathered, not multiplied).
    """

    def make(layer: nn.Linear) -> nn.Module:
        if _block_kernels_fit(layer):
            return BlockQuantLinear(layer.weight, layer.bias, "q8_0")
        return Int8Linear(layer.weight, layer.bias)

    return pack_block_weights(replace_linears(module, make, keep))


def quantize_int4(module: nn.Module, keep: tuple[str, ...] = ("router",)) -> nn.Module:
    """Every CPU `nn.Linear` below `module` (but `keep`) with in-features a multiple of 32 becomes an int4
    layer, in place: a q4_0 `BlockQuantLinear` where our CPU kernels are built, otherwise an `Int4Linear`
    (PyTorch's grouped int4 kernel). The others are left as they are. Returns `module`."""

    def make(layer: nn.Linear) -> nn.Module:
        if _block_kernels_fit(layer):
            return BlockQuantLinear(layer.weight, layer.bias, "q4_0")
        if layer.weight.device.type != "cpu" or layer.in_features % INT4_GROUP_SIZE:
            return layer
        return Int4Linear(layer.weight, layer.bias)

    return pack_block_weights(replace_linears(module, make, keep))


def pack_block_weights(module: nn.Module) -> nn.Module:
    """Move the values and scales of every `BlockQuantLinear` below `module` into one freshly allocated buffer
    (each tensor becomes a view of it, 64-byte aligned, in module order), in place; returns `module`.

    Why: batch-1 decoding of the 1B shape stepped 1.02x faster with the weights so packed than as
    quantization left them (int8 and int4, fast minutes; docs/cpu-speed.md); a buffer holding the layers in
    reverse order was as fast, so what counts is likely where the pages lie in physical memory after
    quantizing's temporaries, not their order. Call it before the first decode step: a decoder layer's
    gathered operands are renewed for a new cache, not for moved buffers.
    """
    layers = [layer for layer in module.modules() if isinstance(layer, BlockQuantLinear)]
    if not layers:
        return module
    names = ("weight_values", "weight_scales")
    buffer = torch.empty(
        sum(_aligned(getattr(layer, name).nbytes) for layer in layers for name in names) + 64, dtype=torch.uint8
    )
    offset = -buffer.data_ptr() % 64
    for layer in layers:
        for name in names:
            tensor = getattr(layer, name)
            view = buffer[offset : offset + tensor.nbytes].view(tensor.dtype).view(tensor.shape)
            view.copy_(tensor)
            setattr(layer, name, view)  # the old tensor is freed here: the peak is one layer's weights more
            offset += _aligned(tensor.nbytes)
    return module


def _aligned(size: int, alignment: int = 64) -> int:
    return -(-size // alignment) * alignment


class PackedLinear(nn.Module):
    """fp32 linear layer with its weight pre-packed for oneDNN (inference only).

    Why: PyTorch multiplies fp32 `nn.Linear` with MKL's sgemm, which on AMD CPUs has run the 1-16 row
    products of decoding 2-3x slower than oneDNN with a pre-packed weight (`benchmarks/bench_matmul.py`,
    BENCHMARKS.md). The packed
    weight replaces the plain one (no extra memory); it cannot be trained or saved.
    """

    weight_packed: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight_packed", torch.ops.mkldnn._reorder_linear_weight(weight.detach().float(), 1))
        self.register_buffer("bias", None if bias is None else bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float().contiguous()
        out = torch.ops.mkldnn._linear_pointwise(rows, self.weight_packed, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def can_pack() -> bool:
    """oneDNN is part of this PyTorch build (the CPU wheels have it)."""
    return torch.backends.mkldnn.is_available()


CAN_USE_ONEDNN = can_pack()


# Up to this many rows our fp32 kernel beats oneDNN's packed weights and MKL (decoding, small batches);
# above it (prefills) oneDNN's matrix-matrix product wins (`benchmarks/bench_matmul.py`, BENCHMARKS.md).
KERNEL_MAX_ROWS = 16


class KernelLinear(SharedParametersLinear):
    """fp32 `nn.Linear` whose few-row products (decoding) run on our CPU kernel, which streams the weights
    at the memory bandwidth (docs/cpu-speed.md); many rows go to oneDNN, other dtypes and autograd through
    `nn.Linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu" or torch.is_grad_enabled():
            return super().forward(x)
        if x.numel() <= KERNEL_MAX_ROWS * self.in_features:
            return torch.ops.internvl_cpu.fp32_linear(x, self.weight, self.bias)
        if not CAN_USE_ONEDNN:
            return super().forward(x)
        # many rows: oneDNN, which takes the plain weight as fast as a pre-packed one here and beats MKL's
        # sgemm on AMD CPUs (`benchmarks/bench_matmul.py`)
        rows = x.reshape(-1, self.in_features).contiguous()
        out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)

    def kernel_operands(self) -> tuple[torch.Tensor, None, torch.Tensor | None] | None:
        """What `KernelDecoderLayer`'s fused step multiplies with (fp32 weights only): weight, no scales, bias."""
        if self.weight.dtype != torch.float32 or (self.bias is not None and self.bias.dtype != torch.float32):
            return None
        return self.weight, None, self.bias


def fast_fp32_linears(module: nn.Module, keep: tuple[str, ...] = ("router",)) -> nn.Module:
    """Every fp32 CPU `nn.Linear` below `module` (but `keep`) gets the fastest decoding path at hand, in
    place: a `KernelLinear` where our kernels are built, else a `PackedLinear` (oneDNN), else none.
    Returns `module`."""
    kernels = block_kernels() is not None

    def swap(layer: nn.Linear) -> nn.Module:
        if layer.weight.dtype != torch.float32 or layer.weight.device.type != "cpu":
            return layer
        if kernels:
            return KernelLinear.from_linear(layer)
        return PackedLinear(layer.weight, layer.bias) if CAN_USE_ONEDNN else layer

    return replace_linears(module, swap, keep)


class KernelRMSNorm(RMSNorm):
    """RMSNorm through our one-pass CPU kernel for fp32 inference (PyTorch's CPU `rms_norm` runs as several
    small operations: about 25 microseconds a call against 5, 49 calls per decoded token on the 1B shape).
    Anything else (other dtypes, devices, autograd) goes through `RMSNorm`."""

    @classmethod
    def from_norm(cls, norm: RMSNorm) -> "KernelRMSNorm":
        """The same weight (shared, not copied) behind this forward."""
        swapped = cls(norm.weight.shape[0], norm.eps)
        swapped.weight = norm.weight
        return swapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fits = x.dtype == torch.float32 and x.device.type == "cpu" and self.weight.dtype == torch.float32
        if not fits or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return super().forward(x)
        return torch.ops.internvl_cpu.rms_norm(x, self.weight, self.eps)


def choose_cpu_kernels(model: InternVL) -> None:
    """Adapt a loaded InternVL to this machine, in place (see the module docstring): on a CPU where our
    kernels are built, the decoder's RMS norms run on our kernel (`KernelRMSNorm`) and its decode steps as
    one call per layer (`KernelDecoderLayer`, once the projections are ours: `fast_fp32_linears`,
    `quantize_int8`, `quantize_int4`); bf16 weights on a CPU without native bf16 get `EmulatedBf16Linear`
    and an fp32 vision side."""
    weight = model.language.embed.weight
    if weight.device.type == "cpu" and block_kernels() is not None:
        for parent in model.language.modules():
            for name, child in list(parent.named_children()):
                if type(child) is RMSNorm:
                    setattr(parent, name, KernelRMSNorm.from_norm(child))
        model.language.use_layer_kind(KernelDecoderLayer)
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or CPU_HAS_NATIVE_BF16:
        return

    def swap(layer: nn.Linear) -> nn.Module:
        return EmulatedBf16Linear.from_linear(layer) if layer.weight.dtype == torch.bfloat16 else layer

    replace_linears(model.language, swap)
    model.vision.float()
    model.projector.float()
    for flash_part in (model.compressed_projector, model.router):  # they read the encoder's fp32 output
        if flash_part is not None:
            flash_part.float()
