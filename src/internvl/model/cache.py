"""A pre-allocated key/value cache: one tensor for keys and one for values, all layers at once.

Pre-allocation keeps decoding free of per-token `torch.cat` (and its allocations); the model writes the
new positions in place and attends over the filled prefix.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Cache(Protocol):
    """What the attention layers use of a cache: `KVCache` here, `serve.slots.SlotCache` (rows of
    different lengths, for continuous batching) in the server."""

    @property
    def length(self) -> int:
        """Past positions the new tokens follow (the mask is built over length + new)."""
        ...

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new keys/values; return the keys/values to attend over."""
        ...

    def advance(self, count: int) -> None:
        """Called once per forward, after every layer has written `count` new positions."""
        ...


class KVCache:
    """Keys/values of shape (layers, batch, kv_heads, max_length, head_dim); `length` positions filled.

    Use: `cache = KVCache.for_model(model, batch, max_length)`, then pass it to every `model(...)`
    call of one generation; each call appends its tokens and advances `length`.
    """

    def __init__(
        self,
        num_layers: int,
        batch: int,
        num_kv_heads: int,
        max_length: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (num_layers, batch, num_kv_heads, max_length, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch: int, max_length: int) -> "KVCache":
        text = model.config.text
        weight = model.language.embed.weight  # the decoder's dtype (the vision side may differ)
        return cls(text.num_layers, batch, text.num_kv_heads, max_length, text.head_dim, weight.dtype, weight.device)

    @property
    def max_length(self) -> int:
        return self.keys.shape[3]

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (batch, kv_heads, new, head_dim) at the current end; return the filled prefix incl. them."""
        end = self.length + keys.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache full: {end} positions needed, {self.max_length} allocated")
        self.keys[layer, :, :, self.length : end] = keys
        self.values[layer, :, :, self.length : end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, count: int) -> None:
        self.length += count

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows in `rows` (for dropping finished sequences)."""
        self.keys = self.keys[:, rows]
        self.values = self.values[:, rows]
