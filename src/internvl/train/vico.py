"""ViCO: training a Flash model's second connector and its Visual Resolution Router (docs/flash.md).

    internvl train vico configs/vico_consistency.yaml      # stage 1: the compressed connector
    internvl train vico configs/vico_router.yaml           # stage 2: the router

Everything but the objective is the SFT recipe (`internvl.train.sft`): the data, the schedule, atomic
checkpoints with exact resume, metrics and plots. A model without Flash parts gets them at the start
(`mlp2` and the router, randomly initialised); the exported model is a Flash checkpoint.

**Stage 1, consistency.** A frozen reference (the starting model) sees every tile at full resolution; the
policy sees each real tile compressed with probability `vico.compress_probability` (the paper draws the
ratio uniformly from {1/4, 1/16}). The loss is the mean over supervised tokens of KL(reference || policy).
What trains is the compressed connector, plus the parts `freeze` leaves open. When those are all frozen the
policy at full resolution *is* the reference, so the model itself serves as the reference and no copy is
kept; otherwise a frozen copy is (computed on the fly, no cache).

**Stage 2, router.** Only the router trains. For every conversation of a micro-batch the frozen model's
mean response cross-entropy is measured with all its tiles full (L_full) and all compressed (L_small); each
of its tiles gets the ratio r = L_small / L_full. A tile's label is "compress" when r is below τ, the
`vico.ratio_percentile` percentile of the last `vico.ratio_window` ratios (this micro-batch's included), as
the ViCO paper's dynamic threshold. The router learns the labels with cross-entropy. Our choices where the
paper is silent: the loss in the ratio is the response cross-entropy (not the KL, which is 0 at full
resolution when the language model is frozen), and all tiles of one conversation share its ratio.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from internvl.data.collate import position_ids_from_documents
from internvl.errors import ConfigError
from internvl.inputs.prompt import IGNORE_INDEX
from internvl.model.flash import keep_mask
from internvl.model.internvl import InternVL
from internvl.settings import load_settings
from internvl.train import distributed, sft
from internvl.train.loss import shift_targets, token_cross_entropy


@dataclass
class ViCOLossSettings:
    stage: Literal["consistency", "router"] = "consistency"
    compress_probability: float = 0.5  # stage 1: chance that the policy sees a tile compressed
    ratio_window: int = 2048  # stage 2: how many recent tile ratios the threshold τ is taken from
    ratio_percentile: float = 50.0  # stage 2: τ = this percentile; about this share of tiles is labelled compress


@dataclass
class ViCOSettings(sft.SFTSettings):
    """The SFT recipe's settings (`internvl.train.sft.SFTSettings`) plus the ViCO stage."""

    vico: ViCOLossSettings = field(default_factory=ViCOLossSettings)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ViCOSettings:
    return load_settings(ViCOSettings, path, overrides)


def validate(config: ViCOSettings) -> None:
    sft.validate(config)
    v = config.vico
    if not 0 < v.compress_probability <= 1:
        raise ConfigError(f"vico.compress_probability must be in (0, 1], got {v.compress_probability}")
    if v.ratio_window < 1:
        raise ConfigError(f"vico.ratio_window must be at least 1, got {v.ratio_window}")
    if not 0 < v.ratio_percentile < 100:
        raise ConfigError(f"vico.ratio_percentile must be in (0, 100), got {v.ratio_percentile}")
    if config.lora.language_rank or config.lora.vision_rank:
        raise ConfigError("ViCO trains without LoRA: set lora.language_rank and lora.vision_rank to 0")
    if config.v2pe.mode != "none":
        raise ConfigError("ViCO trains with ordinary positions: set v2pe.mode to none")
    if config.distributed.strategy == "fsdp":
        raise ConfigError("ViCO supports one process or DDP, not FSDP: set distributed.strategy to ddp")
    if config.checkpoint.weights != "full":
        raise ConfigError("ViCO adds parts to the model: set checkpoint.weights to full so checkpoints hold them")


# ----------------------------------------------------------------------------------------------
# Cutting a training batch to its compressed tiles


def batch_keep_mask(
    input_ids: torch.Tensor, image_token_id: int, compressed: torch.Tensor, full: int, small: int
) -> torch.Tensor:
    """(B, T) bool: the positions kept when the real tiles `compressed` (in row-major order) are cut."""
    keep = torch.ones_like(input_ids, dtype=torch.bool)
    start = 0
    for row in range(input_ids.shape[0]):
        tiles = int((input_ids[row] == image_token_id).sum()) // full
        keep[row] = keep_mask(input_ids[row], image_token_id, compressed[start : start + tiles], full, small)
        start += tiles
    if start != compressed.shape[0]:
        raise ValueError(f"the rows hold {start} tiles but {compressed.shape[0]} choices were given")
    return keep


def cut_batch(x: dict[str, torch.Tensor], labels: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model inputs and `labels` of a batch with the positions `keep` drops removed, rows re-padded at the
    right; returns the inputs with "labels" added, an attention mask and recomputed positions."""
    rows, length = keep.shape[0], int(keep.sum(1).max())
    device = keep.device
    out = {k: v for k, v in x.items() if k not in ("input_ids", "attention_mask", "position_ids", "document_ids")}
    ids = torch.zeros(rows, length, dtype=torch.long, device=device)
    new_labels = torch.full((rows, length), IGNORE_INDEX, dtype=torch.long, device=device)
    mask = torch.zeros(rows, length, dtype=torch.long, device=device)
    old_documents = x.get("document_ids")
    documents = torch.zeros(rows, length, dtype=torch.long, device=device)
    old_mask = x.get("attention_mask")
    for row in range(rows):
        kept = keep[row]
        n = int(kept.sum())
        ids[row, :n] = x["input_ids"][row][kept]
        new_labels[row, :n] = labels[row][kept]
        mask[row, :n] = 1 if old_mask is None else old_mask[row][kept]
        if old_documents is not None:
            documents[row, :n] = old_documents[row][kept]
            documents[row, n:] = int(old_documents[row].max()) + 1  # padding: its own document
    out.update(input_ids=ids, labels=new_labels, attention_mask=mask)
    if old_documents is not None:
        out["document_ids"] = documents
        out["position_ids"] = position_ids_from_documents(documents.cpu()).to(device)
    else:
        out["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
    return out


def supervised(labels: torch.Tensor, document_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (B, T), keep (B, T) bool): what each position predicts, and where that counts."""
    targets, weights = shift_targets(labels, (labels != IGNORE_INDEX).float(), document_ids)
    return targets, (weights != 0) & (targets != IGNORE_INDEX)


# ----------------------------------------------------------------------------------------------
# Stage 1: consistency


class ConsistencyLoss(nn.Module):
    """The policy's forward on the cut batch and the KL from the reference's distributions, in one module
    (so that DDP sees the output head)."""

    def __init__(self, model: InternVL, chunk_size: int) -> None:
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(
        self, reference_hidden: torch.Tensor, compressed: torch.Tensor, targets_keep: torch.Tensor, **x: torch.Tensor
    ) -> torch.Tensor:
        """-> Σ over supervised tokens of KL(reference || policy), float32."""
        hidden = self.model(**x, compressed=compressed, return_hidden=True)[targets_keep]  # (n, d)
        head = self.model.language.lm_head
        assert self.model.compressed_projector is not None
        # a zero that uses the trained connector: a micro-batch with no compressed tile still backpropagates
        total = sum(p.reshape(-1)[0].float() * 0 for p in self.model.compressed_projector.parameters())
        assert isinstance(total, torch.Tensor)
        for start in range(0, hidden.shape[0], self.chunk_size):
            piece = slice(start, start + self.chunk_size)
            with torch.no_grad():
                reference = F.log_softmax(head(reference_hidden[piece]).float(), -1)
            policy = F.log_softmax(head(hidden[piece]).float(), -1)
            total = total + F.kl_div(policy, reference, log_target=True, reduction="sum")
        return total


class ConsistencySteps:
    """ViCO stage 1's step (module docstring)."""

    def __init__(self, model: InternVL, config: ViCOSettings, state: distributed.Distributed) -> None:
        base_trains = any(p.requires_grad for p in model.parameters())  # Flash parts are frozen by set_trainable
        if model.compressed_projector is None:
            model.add_flash_parts()
        assert model.compressed_projector is not None and model.router is not None
        self.reference = model
        if base_trains:  # the policy will drift at full resolution too: keep the starting model
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        model.compressed_projector.requires_grad_(True).train()
        model.router.requires_grad_(False).eval()
        self.model = model
        self.module: nn.Module = ConsistencyLoss(model, config.train.loss_chunk_size)
        self.state = state
        self.probability = config.vico.compress_probability
        self.seed = config.seed
        self.draws = 0  # micro-batches drawn so far (checkpointed: a resumed run draws the same tiles)

    def draw(self, tiles: int, device: torch.device) -> torch.Tensor:
        key = (self.seed * 1_000_003 + self.state.rank * 10_007 + self.draws) % 2**63
        self.draws += 1
        generator = torch.Generator().manual_seed(key)
        return (torch.rand(tiles, generator=generator) < self.probability).to(device)

    def step(self, wrapped: nn.Module, batches: list[dict[str, Any]], autocast: dict[str, Any]) -> dict[str, float]:
        state, accum = self.state, len(batches)
        model = self.model
        image_token = model.image_token_id
        assert image_token is not None
        total_loss, total_tokens, total_share = 0.0, 0, 0.0
        for index, batch in enumerate(batches):
            x = sft.model_inputs(batch, state.device)
            x.pop("loss_weight", None)
            labels = x.pop("labels")
            targets, keep = supervised(labels, x.get("document_ids"))
            with torch.no_grad(), torch.autocast(**autocast):
                reference_hidden = self.reference(**x, return_hidden=True)[keep]
            flags = x.get("image_flags")
            tiles = 0 if x.get("pixel_values") is None else int(x["pixel_values"].shape[0])
            real = torch.ones(tiles, dtype=torch.bool, device=state.device) if flags is None else flags.bool()
            compressed = torch.zeros(tiles, dtype=torch.bool, device=state.device)
            compressed[real] = self.draw(int(real.sum()), state.device)
            cut_keep = batch_keep_mask(
                x["input_ids"],
                image_token,
                compressed[real],
                model.config.num_image_token,
                model.config.num_compressed_image_token,
            )
            cut = cut_batch(x, labels, cut_keep)
            _, cut_supervised = supervised(cut.pop("labels"), cut.get("document_ids"))
            tokens = int(keep.sum())
            if int(cut_supervised.sum()) != tokens:
                raise RuntimeError("cutting image tokens changed the supervised tokens (a label on an image token?)")
            with distributed.gradient_sync(wrapped, enabled=index == accum - 1):
                with torch.autocast(**autocast):
                    kl_sum = wrapped(reference_hidden, compressed, cut_supervised, **cut)
                (kl_sum / max(tokens, 1) / accum).backward()
            total_loss += float(kl_sum.detach()) / max(tokens, 1) / accum
            total_tokens += tokens
            total_share += float(compressed[real].float().mean()) / accum if bool(real.any()) else 0.0
        reduced = torch.tensor([total_loss, total_share], dtype=torch.float64)
        state.all_reduce_sum(reduced)
        return {"loss": float(reduced[0]) / state.world_size, "compressed_share": float(reduced[1]) / state.world_size}

    def state_dict(self) -> dict[str, Any]:
        return {"vico_draws": self.draws}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.draws = int(state.get("vico_draws", 0))


# ----------------------------------------------------------------------------------------------
# Stage 2: router


class RouterLoss(nn.Module):
    """The router's cross-entropy on its tiles' labels (0 = compress, 1 = keep)."""

    def __init__(self, model: InternVL) -> None:
        super().__init__()
        self.model = model

    def forward(self, grid: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.model.router is not None
        logits = self.model.router(grid.reshape(grid.shape[0], -1, grid.shape[-1])).float()
        return F.cross_entropy(logits, labels), logits.detach()


def conversation_losses(
    model: InternVL, x: dict[str, torch.Tensor], labels: torch.Tensor, features: torch.Tensor, chunk_size: int
) -> dict[tuple[int, int], float]:
    """{(row, document): mean response cross-entropy} of a (possibly cut) batch read with `features`."""
    documents = x.get("document_ids")
    targets, keep = supervised(labels, documents)
    inputs = {k: v for k, v in x.items() if k not in ("pixel_values", "image_flags")}
    hidden = model(**inputs, image_features=features, return_hidden=True)
    losses = token_cross_entropy(model.language.lm_head, hidden[keep], targets[keep], chunk_size)
    rows = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(labels)[keep]
    docs = documents[keep] if documents is not None else torch.zeros_like(rows)
    sums: dict[tuple[int, int], list[float]] = {}
    for row, doc, loss in zip(rows.tolist(), docs.tolist(), losses.tolist()):
        entry = sums.setdefault((row, doc), [0.0, 0.0])
        entry[0] += loss
        entry[1] += 1
    return {key: total / count for key, (total, count) in sums.items()}


def tile_conversations(
    input_ids: torch.Tensor, document_ids: torch.Tensor | None, image_token_id: int, full: int
) -> list[tuple[int, int]]:
    """(row, document) of each real tile, in row-major tile order."""
    owners = []
    for row in range(input_ids.shape[0]):
        slots = (input_ids[row] == image_token_id).nonzero().reshape(-1)
        for first in slots[::full].tolist():
            owners.append((row, int(document_ids[row, first]) if document_ids is not None else 0))
    return owners


class RouterSteps:
    """ViCO stage 2's step (module docstring)."""

    def __init__(self, model: InternVL, config: ViCOSettings, state: distributed.Distributed) -> None:
        if model.router is None or model.compressed_projector is None:
            raise ConfigError(
                "ViCO's router stage needs a Flash model whose compressed connector has been trained: run the "
                "consistency stage first (vico.stage=consistency) and start from its export"
            )
        model.requires_grad_(False).eval()
        model.router.requires_grad_(True).train()
        pooling = model.router.pooling
        for unused in (pooling.attn3, pooling.norm3, pooling.attn4, pooling.norm4):  # the official forward skips them
            unused.requires_grad_(False)
        self.model = model
        self.module: nn.Module = RouterLoss(model)
        self.state = state
        self.settings = config.vico
        self.chunk_size = config.train.loss_chunk_size
        self.ratios: deque[float] = deque(maxlen=config.vico.ratio_window)

    @torch.no_grad()
    def labels(
        self, x: dict[str, torch.Tensor], labels: torch.Tensor, grid: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        """The real tiles' labels (tiles,) (0 = compress, 1 = keep) and the threshold τ."""
        model = self.model
        image_token = model.image_token_id
        assert image_token is not None
        full, small = model.config.num_image_token, model.config.num_compressed_image_token
        tiles = grid.shape[0]
        at_full = conversation_losses(model, x, labels, model.connect(grid), self.chunk_size)
        everything = torch.ones(tiles, dtype=torch.bool, device=grid.device)
        cut = cut_batch(x, labels, batch_keep_mask(x["input_ids"], image_token, everything, full, small))
        cut_labels = cut.pop("labels")
        at_small = conversation_losses(model, cut, cut_labels, model.connect(grid, everything), self.chunk_size)
        owners = tile_conversations(x["input_ids"], x.get("document_ids"), image_token, full)
        ratios = [at_small.get(owner, 1.0) / max(at_full.get(owner, 1.0), 1e-6) for owner in owners]
        self.ratios.extend(ratios)
        tau = float(torch.quantile(torch.tensor(list(self.ratios)), self.settings.ratio_percentile / 100))
        return torch.tensor([0 if r < tau else 1 for r in ratios], device=grid.device), tau

    def step(self, wrapped: nn.Module, batches: list[dict[str, Any]], autocast: dict[str, Any]) -> dict[str, float]:
        state, accum = self.state, len(batches)
        model = self.model
        totals = {"loss": 0.0, "router_accuracy": 0.0, "compression_rate": 0.0, "label_compress_share": 0.0}
        tau = 0.0
        for index, batch in enumerate(batches):
            x = sft.model_inputs(batch, state.device)
            x.pop("loss_weight", None)
            labels = x.pop("labels")
            pixels = x.get("pixel_values")
            if pixels is None:
                continue
            flags = x.get("image_flags")
            with torch.no_grad(), torch.autocast(**autocast):
                grid = model.vision_grid(pixels)
                if flags is not None:
                    grid = grid[flags.bool()]
                tile_labels, tau = self.labels(x, labels, grid)
            with distributed.gradient_sync(wrapped, enabled=index == accum - 1):
                with torch.autocast(**autocast):
                    loss, logits = wrapped(grid.float(), tile_labels)
                (loss / accum).backward()
            probability = logits.softmax(-1)[:, 0]
            totals["loss"] += float(loss.detach()) / accum
            totals["router_accuracy"] += float((logits.argmax(-1) == tile_labels).float().mean()) / accum
            threshold = model.config.flash_absolute_threshold
            totals["compression_rate"] += float((probability >= threshold).float().mean()) / accum
            totals["label_compress_share"] += float((tile_labels == 0).float().mean()) / accum
        names = sorted(totals)
        reduced = torch.tensor([totals[name] for name in names], dtype=torch.float64)
        state.all_reduce_sum(reduced)
        metrics = {name: float(value) / state.world_size for name, value in zip(names, reduced)}
        metrics["tau"] = tau
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"vico_ratios": list(self.ratios)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ratios.clear()
        self.ratios.extend(float(r) for r in state.get("vico_ratios", []))


def vico_objective(
    model: InternVL, config: sft.SFTSettings, state: distributed.Distributed, source: Any
) -> ConsistencySteps | RouterSteps:
    if not isinstance(config, ViCOSettings):
        raise ConfigError("the ViCO objective needs ViCO settings (internvl.train.vico.load_config)")
    if config.vico.stage == "consistency":
        return ConsistencySteps(model, config, state)
    return RouterSteps(model, config, state)


def run(config: ViCOSettings) -> dict[str, Any]:
    """Train as `config` says (module docstring); returns what `internvl.train.sft.run` returns."""
    validate(config)
    return sft.run(config, make_objective=vico_objective)
