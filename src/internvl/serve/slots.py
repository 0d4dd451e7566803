"""A KV cache whose rows hold sequences of different lengths: the memory of continuous batching.

Each running answer (one choice of one request) owns a row. Rows are kept compact at [0, rows): a row
that leaves is filled with the last one, so a decode step always runs on the first `rows` rows.

The attention layers see it through the three members they use of `model.cache.KVCache`: `length`
(read as the number of past positions), `write(layer, keys, values)` and `advance(count)`. A decode
step feeds one token per row; row r's token is written at position lengths[r] and attends to
positions [0, lengths[r]]. `length` is the longest row, so the layers build their mask from the
`attention_mask` of `decode_inputs()`, which hides each shorter row's unused tail:

    row 0 (4 tokens): k k k k [new] .  .      mask 1 1 1 1 1 0 0
    row 1 (6 tokens): k k k k  k  k [new]     mask 1 1 1 1 1 1 1
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from internvl.model.cache import empty_keys_values

if TYPE_CHECKING:
    from internvl.model.internvl import InternVL


class SlotCache:
    """Keys and values (layers, slots, kv_heads, max_length, head_dim); row r holds lengths[r] positions."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values
        device = keys.device
        self.lengths: list[int] = []  # positions held by each active row
        self.offsets: list[float] = []  # rotary position minus cache index of each row's next token (V2PE)
        self._positions = torch.zeros(0, dtype=torch.long, device=device)  # lengths as a tensor, per step
        self._row_index = torch.zeros(0, dtype=torch.long, device=device)

    @classmethod
    def for_model(cls, model: InternVL, slots: int, max_length: int) -> SlotCache:
        return cls(*empty_keys_values(model, slots, max_length))

    @property
    def slots(self) -> int:
        return self.keys.shape[1]

    @property
    def max_length(self) -> int:
        return self.keys.shape[3]

    @property
    def rows(self) -> int:
        return len(self.lengths)

    # -- rows joining and leaving -----------------------------------------------------------------
    def add(self, keys: torch.Tensor, values: torch.Tensor, offset: float = 0.0) -> int:
        """Make a new row from a prefilled sequence, keys/values (layers, kv_heads, length, head_dim);
        returns its index. `offset`: what the row's rotary positions add to its cache index (0, unless the
        prompt's image tokens advanced by a V2PE step below 1)."""
        row, length = self.rows, keys.shape[2]
        if row == self.slots:
            raise ValueError(f"all {self.slots} slots are taken")
        if length >= self.max_length:
            raise ValueError(f"a {length}-token prompt does not fit rows of {self.max_length} positions")
        self.keys[:, row, :, :length] = keys
        self.values[:, row, :, :length] = values
        self.lengths.append(length)
        self.offsets.append(offset)
        return row

    def remove(self, row: int) -> None:
        """Drop a row; the last row moves into its place (so remove several rows from the highest index)."""
        last = self.rows - 1
        if row != last:
            length = self.lengths[last]
            self.keys[:, row, :, :length] = self.keys[:, last, :, :length]
            self.values[:, row, :, :length] = self.values[:, last, :, :length]
            self.lengths[row] = length
            self.offsets[row] = self.offsets[last]
        self.lengths.pop()
        self.offsets.pop()

    def clear(self) -> None:
        self.lengths.clear()
        self.offsets.clear()

    # -- one decode step --------------------------------------------------------------------------
    def decode_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention mask (rows, longest + 1) and position ids (rows, 1) of the next decode step.

        A row's new token sits at position lengths[r]: it is also the token's position id, as for a
        single unpadded sequence, plus the row's offset under V2PE (float position ids then).
        """
        if any(length >= self.max_length for length in self.lengths):
            raise ValueError(f"a row has reached the cache's {self.max_length} positions")
        device = self.keys.device
        self._positions = torch.tensor(self.lengths, dtype=torch.long, device=device)  # (rows,)
        self._row_index = torch.arange(self.rows, device=device)
        columns = torch.arange(self.length + 1, device=device)
        mask = (columns[None, :] <= self._positions[:, None]).long()  # (rows, longest + 1)
        if any(self.offsets):
            offsets = torch.tensor(self.offsets, dtype=torch.float32, device=device)
            return mask, (self._positions.float() + offsets)[:, None]
        return mask, self._positions[:, None]

    @property
    def length(self) -> int:
        """The longest row: the `past` the attention layers see."""
        return max(self.lengths, default=0)

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one new position per row, (rows, kv_heads, 1, head_dim), at each row's own end; return
        the keys and values (rows, kv_heads, longest + 1, head_dim) the step attends over."""
        if keys.shape[0] != self.rows or keys.shape[2] != 1:
            raise ValueError(
                f"a SlotCache takes one new position per active row: got {tuple(keys.shape)} for {self.rows} rows "
                "(prefill with a KVCache and `add` the result)"
            )
        # advanced indexing on (slots, kv_heads, max_length, head_dim): (rows, kv_heads, head_dim)
        self.keys[layer][self._row_index, :, self._positions] = keys[:, :, 0]
        self.values[layer][self._row_index, :, self._positions] = values[:, :, 0]
        end = self.length + 1
        return self.keys[layer, : self.rows, :, :end], self.values[layer, : self.rows, :, :end]

    def step_stack(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """The active rows of every layer's keys and values, and where each row's new position goes (its
        length); `decode_inputs` gave the mask that hides each row's unused tail."""
        return self.keys[:, : self.rows], self.values[:, : self.rows], self.lengths

    def advance(self, count: int) -> None:
        self.lengths = [length + count for length in self.lengths]
