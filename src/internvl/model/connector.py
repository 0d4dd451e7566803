"""From ViT patch tokens to language-model embeddings: pixel shuffle, then the `mlp1` projector. See docs/architecture.md#pixel-shuffle and #projector."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pixel_shuffle(x: torch.Tensor, ratio: float = 0.5, version: str = "v2") -> torch.Tensor:
    """Merge neighbouring patch tokens into channels.

    x: (tiles, rows, cols, c) -> (tiles, rows*ratio, cols*ratio, c/ratio^2).
    With ratio 0.5 output cell (i, j) holds [x(2i,2j), x(2i,2j+1), x(2i+1,2j), x(2i+1,2j+1)].
    `v1` (the official config-class default) leaves the result transposed: cell (i, j) sits at (j, i).
    """
    n, rows, cols, c = x.shape
    x = x.reshape(n, rows, int(cols * ratio), int(c / ratio))  # pair horizontally adjacent tokens
    x = x.permute(0, 2, 1, 3).contiguous()  # (n, cols*r, rows, 2c)
    x = x.reshape(n, int(cols * ratio), int(rows * ratio), int(c / (ratio * ratio)))  # pair vertical neighbours
    if version == "v2":
        x = x.permute(0, 2, 1, 3).contiguous()  # back to (n, rows*r, cols*r, 4c)
    return x


class Projector(nn.Module):
    """`mlp1`: LayerNorm(4*d_vit, eps 1e-5) -> Linear -> exact GELU -> Linear."""

    def __init__(self, vision_hidden: int, text_hidden: int, downsample_ratio: float) -> None:
        super().__init__()
        d_in = vision_hidden * int(1 / downsample_ratio) ** 2
        self.norm = nn.LayerNorm(d_in, eps=1e-5)
        self.fc1 = nn.Linear(d_in, text_hidden)
        self.fc2 = nn.Linear(text_hidden, text_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))
