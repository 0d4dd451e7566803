"""The whole InternVL model: InternViT -> pixel shuffle -> projector, spliced into the decoder's inputs.

Data flow (docs/architecture.md#data-flow), for a batch whose images' tiles are concatenated in order:
    pixel_values (tiles, 3, 448, 448) -> ViT (tiles, 1025, d_vit) -> drop CLS, (tiles, 32, 32, d_vit)
    -> pixel shuffle (tiles, 16, 16, 4*d_vit) -> projector (tiles, 256, d_llm)
    input_ids (batch, seq) -> embeddings; the <IMG_CONTEXT> positions, in row-major order (batch, then
    position), are overwritten by the flattened image features -> decoder -> logits (batch, seq, vocab).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from internvl.config import InternVLConfig
from internvl.errors import InputError
from internvl.model.cache import Cache
from internvl.model.connector import Projector, pixel_shuffle
from internvl.model.flash import CompressedProjector, ResolutionRouter
from internvl.model.llm import LanguageModel
from internvl.model.v2pe import v2pe_positions
from internvl.model.vit import InternViT


class InternVL(nn.Module):
    def __init__(self, config: InternVLConfig) -> None:
        super().__init__()
        self.config = config
        self.vision = InternViT(config.vision)
        self.projector = Projector(config.vision.hidden_size, config.text.hidden_size, config.downsample_ratio)
        self.language = LanguageModel(config.text)
        # InternVL3.5-Flash (docs/flash.md): `mlp2` and the Visual Resolution Router
        self.compressed_projector: CompressedProjector | None = None
        self.router: ResolutionRouter | None = None
        if config.flash:
            self.add_flash_parts()
        # Set from the tokenizer (`<IMG_CONTEXT>`) by whoever loads one; the hf layout stores it in config.
        self.image_token_id: int | None = config.image_token_id

    def add_flash_parts(self) -> None:
        """Give the model Flash's second connector and router (random weights, on the projector's device and
        dtype) and mark its config as Flash; ViCO training starts a plain model this way (docs/flash.md)."""
        d_vit, d_llm = self.config.vision.hidden_size, self.config.text.hidden_size
        like = self.projector.fc1.weight
        self.compressed_projector = CompressedProjector(d_vit, d_llm, self.config.downsample_ratio).to(like)
        self.router = ResolutionRouter(d_vit).to(like)
        self.config.flash = True

    # -- forward --------------------------------------------------------------------------------
    def vision_grid(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (tiles, 3, H, W) -> ViT patch features (tiles, 32, 32, d_vit), CLS dropped."""
        hidden = self.vision(pixel_values, select_layer=self.config.select_layer)[:, 1:]
        tiles, patches, d_vit = hidden.shape
        side = int(math.isqrt(patches))
        return hidden.reshape(tiles, side, side, d_vit)

    def connect(self, grid: torch.Tensor, compressed: torch.Tensor | None = None) -> torch.Tensor:
        """ViT patch features (tiles, 32, 32, d_vit) -> image features.

        Without `compressed`: every tile through `mlp1`, (tiles, 256, d_llm). With `compressed` (tiles,)
        bool (Flash models): compressed tiles through `mlp2` (64 tokens), the others through `mlp1`,
        flattened in tile order -> (tokens, d_llm)."""
        ratio, version = self.config.downsample_ratio, self.config.ps_version

        def through(projector: nn.Module, part: torch.Tensor, shuffle_ratio: float) -> torch.Tensor:
            shuffled = pixel_shuffle(part, shuffle_ratio, version)  # (tiles, 16, 16, 4*d_vit) at ratio 0.5
            tiles, rows, cols, channels = shuffled.shape
            return projector(shuffled.reshape(tiles, rows * cols, channels))

        if compressed is None:
            return through(self.projector, grid, ratio)
        if self.compressed_projector is None:
            raise InputError("compressed tiles need a Flash model (docs/flash.md): this one has no second connector")
        compressed = compressed.to(grid.device)
        full = through(self.projector, grid[~compressed], ratio)
        small = through(self.compressed_projector, grid[compressed], ratio * ratio)
        parts, next_full, next_small = [], iter(full), iter(small)
        for is_small in compressed.tolist():
            parts.append(next(next_small) if is_small else next(next_full))
        return torch.cat(parts) if parts else full.reshape(0, full.shape[-1])

    def compress_probability(self, grid: torch.Tensor) -> torch.Tensor:
        """The router's P(compress) of each tile (tiles,), from its ViT patch features (tiles, 32, 32, d_vit)."""
        if self.router is None:
            raise InputError("routing needs a Flash model (docs/flash.md): this one has no router")
        logits = self.router(grid.reshape(grid.shape[0], -1, grid.shape[-1]))
        return logits.float().softmax(-1)[:, 0]

    def encode_images(self, pixel_values: torch.Tensor, compressed: torch.Tensor | None = None) -> torch.Tensor:
        """pixel_values (tiles, 3, H, W) -> image features (tiles, tokens_per_tile, d_llm); with
        `compressed` (tiles,) bool, (tokens, d_llm) as `connect` says."""
        return self.connect(self.vision_grid(pixel_values), compressed)

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        image_flags: torch.Tensor | None = None,
        compressed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the image features written over the `<IMG_CONTEXT>` positions.

        Pass `pixel_values` (tiles, 3, H, W) or precomputed `image_features` (tiles, 256, d_llm), e.g.
        from a separate vision worker. `image_flags` (tiles,) marks real tiles with 1 and dummy tiles
        (text-only training samples) with 0: every tile runs through the encoder, so that all parameters
        take part in the backward pass, but only real tiles fill `<IMG_CONTEXT>` slots (docs/architecture.md#image-tokens).
        `compressed` (tiles,) bool (Flash models, docs/flash.md): those tiles give `mlp2`'s fewer tokens; the
        prompt must already be cut to match (`internvl.model.flash.compress_prompt`).
        """
        embeds = self.language.embed(input_ids)  # (batch, seq, d_llm)
        if pixel_values is None and image_features is None:
            return embeds
        if self.image_token_id is None:
            raise InputError("image_token_id is not set: load a tokenizer or set model.image_token_id")
        dummy_term = None
        if image_features is None and compressed is not None:
            grid = self.vision_grid(pixel_values)  # type: ignore[arg-type]
            if image_flags is not None:  # dummy tiles: in the graph through the encoder, no slots
                keep = image_flags.reshape(-1).bool()
                dummy_term = grid[~keep].sum() * 0
                grid, compressed = grid[keep], compressed.to(keep.device)[keep]
            image_features = self.connect(grid, compressed)
            image_flags = None
        if image_features is None:
            image_features = self.encode_images(pixel_values)  # type: ignore[arg-type]
        if image_flags is not None:
            keep = image_flags.reshape(-1).bool()
            dummy_term = image_features[~keep].sum() * 0  # keeps dummy tiles in the graph, adds nothing
            image_features = image_features[keep]
        features = image_features.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
        selected = input_ids == self.image_token_id
        slots = int(selected.sum())
        if slots != features.shape[0]:
            per_tile = image_features.shape[1] if image_features.dim() == 3 else "?"
            raise InputError(
                f"the prompt has {slots} <IMG_CONTEXT> tokens but the images give {features.shape[0]} "
                f"features ({image_features.shape[0]} tiles x {per_tile}); the <image> placeholders and "
                "the images given do not match"
            )
        embeds = embeds.masked_scatter(selected[..., None], features)
        return embeds if dummy_term is None else embeds + dummy_term

    def positions(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        delta: float | Sequence[float] | None = None,
    ) -> torch.Tensor:
        """Rotary positions of a prompt (batch, seq): 0, 1, 2, ... over real tokens (padding skipped,
        packed sub-samples restarting at 0), with image tokens advancing by `delta` (V2PE; default the
        config's `v2pe_delta`, None = 1, integer positions)."""
        delta = self.config.v2pe_delta if delta is None else delta
        if delta is None or (isinstance(delta, (int, float)) and delta == 1.0):
            if document_ids is None:
                if attention_mask is None:
                    return torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape[0], -1)
                return (attention_mask[:, -input_ids.shape[1] :].long().cumsum(-1) - 1).clamp(min=0)
            delta = 1.0
        if self.image_token_id is None:
            raise ValueError("V2PE positions need the model's image_token_id")
        return v2pe_positions(input_ids, self.image_token_id, delta, attention_mask, document_ids)

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        image_features: torch.Tensor | None = None,
        image_flags: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        last_only: bool = False,
        return_hidden: bool = False,
        compressed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (batch, seq) [+ pixel_values (tiles, 3, H, W)] -> logits (batch, seq, vocab).

        attention_mask: (batch, past+seq), 1 = token, 0 = padding; None means no padding.
        position_ids: (batch, seq); default past .. past+seq-1 for every row (as transformers does).
        cache: a KVCache (or another `Cache`) to read the past from and append this call's keys/values to.
        last_only: compute logits of the last position only -> (batch, 1, vocab).
        image_flags: (tiles,) 1 = real tile, 0 = dummy tile (see `embed`).
        document_ids: (batch, seq) sub-sample index of each token of packed rows (block-diagonal attention);
            pass position_ids restarting at 0 for each sub-sample with it.
        return_hidden: return the final normed hidden states (batch, seq, d_llm) instead of logits.
        compressed: (tiles,) bool, the tiles given `mlp2`'s fewer tokens (Flash models; see `embed`).
        """
        embeds = self.embed(input_ids, pixel_values, image_features, image_flags, compressed)
        past = cache.length if cache is not None else 0
        if position_ids is None and self.config.uses_v2pe:
            if past:
                raise ValueError("with V2PE, pass position_ids after the first call (the past's positions are floats)")
            position_ids = self.positions(input_ids, attention_mask, document_ids)
        if position_ids is None:
            position_ids = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)
            position_ids = position_ids.expand(input_ids.shape[0], -1)
        hidden = self.language(embeds, position_ids, attention_mask, cache, document_ids)
        if return_hidden:
            return hidden
        if last_only:
            hidden = hidden[:, -1:]
        return self.language.lm_head(hidden)
