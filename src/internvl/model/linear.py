"""How the model's matrix products run: one `Linear` for every projection, and a weight-only int8 mode.

Why not plain `nn.Linear`: on a CPU without native bf16 instructions (no AVX512-BF16 / AMX), PyTorch
emulates bf16 arithmetic. A bf16 matrix-vector product is still about twice as fast as fp32, because
decoding one token is bound by reading the weights and bf16 weights are half the bytes; but a bf16
matrix-matrix product (a prefill, the vision encoder, a large decode batch) runs at about 20 GFLOP/s
against about 150 in fp32 on the 2-core development machine (BENCHMARKS.md).
`Linear` therefore keeps bf16 weights in memory and computes products with more than
`BF16_MAX_EMULATED_ROWS` rows in fp32 on such CPUs. Everywhere else (CUDA, CPUs with AMX or
AVX512-BF16, fp32 weights) it is exactly `nn.Linear`. Checkpoint keys are unchanged.

`Int8Linear` stores each output row as int8 with one bf16 scale (symmetric, per channel) and multiplies
with PyTorch's weight-only int8 kernel (`aten._weight_int8pack_mm`, bf16 activations), reading a
quarter of fp32's bytes per token. `quantize_int8(module)` swaps every `Linear` below `module` for one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Up to 16 rows the emulated bf16 product beats converting the weights to fp32 and multiplying there; at
# 32 rows it no longer does (InternVL3-1B's layers on the 2-core development CPU, 2026-11-22).
BF16_MAX_EMULATED_ROWS = 16


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (AMX tiles or AVX512-BF16)."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


CPU_HAS_NATIVE_BF16 = cpu_has_native_bf16()


class Linear(nn.Linear):
    """`nn.Linear`, except that big bf16 products on a CPU without native bf16 are computed in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.weight.dtype == torch.bfloat16
            and x.device.type == "cpu"
            and not CPU_HAS_NATIVE_BF16
            and x.numel() > BF16_MAX_EMULATED_ROWS * x.shape[-1]
        ):
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), bias).to(x.dtype)
        return F.linear(x, self.weight, self.bias)


class Int8Linear(nn.Module):
    """Weight-only int8 linear layer: y = (x @ int8_weight.T) * scale + bias, activations in bf16."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # (out,)
        quantized = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight_int8", quantized)  # (out, in)
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16))
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if rows.device.type == "cpu":
            out = torch.ops.aten._weight_int8pack_mm(rows, self.weight_int8, self.scale)
        else:  # no packed kernel assumed: dequantize on the fly
            out = F.linear(rows, self.weight_int8.to(torch.bfloat16)) * self.scale
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


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
    """Every `nn.Linear` below `module` (but `keep`) becomes an `Int8Linear`, in place; returns `module`.

    A tied output head (sharing the embedding's weight) is quantized as its own copy; the embedding
    itself keeps its dtype (its rows are gathered, not multiplied).
    """
    return replace_linears(module, lambda layer: Int8Linear(layer.weight, layer.bias), keep)


class PackedLinear(nn.Module):
    """fp32 linear layer with its weight pre-packed for oneDNN (inference only).

    Why: PyTorch multiplies fp32 `nn.Linear` with MKL's sgemm, which on the development CPU (AMD EPYC)
    runs the 1-16 row products of decoding 2-3x slower than oneDNN with a pre-packed weight, and a
    one-row product at about half the memory bandwidth (`benchmarks/bench_matmul.py`). The packed
    weight replaces the plain one (no extra memory); it cannot be trained or saved.
    """

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


def pack_linear_weights(module: nn.Module, keep: tuple[str, ...] = ("router",)) -> nn.Module:
    """Every fp32 CPU `nn.Linear` below `module` (but `keep`) becomes a `PackedLinear`, in place; returns
    `module`."""

    def pack(layer: nn.Linear) -> nn.Module:
        if layer.weight.dtype == torch.float32 and layer.weight.device.type == "cpu":
            return PackedLinear(layer.weight, layer.bias)
        return layer

    return replace_linears(module, pack, keep)


def use_fp32_vision_if_bf16_is_emulated(model: nn.Module) -> None:
    """With a bf16 decoder on a CPU without native bf16, move the vision encoder and projector (in place)
    to fp32: they are all large matrix products, which such a CPU runs several times faster in fp32."""
    weight = model.language.embed.weight
    if weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and not CPU_HAS_NATIVE_BF16:
        model.vision.float()
        model.projector.float()
