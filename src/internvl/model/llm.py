"""One decoder for every released backbone: Qwen2/2.5, Qwen3, Qwen3-MoE, Llama 3 and InternLM2/2.5.

They share the shape RMSNorm -> attention (GQA, RoPE) -> RMSNorm -> SwiGLU MLP; the differences are
switches in `TextConfig`: q/k/v bias (Qwen2), per-head q/k RMSNorm (Qwen3), routed experts (Qwen3-MoE),
rope scaling (Llama 3, dynamic NTK). InternLM2's fused, group-interleaved `wqkv` is un-fused on load
(weights.py), so it runs as a Llama layer.
Internally q, k, v are one fused projection and gate/up another: fewer, larger matmuls.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from internvl.config import TextConfig
from internvl.model.cache import Cache
from internvl.model.norm import RMSNorm

# ----------------------------------------------------------------------------------------------
# Rotary position embeddings


def rope_inverse_frequencies(config: TextConfig, seq_len: int) -> torch.Tensor:
    """(head_dim/2,) float32 inverse frequencies, with the config's scaling applied.

    `seq_len` is the longest position + 1 of the current forward; only dynamic NTK scaling uses it
    (it raises the base once the sequence outgrows `max_position_embeddings`, as transformers does).
    """
    dim = config.head_size
    base = config.rope_theta
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", "default")
    if kind == "dynamic" and seq_len > config.max_position_embeddings:
        factor = float(scaling["factor"])
        base = base * ((factor * seq_len / config.max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if kind == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    elif kind == "llama3":
        inv_freq = _llama3_scaling(inv_freq, scaling)
    return inv_freq


def _llama3_scaling(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1 frequency-dependent scaling: long wavelengths / factor, short unchanged, smooth between."""
    factor = float(scaling["factor"])
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    old_context = float(scaling.get("original_max_position_embeddings", 8192))
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return torch.where(medium, smoothed, scaled)


def rope_cos_sin(config: TextConfig, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (batch, seq) -> cos, signed sin (batch, 1, seq, head_dim), computed in float32.

    The sine's first half is negated, so that `apply_rope` can rotate halves with one `roll`.
    """
    dynamic = (config.rope_scaling or {}).get("rope_type") == "dynamic"
    seq_len = int(positions.max()) + 1 if dynamic else 0  # a host sync, paid only where it matters
    inv_freq = rope_inverse_frequencies(config, seq_len).to(positions.device)
    freqs = positions.float()[..., None] * inv_freq  # (batch, seq, head_dim/2)
    cos, sin = freqs.cos(), freqs.sin()
    return torch.cat([cos, cos], dim=-1)[:, None].to(dtype), torch.cat([-sin, sin], dim=-1)[:, None].to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on (batch, heads, seq, head_dim): x * cos + rotate_half(x) * sin, where
    rotate_half(x) * sin = roll(x, half) * signed_sin (three operations, not six: decoding is op-bound)."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


# ----------------------------------------------------------------------------------------------
# Blocks


class Attention(nn.Module):
    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = config.num_heads, config.num_kv_heads
        self.head_dim = config.head_size
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_size, self.kv_size = q_size, kv_size
        self.qkv = nn.Linear(config.hidden_size, q_size + 2 * kv_size, bias=config.attention_bias)
        self.o = nn.Linear(q_size, config.hidden_size, bias=config.output_bias)
        self.qk_norm = config.qk_norm
        if config.qk_norm:  # per head, before RoPE (Qwen3)
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: Cache | None,
        layer_index: int,
    ) -> torch.Tensor:
        batch, seq, _ = x.shape
        qkv = self.qkv(x)
        # q and k heads side by side, (batch, seq, heads + kv_heads, head_dim): one RoPE call for both
        qk = qkv[..., : self.q_size + self.kv_size].unflatten(-1, (-1, self.head_dim))
        if self.qk_norm:
            qk = torch.cat([self.q_norm(qk[:, :, : self.num_heads]), self.k_norm(qk[:, :, self.num_heads :])], dim=2)
        qk = apply_rope(qk.transpose(1, 2), cos, sin)  # (batch, heads + kv_heads, seq, head_dim)
        q, k = qk[:, : self.num_heads], qk[:, self.num_heads :]
        v = qkv[..., self.q_size + self.kv_size :].view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.write(layer_index, k, v)  # (batch, kv_heads, past+seq, head_dim)
        causal = mask is None and seq > 1  # no mask is built only for a prefill without padding
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=self.num_kv_heads != self.num_heads
        )
        return self.o(out.transpose(1, 2).reshape(batch, seq, -1))


class GatedMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), gate and up fused in one matmul."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class MoEMLP(nn.Module):
    """Qwen3-MoE: softmax router over experts, top-k, optional renormalisation, weighted expert sum."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.top_k, self.normalize = config.num_experts_per_tok, config.norm_topk_prob
        self.router = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = nn.ModuleList(
            GatedMLP(config.hidden_size, config.moe_intermediate_size) for _ in range(config.num_experts)
        )
        self.last_router_logits: torch.Tensor | None = None  # kept for the load-balancing loss in training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])  # (tokens, hidden)
        logits = self.router(tokens)  # (tokens, experts)
        self.last_router_logits = logits if self.training else None
        weights, chosen = torch.topk(F.softmax(logits, dim=-1, dtype=torch.float32), self.top_k, dim=-1)
        if self.normalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights.to(tokens.dtype)
        out = torch.zeros_like(tokens)
        routed = chosen.unique().tolist()
        for expert_index in routed:
            token_rows, slot = torch.where(chosen == expert_index)
            expert_out = self.experts[expert_index](tokens[token_rows]) * weights[token_rows, slot, None]
            out.index_add_(0, token_rows, expert_out)
        if self.training and len(routed) < len(self.experts):
            # idle experts join the graph with zero weight: every rank then has a gradient for every
            # parameter, which DDP and FSDP2 need
            idle = set(range(len(self.experts))) - set(routed)
            out = out + sum(p.sum() for i in idle for p in self.experts[i].parameters()) * 0
        return out.reshape(shape)


SomeLayer = TypeVar("SomeLayer", bound="DecoderLayer")


class DecoderLayer(nn.Module):
    def __init__(self, config: TextConfig, index: int) -> None:
        super().__init__()
        self.index = index
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp: nn.Module = (
            MoEMLP(config) if config.is_moe_layer(index) else GatedMLP(config.hidden_size, config.intermediate_size)
        )

    @classmethod
    def from_layer(cls: type[SomeLayer], layer: DecoderLayer, config: TextConfig) -> SomeLayer:
        """`layer`'s modules (shared, not copied: the checkpoint keys stay) behind this class's forward."""
        with torch.device("meta"):  # a shell: its own modules are replaced by the layer's at once
            swapped = cls(config, layer.index)
        swapped.attn_norm, swapped.attn, swapped.mlp_norm, swapped.mlp = (
            layer.attn_norm,
            layer.attn,
            layer.mlp_norm,
            layer.mlp,
        )
        return swapped

    def forward(self, x, cos, sin, mask, cache):  # type: ignore[no-untyped-def]
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, self.index)
        return x + self.mlp(self.mlp_norm(x))

    @staticmethod
    def run_stack(layers, x, cos, sin, mask, cache):  # type: ignore[no-untyped-def]
        """A decoder's layers, one after another (`KernelDecoderLayer` runs a decode step's in one call)."""
        for layer in layers:
            x = layer(x, cos, sin, mask, cache)
        return x


class LanguageModel(nn.Module):
    """Token embeddings, decoder layers, final norm and the output head."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = config
        weight = torch.empty(config.vocab_size, config.hidden_size)
        if not weight.is_meta:  # random init costs seconds on the meta device, where loading builds us
            nn.init.normal_(weight)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size, _weight=weight)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.layer_kind: type[DecoderLayer] = DecoderLayer  # whose `run_stack` runs the layers
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight
        self.gradient_checkpointing = False

    def use_layer_kind(self, kind: type[DecoderLayer]) -> None:
        """Every layer becomes a `kind` over its own modules (`DecoderLayer.from_layer`), in place: e.g.
        `KernelDecoderLayer` (what `choose_cpu_kernels` does on a CPU) or back to `DecoderLayer`."""
        for index, layer in enumerate(self.layers):
            assert isinstance(layer, DecoderLayer)
            self.layers[index] = kind.from_layer(layer, self.config)
        self.layer_kind = kind

    def forward(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        document_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """embeds (batch, seq, hidden), positions (batch, seq) -> final normed hidden (batch, seq, hidden).

        attention_mask: (batch, past+seq) with 1 for real tokens and 0 for padding, or None (no padding).
        document_ids: (batch, seq) for packed rows: a token attends only to earlier tokens of its own document.
        """
        batch, seq, _ = embeds.shape
        past = cache.length if cache is not None else 0
        mask = build_attention_mask(attention_mask, batch, seq, past, embeds.device, document_ids)
        cos, sin = rope_cos_sin(self.config, positions, embeds.dtype)
        x = embeds
        if self.gradient_checkpointing and torch.is_grad_enabled():  # frozen parts too, when grads pass through
            for layer in self.layers:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, cache, use_reentrant=False)
        else:
            x = self.layer_kind.run_stack(self.layers, x, cos, sin, mask, cache)
        if cache is not None:
            cache.advance(seq)
        return self.norm(x)


def build_attention_mask(
    padding: torch.Tensor | None,
    batch: int,
    seq: int,
    past: int,
    device: torch.device,
    document_ids: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Boolean (batch, 1, seq, past+seq) mask, True = may attend; None when plain causal attention will do.

    `document_ids` (batch, seq), used without a cache, makes the mask block-diagonal (packed samples).

    Query rows with no visible key at all (left-padding positions) may attend to themselves, so that the
    softmax stays finite; their outputs are never used.
    """
    if padding is None and document_ids is None and (past == 0 or seq == 1):
        return None  # SDPA's is_causal (prefill) or no mask at all (one new token sees everything)
    total = past + seq
    key_index = torch.arange(total, device=device)
    query_index = torch.arange(past, total, device=device)
    mask = (key_index[None, :] <= query_index[:, None])[None, None].expand(batch, 1, seq, total)
    if padding is not None:
        if padding.shape != (batch, total):
            raise ValueError(f"attention_mask has shape {tuple(padding.shape)}, expected {(batch, total)}")
        mask = mask & padding.bool()[:, None, None, :]
    if document_ids is not None:
        if past:
            raise ValueError("document_ids (packed sequences) cannot be combined with a KV cache")
        mask = mask & (document_ids[:, None, :, None] == document_ids[:, None, None, :])
    if seq > 1 and (padding is not None or document_ids is not None):  # a lone query row sees itself
        empty_rows = ~mask.any(dim=-1, keepdim=True)
        if empty_rows.any():
            mask = mask | (empty_rows & (key_index[None, None, None, :] == query_index[None, None, :, None]))
    return mask
