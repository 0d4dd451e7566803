"""Samples or packs -> one padded batch, with per-token loss weights (docs/sft.md#packing).

The batch contract (what `Collator` returns; B rows, T = longest row or `pad_to`, N = all tiles):

    input_ids       (B, T) int64    token ids; padding = pad_id
    labels          (B, T) int64    target of each position, NOT shifted; -100 = no loss (prompt,
                                    padding, the first token of every document)
    loss_weight     (B, T) float32  weight of each label, 0 where labels == -100; per document of n
                                    supervised tokens: token -> 1, sample -> 1/n, square -> 1/sqrt(n)
    attention_mask  (B, T) int64    1 = real token, 0 = padding (padding is at the right)
    position_ids    (B, T) int64    0, 1, ... restarting at every document (padding: its own run)
    document_ids    (B, T) int64    0, 1, ... per document in the row; padding takes the next id
    pixel_values    (N, 3, S, S)    float32, the tiles of row 0, then row 1, ... in token order
    image_flags     (N,) int64      1 = real tile, 0 = dummy tile (text-only sample, strict padding)
    num_samples             int     documents in the batch (padding excluded)
    num_tokens              int     real tokens
    num_padding_tokens      int     B * T - num_tokens
    num_supervised_tokens   int     labels != -100

The loss the training loop computes from it (next-token prediction, docs/sft.md#loss-weights):

    ce = cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="none")
    w = loss_weight[:, 1:].flatten()
    loss = (w * ce).sum() / w.sum()     # with several ranks: w.sum() all-reduced with AVG first

and the forward call: `model(input_ids, pixel_values, attention_mask, position_ids,
image_flags=image_flags, document_ids=document_ids)`. `<IMG_CONTEXT>` tokens in row-major order
match the real tiles (flag 1) in order, 256 per tile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from internvl.data.sft import EncodedSample
from internvl.errors import ConfigError, InputError
from internvl.inputs.prompt import IGNORE_INDEX

LossReduction = Literal["token", "sample", "square"]


def len2weight(n: int | torch.Tensor, reduction: LossReduction) -> torch.Tensor:
    """Official `len2weight`: the weight of each supervised token of a document with n of them."""
    n = torch.as_tensor(n, dtype=torch.float32)
    if reduction == "token":
        weight = torch.ones_like(n)
    elif reduction == "sample":
        weight = 1 / n
    elif reduction == "square":
        weight = 1 / n.sqrt()
    else:
        raise ConfigError(f"unknown loss reduction {reduction!r}; use 'token', 'sample' or 'square'")
    return torch.where(n > 0, weight, torch.zeros_like(n))


def loss_weights(labels: torch.Tensor, document_ids: torch.Tensor, reduction: LossReduction) -> torch.Tensor:
    """(B, T) float32 weights: len2weight(supervised tokens of the token's document), 0 where unsupervised.

    Works for packed rows (several document ids) and plain rows (one id, padding another).
    """
    supervised = labels != IGNORE_INDEX  # (B, T)
    counts = torch.zeros(labels.shape[0], int(document_ids.max()) + 1 if document_ids.numel() else 1)
    counts.scatter_add_(1, document_ids, supervised.to(torch.float32))  # (B, documents)
    per_token = torch.gather(counts, 1, document_ids)  # (B, T)
    return torch.where(supervised, len2weight(per_token, reduction), torch.zeros(()))


def position_ids_from_documents(document_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) positions 0, 1, ... restarting wherever the document id changes."""
    _, length = document_ids.shape
    index = torch.arange(length).expand_as(document_ids)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - start_index


@dataclass(frozen=True)
class Collator:
    """`collate_fn` for a DataLoader over `EncodedSample`s (plain or packed): see the module docstring."""

    pad_id: int
    loss_reduction: LossReduction = "square"
    pad_to: int | None = None  # pad every row to this length (static shapes), else to the longest row

    def __call__(self, samples: EncodedSample | Sequence[EncodedSample]) -> dict[str, Any]:
        rows = [samples] if isinstance(samples, EncodedSample) else list(samples)
        if not rows:
            raise InputError("cannot collate an empty batch")
        longest = max(row.num_tokens for row in rows)
        length = longest if self.pad_to is None else self.pad_to
        if longest > length:
            raise InputError(f"a row of {longest} tokens does not fit pad_to={self.pad_to}")
        batch = len(rows)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        document_ids = torch.zeros((batch, length), dtype=torch.long)
        for b, row in enumerate(rows):
            n = row.num_tokens
            input_ids[b, :n] = row.input_ids
            labels[b, :n] = row.labels
            attention_mask[b, :n] = 1
            document_ids[b, :n] = row.document_ids
            document_ids[b, n:] = row.num_documents  # padding: a document of its own
        # No token is ever learnt from the previous document's last position.
        first = torch.ones_like(document_ids, dtype=torch.bool)
        first[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
        labels[first] = IGNORE_INDEX
        num_tokens = int(attention_mask.sum())
        return {
            "input_ids": input_ids,
            "labels": labels,
            "loss_weight": loss_weights(labels, document_ids, self.loss_reduction),
            "attention_mask": attention_mask,
            "position_ids": position_ids_from_documents(document_ids),
            "document_ids": document_ids,
            "pixel_values": torch.cat([row.pixel_values for row in rows]),  # (N, 3, S, S)
            "image_flags": torch.cat([row.image_flags for row in rows]),  # (N,)
            "num_samples": sum(row.num_documents for row in rows),
            "num_tokens": num_tokens,
            "num_padding_tokens": batch * length - num_tokens,
            "num_supervised_tokens": int((labels != IGNORE_INDEX).sum()),
        }
