"""A decoder layer whose decode steps on a CPU run as one call of our compiled kernels.

A decode step of one layer is about 30 small PyTorch operations (two norms, the rotary, the cache write,
attention, the activation, the residual adds) around four projections. On a CPU each costs microseconds of
dispatch on a few hundred numbers; on the 1B shape they added up to about 7 ms a token, more than the whole
weight reading of an int4 step (docs/cpu-speed.md). `internvl_cpu::decoder_layers_step`
(`csrc/block_quant.cpp`) does the arithmetic of `DecoderLayer` for all the decoder's layers in one call, the
projections on our kernels.

`choose_cpu_kernels` swaps these in for the decoder's layers where our kernels are built. They take the
decode steps of generation (`KVCache`) and of the server's continuous batching (`SlotCache`: each row
writes at its own length). Everything else goes through `DecoderLayer` unchanged: prefills, autograd,
other dtypes and devices, MoE layers, and projections that are no `KernelProjection` (PyTorch's quantized
fallbacks, LoRA wrappers, plain `nn.Linear`).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from internvl.model.cache import Cache
from internvl.model.llm import DecoderLayer, GatedMLP

LayerWeights = tuple[list[torch.Tensor], list[int]]  # the kernel's 16 weight tensors and 4 projection widths
# every layer's weights and widths, one after another, and the cache: (keys, values, write_at)
StackOperands = tuple[list[torch.Tensor], list[int], tuple[torch.Tensor, torch.Tensor, list[int]]]
NONE = torch.empty(0)  # the kernel's "absent" tensor: a bias, fp32's scales, a non-Qwen3 layer's head norms


@runtime_checkable
class KernelProjection(Protocol):
    """A projection our fused kernel can run: `KernelLinear` (fp32) and `BlockQuantLinear` (q8_0, q4_0)."""

    out_features: int

    def kernel_operands(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None:
        """(fp32 weight, None, bias) or (q8_0/q4_0 values, scales, bias); None if not at hand."""
        ...


class KernelDecoderLayer(DecoderLayer):
    """`DecoderLayer` whose decode steps (one new token per row, with a `KVCache` or the server's `SlotCache`)
    run on `internvl_cpu::decoder_layers_step`: the decoder's layers all in one call (`run_stack`), or one
    layer (`forward`); made with `KernelDecoderLayer.from_layer(layer, config)` (the same modules, so the model
    saves as before).

    The kernel's weights are gathered once per cache (once per generation, or once for the server's slot
    cache) and set of projection modules, so a projection swapped in (a LoRA wrapper, a quantized one) is
    seen at the next step; gathering them at every step (about 40 module attribute lookups) took 24
    microseconds a layer, 6% of an int4 1B step. Weights changed in place (`load_state_dict`) need nothing."""

    # (the cache, the projection modules, what was gathered for them), or None before the first decode step
    _gathered: tuple[weakref.ref[Cache], tuple[nn.Module, ...], LayerWeights | None] | None = None

    def forward(self, x, cos, sin, mask, cache):  # type: ignore[no-untyped-def]
        operands = self.step_operands(x, cache)
        if operands is None:
            return super().forward(x, cos, sin, mask, cache)
        return self._fused_step([self], x, cos, sin, mask, operands)

    @staticmethod
    def run_stack(layers, x, cos, sin, mask, cache):  # type: ignore[no-untyped-def]
        """All of a decoder's layers for one step: one kernel call where every layer takes the fused decode
        step (the per-layer Python, checks and dispatch cost about 20 microseconds a layer,
        docs/cpu-speed.md), else layer by layer."""
        operands = stack_operands(layers, x, cache)
        if operands is None:
            return DecoderLayer.run_stack(layers, x, cos, sin, mask, cache)
        return KernelDecoderLayer._fused_step(layers, x, cos, sin, mask, operands)

    @staticmethod
    def _fused_step(layers, x, cos, sin, mask, operands):  # type: ignore[no-untyped-def]
        weights, widths, (keys, values, write_at) = operands
        heads, eps = layers[0].attn.num_heads, layers[0].attn_norm.eps
        return torch.ops.internvl_cpu.decoder_layers_step(
            x, weights, widths, cos, sin, keys, values, write_at, mask, heads, eps
        )

    def step_operands(self, x: torch.Tensor, cache: Cache | None) -> StackOperands | None:
        """The kernel's operands for this layer's step alone (see `stack_operands`), or None where
        `DecoderLayer` must run it."""
        return stack_operands([self], x, cache)

    def kernel_weights(self, cache: Cache) -> LayerWeights | None:
        """This layer's 16 weight tensors and 4 projection widths, gathered once per cache and set of
        projection modules; None where a part is not ours to fuse."""
        if not isinstance(self.mlp, GatedMLP):  # an MoE block
            return None
        projections = (self.attn.qkv, self.attn.o, self.mlp.gate_up, self.mlp.down)
        if self._gathered is None or self._gathered[0]() is not cache or self._gathered[1] != projections:
            self._gathered = (weakref.ref(cache), projections, self.gather_weights(projections))
        return self._gathered[2]

    def gather_weights(self, projections: tuple[nn.Module, ...]) -> LayerWeights | None:
        """The kernel's 16 weight tensors and 4 projection widths (see `layer_step` in `csrc/block_quant.cpp`), or
        None where a part is not ours to fuse (a projection that is no `KernelProjection`, a norm not fp32)."""
        weights: list[torch.Tensor] = [self.attn_norm.weight, self.mlp_norm.weight]
        weights += [self.attn.q_norm.weight, self.attn.k_norm.weight] if self.attn.qk_norm else [NONE, NONE]
        if any(weight.dtype != torch.float32 for weight in weights):
            return None
        widths: list[int] = []
        for projection in projections:
            if not isinstance(projection, KernelProjection) or (operands := projection.kernel_operands()) is None:
                return None
            values, scales, bias = operands
            weights += [values, NONE if scales is None else scales, NONE if bias is None else bias]
            widths.append(projection.out_features)
        return weights, widths


def stack_operands(layers: Sequence[DecoderLayer], x: torch.Tensor, cache: Cache | None) -> StackOperands | None:
    """The operands of `decoder_layers_step` for consecutive `layers` taking one decode step together: their
    weights and widths, and their slice of the cache; None unless every layer can take the fused step (a
    prefill, autograd, another dtype or device, a layer that is no `KernelDecoderLayer` or has a projection
    or MLP that is not ours to fuse)."""
    decoding = x.shape[1] == 1 and x.dtype == torch.float32 and x.device.type == "cpu"
    if not decoding or cache is None or not layers or torch.is_grad_enabled():
        return None
    keys, values, write_at = cache.step_stack()
    if keys.dtype != torch.float32 or keys.shape[1] != x.shape[0]:
        return None
    first = layers[0].index
    weights: list[torch.Tensor] = []
    widths: list[int] = []
    for offset, layer in enumerate(layers):
        if not isinstance(layer, KernelDecoderLayer) or layer.index != first + offset:
            return None
        if (gathered := layer.kernel_weights(cache)) is None:
            return None
        weights += gathered[0]
        widths += gathered[1]
    end = first + len(layers)
    return weights, widths, (keys[first:end], values[first:end], write_at)
