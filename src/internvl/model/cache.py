"""A pre-allocated key/value cache: one tensor for keys and one for values, all layers at once.

Pre-allocation keeps decoding free of per-token `torch.cat` (and its allocations); the model writes the
new positions in place and attends over the filled prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from internvl.model.internvl import InternVL


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

    def step_stack(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """For a kernel that writes one new position per row and attends in one call (`KernelDecoderLayer`):
        every layer's keys and values (layers, rows, kv_heads, max_length, head_dim) and the index each row's
        new position goes to (one index: the same for every row)."""
        ...


def empty_keys_values(model: InternVL, rows: int, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed keys and values (layers, rows, kv_heads, max_length, head_dim) in the decoder's dtype and
    device (the vision side may differ)."""
    text = model.config.text
    weight = model.language.embed.weight
    shape = (text.num_layers, rows, text.num_kv_heads, max_length, text.head_size)
    return (
        torch.zeros(shape, dtype=weight.dtype, device=weight.device),
        torch.zeros(shape, dtype=weight.dtype, device=weight.device),
    )


class KVCache:
    """Keys/values of shape (layers, batch, kv_heads, max_length, head_dim); `length` positions filled.

    Use: `cache = KVCache.for_model(model, batch, max_length)`, then pass it to every `model(...)`
    call of one generation; each call appends its tokens and advances `length`.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values
        self.length = 0

    @classmethod
    def for_model(cls, model: InternVL, batch: int, max_length: int) -> KVCache:
        return cls(*empty_keys_values(model, batch, max_length))

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

    def step_stack(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        return self.keys, self.values, [self.length]

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows in `rows` (for dropping finished sequences)."""
        self.keys = self.keys[:, rows]
        self.values = self.values[:, rows]
