"""V2PE, variable visual position encoding (InternVL3; docs/architecture.md#v2pe): image tokens advance
the rotary position by a step delta < 1, so that many images and long videos fit in the position range
the model was trained on.

The rule of the V2PE reference code (`get_rope_pos_id` in OpenGVLab/V2PE): text tokens advance by 1, up to
and including `<img>`; the image's `<IMG_CONTEXT>` tokens advance by delta each; `</img>` takes
ceil(the last context position) + 1, so text positions stay whole numbers. With delta = 1 this is the
ordinary 0, 1, 2, ... Rotary cos and sin are computed from these float positions (`llm.rope_cos_sin`).

Positions restart at 0 for every packed sub-sample (`document_ids`) and skip padding (`attention_mask`):
a padded token repeats its neighbour's position, which attention never reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

DELTAS = tuple(1 / 2**k for k in range(9))  # 1, 1/2, ..., 1/256: the training choices of the paper


def v2pe_positions(
    input_ids: torch.Tensor,
    context_id: int,
    delta: float | Sequence[float],
    attention_mask: torch.Tensor | None = None,
    document_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """(batch, seq) float32 positions.

    An image is a run of `context_id` tokens (all its tiles); the token after the run (`</img>`) takes
    ceil(the run's last position) + 1. delta: one step for every image, or one per image in row-major order.
    attention_mask: (batch, seq) 0 = padding. The first real token of a row is at 0.
    """
    batch, seq = input_ids.shape
    ids = input_ids.cpu()
    real = torch.ones(batch, seq, dtype=torch.bool) if attention_mask is None else attention_mask[:, -seq:].cpu().bool()
    documents = None if document_ids is None else document_ids.cpu()
    runs = count_images(ids, context_id)
    deltas = [float(delta)] * runs if isinstance(delta, (int, float)) else [float(d) for d in delta]
    if len(deltas) < runs:
        raise ValueError(f"{len(deltas)} deltas for {runs} images")
    image = -1  # index of the current (or last) run of context tokens, row-major
    out = torch.zeros(batch, seq, dtype=torch.float64)
    for row in range(batch):
        previous = -1.0
        in_image = False  # a run never continues into the next row
        for col in range(seq):
            token = int(ids[row, col])
            if documents is not None and col > 0 and documents[row, col] != documents[row, col - 1]:
                previous, in_image = -1.0, False  # a new packed sub-sample starts at 0
            if not real[row, col]:
                out[row, col] = max(previous, 0.0)
                continue
            if token == context_id:
                if not in_image:
                    image, in_image = image + 1, True
                previous += deltas[image]
            elif in_image:  # the token that closes the image (`</img>`)
                previous = math.ceil(previous - 1e-9) + 1.0
                in_image = False
            else:
                previous += 1.0
            out[row, col] = previous
    return out.to(torch.float32).to(input_ids.device)


def count_images(input_ids: torch.Tensor, context_id: int | None) -> int:
    """The images of a (batch, seq) id tensor: its runs of `context_id` tokens, a run never crossing rows."""
    if context_id is None:
        return 0
    is_context = input_ids == context_id
    return int((is_context[:, 1:] & ~is_context[:, :-1]).sum() + is_context[:, 0].sum())


def random_deltas(num_images: int, generator: torch.Generator | None = None) -> list[float]:
    """One delta per image, uniform over `DELTAS` (the paper's `v2pe_rnd` training)."""
    picks = torch.randint(len(DELTAS), (num_images,), generator=generator)
    return [DELTAS[int(k)] for k in picks]
