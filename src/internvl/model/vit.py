"""InternViT: the vision encoder, in its 300M flavour (LayerNorm, qkv bias) and 6B flavour
(RMSNorm, qk-norm across all heads). See docs/architecture.md#internvit."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from internvl.config import VisionConfig
from internvl.model.norm import RMSNorm


def make_norm(config: VisionConfig, size: int) -> nn.Module:
    if config.norm_type == "layer_norm":
        return nn.LayerNorm(size, eps=config.norm_eps)
    if config.norm_type == "rms_norm":
        return RMSNorm(size, eps=config.norm_eps)
    raise ValueError(f"unknown vision norm_type {config.norm_type!r}")


class VisionEmbeddings(nn.Module):
    """Patchify with a strided conv, prepend the CLS token, add (interpolated) position embeddings."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.grid = config.image_size // config.patch_size
        self.patch = nn.Conv2d(3, d, kernel_size=config.patch_size, stride=config.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, d))

    def position_embeddings(self, rows: int, cols: int) -> torch.Tensor:
        """(1, 1 + rows*cols, d). Bicubic in float32 when the patch grid differs from training."""
        if rows == self.grid and cols == self.grid:
            return self.pos
        d = self.pos.shape[-1]
        grid = self.pos[:, 1:].reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
        grid = grid.to(self.pos.dtype).reshape(1, d, rows * cols).permute(0, 2, 1)
        return torch.cat([self.pos[:, :1], grid], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch(pixel_values.to(self.patch.weight.dtype))  # (tiles, d, rows, cols)
        rows, cols = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (tiles, rows*cols, d), row-major
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return x + self.position_embeddings(rows, cols).to(x.dtype)


class VisionAttention(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(d, 3 * d, bias=config.qkv_bias)
        self.qk_norm = config.qk_norm
        if config.qk_norm:  # over the whole d = heads*head_dim vector, not per head (docs/architecture.md#internvit)
            self.q_norm = RMSNorm(d, config.norm_eps)
            self.k_norm = RMSNorm(d, config.norm_eps)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tiles, n, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)  # each (tiles, n, d)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.view(tiles, n, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # (tiles, heads, n, head_dim)
        return self.proj(out.transpose(1, 2).reshape(tiles, n, d))


class VisionMLP(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class VisionLayer(nn.Module):
    """Pre-norm block with per-channel layer scale: h += ls1*attn(norm1(h)); h += ls2*mlp(norm2(h))."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.norm1 = make_norm(config, d)
        self.attn = VisionAttention(config)
        self.ls1 = nn.Parameter(torch.ones(d))
        self.norm2 = make_norm(config, d)
        self.mlp = VisionMLP(config)
        self.ls2 = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x)) * self.ls1
        return x + self.mlp(self.norm2(x)) * self.ls2


class InternViT(nn.Module):
    """pixel_values (tiles, 3, H, W) -> hidden states (tiles, 1 + H/14 * W/14, d) of one layer."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = VisionEmbeddings(config)
        self.layers = nn.ModuleList(VisionLayer(config) for _ in range(config.num_layers))
        self.gradient_checkpointing = False

    def forward(self, pixel_values: torch.Tensor, select_layer: int = -1) -> torch.Tensor:
        # hidden-state index i: 0 = embeddings, i = output of layer i (so -1 = last layer, no final norm)
        n = len(self.layers)
        wanted = select_layer if select_layer >= 0 else n + 1 + select_layer
        if not 0 <= wanted <= n:
            raise ValueError(f"select_layer {select_layer} out of range for {n} vision layers")
        x = self.embed(pixel_values)
        for layer in self.layers[:wanted]:
            if self.gradient_checkpointing and torch.is_grad_enabled():  # frozen parts too, when grads pass through
                x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return x
