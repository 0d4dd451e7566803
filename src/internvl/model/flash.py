"""InternVL3.5-Flash (docs/flash.md): a second connector that gives a tile 4x fewer tokens, and the Visual
Resolution Router (ViR) that chooses, tile by tile, which connector to use.

    ViT patches (tiles, 32, 32, d_vit) --pixel shuffle 0.5--> mlp1 -> 256 tokens per tile   (full)
                                       --pixel shuffle 0.25-> mlp2 -> 64 tokens per tile    (compressed)
    ViT patches (tiles, 1024, d_vit) -> RouterPooling -> (tiles, d_vit) -> RouterGate -> P(compress), P(keep)

The modules follow the official remote code (`modeling_internvl_chat.py` of the InternVL3_5-*-Flash
releases: `mlp2`, `CrossAttentionPooling` as `pooling_before_gating`, `Gating` as `gating`) so that their
checkpoints load, with one quirk kept on purpose: the pooling runs its first attention layer once and its
second layer three times; the third and fourth layers exist in the checkpoint but are never used (lmdeploy's
port does the same). Dropout (0.1 in the official training code) is left out.

A compressed tile keeps the first `num_compressed_image_token` of its `<IMG_CONTEXT>` positions and drops the
rest (`compress_prompt`), as the official `compress_visual_tokens_in_sentence` does; the model then reads the
features of `encode_images(pixels, compressed)` into what is left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from internvl.errors import ConfigError, InputError

if TYPE_CHECKING:
    from internvl.model.internvl import InternVL

VisualResolution = Literal["full", "compressed", "router"]
VISUAL_RESOLUTIONS: tuple[str, ...] = ("full", "compressed", "router")
POOLING_HEADS = 16  # fixed in the official CrossAttentionPooling


class CompressedProjector(nn.Module):
    """`mlp2`: LayerNorm(16*d_vit) -> Linear(2*d_llm) -> GELU -> Linear(2*d_llm) -> GELU -> Linear(d_llm)."""

    def __init__(self, vision_hidden: int, text_hidden: int, downsample_ratio: float) -> None:
        super().__init__()
        d_in = vision_hidden * int(1 / downsample_ratio) ** 4
        self.norm = nn.LayerNorm(d_in, eps=1e-5)
        self.fc1 = nn.Linear(d_in, 2 * text_hidden)
        self.fc2 = nn.Linear(2 * text_hidden, 2 * text_hidden)
        self.fc3 = nn.Linear(2 * text_hidden, text_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(self.norm(x))))))


class RouterPooling(nn.Module):
    """`pooling_before_gating`: one learnt query attends over a tile's patches, layer after layer."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % POOLING_HEADS:
            raise ConfigError(
                f"the router pools with {POOLING_HEADS} heads: vision hidden_size {dim} must divide by it"
            )
        self.query = nn.Parameter(torch.randn(1, dim))
        self.attn1 = nn.MultiheadAttention(dim, POOLING_HEADS, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.attn2 = nn.MultiheadAttention(dim, POOLING_HEADS, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        # in every checkpoint, unused by the official forward (module docstring)
        self.attn3 = nn.MultiheadAttention(dim, POOLING_HEADS, batch_first=True)
        self.norm3 = nn.LayerNorm(dim)
        self.attn4 = nn.MultiheadAttention(dim, POOLING_HEADS, batch_first=True)
        self.norm4 = nn.LayerNorm(dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches (tiles, n, d_vit) -> (tiles, d_vit)."""
        query = self.query.to(patches.dtype).expand(patches.shape[0], 1, -1)
        out = self.norm1(attend_one_query(self.attn1, query, *keys_values(self.attn1, patches)))
        # the official forward reuses attn2 / norm2 three times over the same patches (module docstring):
        # their keys and values are projected once, which is most of the pooling's arithmetic
        keys, values = keys_values(self.attn2, patches)
        for _ in range(3):
            out = self.norm2(attend_one_query(self.attn2, out, keys, values))
        return out[:, 0]


def keys_values(attention: nn.MultiheadAttention, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`attention`'s keys and values of patches (tiles, n, d), as (tiles, heads, n, d / heads) each."""
    return _heads(attention, _in_projection(attention, 1, patches)), _heads(
        attention, _in_projection(attention, 2, patches)
    )


def attend_one_query(
    attention: nn.MultiheadAttention, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """What `attention(query, patches, patches)` returns, query (tiles, 1, d), with the patches' keys and values
    given (`keys_values`)."""
    q = _heads(attention, _in_projection(attention, 0, query))
    out = F.scaled_dot_product_attention(q, keys, values)  # (tiles, heads, 1, d / heads)
    return attention.out_proj(out.transpose(1, 2).reshape(query.shape[0], 1, attention.embed_dim))


def _in_projection(attention: nn.MultiheadAttention, part: int, x: torch.Tensor) -> torch.Tensor:
    """x through `attention`'s query (part 0), key (1) or value (2) projection."""
    rows = slice(part * attention.embed_dim, (part + 1) * attention.embed_dim)
    bias = attention.in_proj_bias
    return F.linear(x, attention.in_proj_weight[rows], None if bias is None else bias[rows])


def _heads(attention: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """(tiles, n, d) -> (tiles, heads, n, d / heads)."""
    heads = attention.num_heads
    return x.reshape(x.shape[0], x.shape[1], heads, attention.embed_dim // heads).transpose(1, 2)


class GateBlock(nn.Module):
    """x + LayerNorm(Linear(GELU(Linear(x)))): one of the gate's four residual blocks."""

    def __init__(self, dim: int, expansion: int = 4) -> None:
        super().__init__()
        self.fc_in = nn.Linear(dim, dim * expansion)
        self.fc_out = nn.Linear(dim * expansion, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.fc_out(F.gelu(self.fc_in(x))))


class RouterGate(nn.Module):
    """`gating`: four residual MLP blocks, then LayerNorm -> Linear(2) -> softmax."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(GateBlock(dim) for _ in range(4))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(tiles, d_vit) -> logits (tiles, 2): column 0 = compress, column 1 = keep (official order)."""
        for block in self.blocks:
            pooled = block(pooled)
        return self.proj(self.norm(pooled))


class ResolutionRouter(nn.Module):
    """ViR: a tile's ViT patches -> logits of (compress, keep)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pooling = RouterPooling(dim)
        self.gate = RouterGate(dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.gate(self.pooling(patches))


def check_resolution(mode: str, flash: bool) -> None:
    if mode not in VISUAL_RESOLUTIONS:
        raise InputError(f"visual resolution must be one of {', '.join(VISUAL_RESOLUTIONS)}, got {mode!r}")
    if mode != "full" and not flash:
        raise InputError(
            f"visual resolution {mode!r} needs a Flash model (a second connector and a router, docs/flash.md); "
            "this model has only the full-resolution connector"
        )


def choose_compressed(
    compress_probability: torch.Tensor,
    mode: str,
    tiles_per_prompt: Sequence[int],
    absolute_threshold: float,
    relative_threshold: float | None,
) -> torch.Tensor:
    """(tiles,) bool, True = compressed. `router` applies the official rule to each prompt's tiles: compress
    when P(compress) >= the absolute threshold and, if a relative threshold is set, > that quantile of the
    prompt's P(compress) (so one prompt's choices never depend on what it is batched with)."""
    tiles = compress_probability.shape[0]
    if sum(tiles_per_prompt) != tiles:
        raise ValueError(f"{sum(tiles_per_prompt)} tiles in the prompts but {tiles} probabilities")
    if mode == "full":
        return torch.zeros(tiles, dtype=torch.bool, device=compress_probability.device)
    if mode == "compressed":
        return torch.ones(tiles, dtype=torch.bool, device=compress_probability.device)
    p = compress_probability.float()
    chosen = p >= absolute_threshold
    if relative_threshold is not None:
        start = 0
        for count in tiles_per_prompt:
            if count:
                group = p[start : start + count]
                chosen[start : start + count] &= group > torch.quantile(group, relative_threshold)
            start += count
    return chosen


def compress_prompt(
    input_ids: torch.Tensor, image_token_id: int, compressed: torch.Tensor, full_tokens: int, small_tokens: int
) -> torch.Tensor:
    """(L,) prompt ids with every tile's `<IMG_CONTEXT>` run at full size -> the ids with each compressed
    tile's run cut to its first `small_tokens` positions; `compressed` holds this prompt's tiles in order."""
    return input_ids[keep_mask(input_ids, image_token_id, compressed, full_tokens, small_tokens)]


def keep_mask(
    input_ids: torch.Tensor, image_token_id: int, compressed: torch.Tensor, full_tokens: int, small_tokens: int
) -> torch.Tensor:
    """(L,) bool: the positions `compress_prompt` keeps."""
    slots = (input_ids == image_token_id).nonzero().reshape(-1)
    tiles = compressed.shape[0]
    if slots.shape[0] != tiles * full_tokens:
        raise InputError(
            f"the prompt has {slots.shape[0]} <IMG_CONTEXT> tokens but {tiles} tiles of {full_tokens} need "
            f"{tiles * full_tokens}"
        )
    keep = torch.ones_like(input_ids, dtype=torch.bool)
    dropped = slots.reshape(tiles, full_tokens)[compressed.to(slots.device), small_tokens:]
    keep[dropped.reshape(-1)] = False
    return keep


@torch.no_grad()
def route_prompts(
    model: InternVL, prompts: Sequence[torch.Tensor], pixel_values: Sequence[torch.Tensor | None], mode: str
) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """Prompts with full-size image runs and their tiles -> (prompts cut to the chosen resolutions, the image
    features of all tiles in order (tokens, d_llm), the choice of each tile (tiles,) bool).

    In `full` mode nothing is computed here: (the prompts, None, None), and the model encodes the tiles
    itself. Otherwise the encoder runs once, the router (mode `router`) decides per tile, and each
    compressed tile's `<IMG_CONTEXT>` run is cut to the compressed size."""
    check_resolution(mode, model.config.flash)
    tiles = [0 if p is None else int(p.shape[0]) for p in pixel_values]
    if mode == "full" or not sum(tiles):
        return list(prompts), None, None
    if model.image_token_id is None:
        raise InputError("image_token_id is not set: load a tokenizer or set model.image_token_id")
    device = next(model.parameters()).device
    grid = model.vision_grid(torch.cat([p for p in pixel_values if p is not None]).to(device))
    probability = model.compress_probability(grid) if mode == "router" else grid.new_zeros(grid.shape[0])
    config = model.config
    compressed = choose_compressed(
        probability, mode, tiles, config.flash_absolute_threshold, config.flash_relative_threshold
    )
    features = model.connect(grid, compressed)
    cut, start = [], 0
    for ids, count in zip(prompts, tiles):
        mine = compressed[start : start + count]
        start += count
        cut.append(
            compress_prompt(ids, model.image_token_id, mine, config.num_image_token, config.num_compressed_image_token)
        )
    return cut, features, compressed
