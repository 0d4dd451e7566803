"""Supervised fine-tuning (docs/sft.md): the whole recipe on one page, configured by one YAML file.

    internvl train sft configs/sft_lora.yaml optim.lr=1e-4 train.max_steps=200
    torchrun --nproc_per_node 8 -m internvl.cli train sft configs/sft_full.yaml

Steps, in the order `run` takes them: join the process group -> build the model (a checkpoint folder,
or a named shape with random weights) -> LoRA adapters -> freeze parts (frozen parts in eval mode) ->
activation checkpointing -> wrap for DDP / FSDP2 -> AdamW groups per part -> warm-up + cosine schedule ->
batch stream -> resume (weights, optimiser, schedule, data position, RNG) -> per step: fetch the
micro-batches, compute Σw of the whole step, forward + chunked loss + backward per micro-batch (bf16
autocast), reduce statistics, stop on a non-finite loss, clip, step -> log, checkpoint -> plot.

Loss of one optimiser step (docs/sft.md#loss-weights): Σ_t w_t·CE_t / Σ_t w_t with both sums over every micro-batch
of the step on every rank (`train.loss_normalization: global`). It does not depend on how the global
batch is split into ranks and accumulation steps, so 2 ranks x 1 micro-batch give the same update as
1 rank x 2 micro-batches. `micro_batch` reproduces the official code instead: each micro-batch is
normalised by its own Σw (all-reduced AVG over ranks) and the accumulated micro-batches are averaged;
with one micro-batch per step the two are identical.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import numpy as np
import torch
from torch import nn

from internvl.config import check_v2pe_delta
from internvl.data import loader
from internvl.errors import CheckpointError, ConfigError
from internvl.model.internvl import InternVL
from internvl.model.llm import MoEMLP
from internvl.model.v2pe import count_images, random_deltas
from internvl.settings import dump_yaml, from_dict, load_settings
from internvl.shipped import model_folder
from internvl.train import TrainingError, checkpoint, data, distributed, lora, optim
from internvl.train.loss import load_balancing_loss, shift_targets, weighted_cross_entropy_sum
from internvl.train.metrics import MetricsLog, plot_metrics
from internvl.weights import check_destination, load_model, save_model

PARTS = optim.PARTS


# ----------------------------------------------------------------------------------------------
# Settings: every knob of the recipe, its default and its meaning, in one place


@dataclass
class ModelSettings:
    path: str = ""  # checkpoint folder to fine-tune (original or hf layout)
    preset: str = ""  # instead of `path`: a shape from internvl.presets with random weights (benchmarks, smoke runs)
    image_token_id: int | None = None  # <IMG_CONTEXT> id; default: from the checkpoint config or its tokenizer files
    dtype: Literal["float32", "bfloat16"] = "float32"  # dtype of the trained weights (bf16 compute: train.precision)


@dataclass
class FreezeSettings:
    """Frozen parts get no gradients and run in eval mode (docs/sft.md#freezing-and-lora freeze_backbone / freeze_mlp / freeze_llm).
    A part with LoRA adapters always has its base weights frozen (only the adapters train)."""

    vision: bool = False
    projector: bool = False
    language: bool = False


@dataclass
class LoraSettings:
    language_rank: int = 0  # use_llm_lora: rank of the adapters on attn.qkv, attn.o, mlp.gate_up, mlp.down; 0 = none
    vision_rank: int = 0  # use_backbone_lora: rank on the ViT's attn.qkv, attn.proj, mlp.fc1, mlp.fc2; 0 = none
    alpha_multiplier: float = 2.0  # lora_alpha = multiplier x rank (official: 2r)
    dropout: float = 0.05  # dropout on the adapter input


@dataclass
class DataSettings:
    source: str = ""  # required: `package.module:function` building this rank's batch source, or `synthetic` (data.py)
    options: dict = field(default_factory=dict)  # the source types them (packed_batches: data.loader.PackedDataOptions)


@dataclass
class OptimSettings:
    lr: float = (
        4e-5  # peak learning rate (docs/sft.md#hyper-parameters: 1e-5 .. 8e-5 full, 4e-5 LoRA, 2e-4 projector warm-up)
    )
    lr_vision: float | None = None  # per-part peak learning rates; None = `lr`
    lr_projector: float | None = None
    lr_language: float | None = None
    weight_decay: float = 0.05  # on matrices only; norms, biases and layer scales are not decayed
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 0  # linear warm-up steps; 0 = ceil(warmup_ratio x max_steps)
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0  # the cosine ends at min_lr_ratio x lr
    max_grad_norm: float = 1.0  # clip the global gradient norm; 0 = no clipping (the norm is still logged)


@dataclass
class TrainSettings:
    max_steps: int = 0  # optimiser steps; 0 = epochs x (micro-batches per pass / gradient_accumulation_steps)
    epochs: int = 1  # used only when max_steps is 0 (needs a source with a length)
    stop_at_step: int = 0  # stop early at this step (checkpointing first), e.g. for time-limited jobs; 0 = max_steps
    gradient_accumulation_steps: int = 1  # micro-batches per rank per optimiser step
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 = autocast to bfloat16 (weights and optimiser stay fp32)
    activation_checkpointing: bool = False  # recompute ViT and decoder layers in backward (model flags)
    loss_chunk_size: int = 1024  # supervised positions per output-head chunk (bounds the logits' memory)
    loss_normalization: Literal["global", "micro_batch"] = "global"  # see the module docstring
    moe_aux_loss_coef: float | None = None  # load-balancing loss weight; None = the model's router_aux_loss_coef
    device: str = "auto"  # auto (cuda if available) | cpu | cuda


@dataclass
class CheckpointSettings:
    enabled: bool = True  # false: write no checkpoint at all (benchmarks, smoke runs)
    every_steps: int = 500  # save every N steps (and at the last step); 0 = only at the end
    keep_last: int = 2  # complete checkpoints kept; older ones are removed after a new one is in place
    weights: Literal["trainable", "full"] = (
        "trainable"  # trainable: adapters / unfrozen parts (needs model.path to resume)
    )
    resume: str = "auto"  # auto: from RUN's latest checkpoint if any | never | a checkpoint folder


@dataclass
class LogSettings:
    every_steps: int = 1  # metrics.jsonl line every N steps
    progress_bar: bool = True  # tqdm on stderr (rank 0)
    plot: bool = True  # write RUN/metrics.png at the end


@dataclass
class DistributedSettings:
    strategy: Literal["ddp", "fsdp", "none"] = "ddp"  # with more than one torchrun process; none = single process only
    backend: str = ""  # "" = nccl on CUDA, gloo on CPU
    init_method: str = "env://"  # torchrun sets the env; a file:// or tcp:// URL also works
    find_unused_parameters: bool = False  # DDP; switched on automatically for MoE models (unrouted experts)


@dataclass
class V2PESettings:
    """Variable visual position encoding in training (docs/architecture.md#v2pe). none: ordinary positions;
    fixed: every image's tokens advance by `delta`; random: each image draws its step from {1, 1/2, ...,
    1/256} (the paper's training). With fixed or random, the trained model's config gets `v2pe_delta =
    delta`, the step used at inference unless a call sets another (`--v2pe-delta`)."""

    mode: Literal["none", "fixed", "random"] = "none"
    delta: float = 0.25


@dataclass
class SFTSettings:
    output_dir: str = "runs/sft"  # RUN: metrics.jsonl, metrics.png, config.yaml, checkpoints/
    seed: int = 42
    model: ModelSettings = field(default_factory=ModelSettings)
    freeze: FreezeSettings = field(default_factory=FreezeSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    log: LogSettings = field(default_factory=LogSettings)
    distributed: DistributedSettings = field(default_factory=DistributedSettings)
    v2pe: V2PESettings = field(default_factory=V2PESettings)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> SFTSettings:
    return load_settings(SFTSettings, path, overrides)


def data_options(config: SFTSettings) -> dict[str, Any]:
    """`data.options`, with the tokenizer defaulting to the model's own (`model.path`) for real data."""
    options = dict(config.data.options)
    if config.model.path and config.data.source != "synthetic" and not options.get("tokenizer"):
        options["tokenizer"] = str(config.model.path)
    return options


def validate(config: SFTSettings) -> None:
    if bool(config.model.path) == bool(config.model.preset):
        raise ConfigError("set exactly one of model.path (a checkpoint folder) and model.preset (random weights)")
    if config.model.path and not model_folder(config.model.path).is_dir():
        raise ConfigError(f"model.path {config.model.path!r} is not a folder (nor the name of a shipped model: nano)")
    if config.data.source == loader.SOURCE:
        loader.check_options(data_options(config))
    if config.train.gradient_accumulation_steps < 1:
        raise ConfigError("train.gradient_accumulation_steps must be at least 1")
    if config.train.loss_chunk_size < 1:
        raise ConfigError("train.loss_chunk_size must be at least 1")
    if config.lora.language_rank < 0 or config.lora.vision_rank < 0:
        raise ConfigError("LoRA ranks must be 0 (no adapters) or positive")
    if config.checkpoint.keep_last < 1:
        raise ConfigError("checkpoint.keep_last must be at least 1")
    if config.distributed.strategy == "none" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("distributed.strategy=none under torchrun would train unrelated copies; use ddp or fsdp")
    if len(config.optim.betas) != 2:
        raise ConfigError(f"optim.betas must be two numbers, got {config.optim.betas}")
    check_optim(config.optim)
    if config.v2pe.mode not in ("none", "fixed", "random"):
        raise ConfigError(f"v2pe.mode is none, fixed or random, got {config.v2pe.mode!r}")
    check_v2pe_delta(config.v2pe.delta, "v2pe.delta")


def check_optim(optim: OptimSettings) -> None:
    """Learning rates and the schedule's numbers make sense before any weight moves (a NaN rate would
    otherwise be caught only after it had spoiled one update)."""
    rates = {"lr": optim.lr, "lr_vision": optim.lr_vision, "lr_projector": optim.lr_projector}
    rates["lr_language"] = optim.lr_language
    for name, value in rates.items():
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"optim.{name} must be a finite number >= 0, got {value}")
    if not optim.lr > 0:
        raise ConfigError(f"optim.lr must be positive, got {optim.lr} (freeze a part to keep it fixed)")
    for name in ("weight_decay", "eps", "warmup_ratio", "min_lr_ratio", "max_grad_norm"):
        value = getattr(optim, name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"optim.{name} must be a finite number >= 0, got {value}")
    if not all(math.isfinite(b) and 0 <= b < 1 for b in optim.betas):
        raise ConfigError(f"optim.betas must lie in [0, 1), got {optim.betas}")
    if optim.warmup_steps < 0:
        raise ConfigError(f"optim.warmup_steps must be >= 0, got {optim.warmup_steps}")


# ----------------------------------------------------------------------------------------------
# Model pieces


def build_model(settings: ModelSettings) -> InternVL:
    """The model to train, on CPU, from a checkpoint folder or a preset shape (random weights)."""
    from internvl.presets import PRESETS
    from internvl.weights import image_token_id_from_tokenizer

    dtype = getattr(torch, settings.dtype)
    if settings.path:
        model = load_model(settings.path, dtype=dtype)
        if model.image_token_id is None:
            model.image_token_id = image_token_id_from_tokenizer(Path(settings.path))
    else:
        if settings.preset not in PRESETS:
            raise ConfigError(f"model.preset {settings.preset!r} is unknown; choose from {sorted(PRESETS)}")
        model = InternVL(PRESETS[settings.preset]()).to(dtype)
    if settings.image_token_id is not None:
        model.image_token_id = settings.image_token_id
    model.config.image_token_id = model.image_token_id
    return model


def set_trainable(model: InternVL, freeze: FreezeSettings, lora_settings: LoraSettings) -> dict[str, bool]:
    """requires_grad per parameter; returns {part: has trainable parameters}."""
    with_lora = {
        "language": lora_settings.language_rank > 0,
        "vision": lora_settings.vision_rank > 0,
        "projector": False,
    }
    frozen = {"vision": freeze.vision, "projector": freeze.projector, "language": freeze.language}
    for part in PARTS:
        for name, param in getattr(model, part).named_parameters():
            if with_lora[part]:
                param.requires_grad_(lora.is_adapter_parameter(name))
            else:
                param.requires_grad_(not frozen[part])
    for flash_part in (model.compressed_projector, model.router):  # they train in ViCO only (docs/flash.md)
        if flash_part is not None:
            flash_part.requires_grad_(False)
    return {part: any(p.requires_grad for p in getattr(model, part).parameters()) for part in PARTS}


def set_modes(model: InternVL, trainable: dict[str, bool]) -> None:
    """Training mode, except parts with nothing to train (eval: no router logits kept, no dropout)."""
    model.train()
    for part, trains in trainable.items():
        if not trains:
            getattr(model, part).eval()


class SFTObjective(nn.Module):
    """Model forward + chunked weighted CE (+ MoE load balancing) in one module, so that DDP and FSDP2
    see every parameter the loss touches (the output head is used here, not in the model's forward)."""

    def __init__(self, model: InternVL, chunk_size: int) -> None:
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        self._moe_layers = [m for m in model.language.modules() if isinstance(m, MoEMLP)]

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        image_flags: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (Σ w·CE over this micro-batch, MoE load-balancing loss or 0), float32 scalars."""
        hidden = self.model(
            input_ids,
            pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            image_flags=image_flags,
            document_ids=document_ids,
            return_hidden=True,
        )  # (B, T, d_llm)
        ce_sum = weighted_cross_entropy_sum(hidden, self.model.language.lm_head, targets, weights, self.chunk_size)
        router_logits = [m.last_router_logits for m in self._moe_layers if m.last_router_logits is not None]
        aux = ce_sum.new_zeros(())
        if router_logits:
            text = self.model.config.text
            mask = attention_mask.reshape(-1) if attention_mask is not None else None
            aux = load_balancing_loss(router_logits, text.num_experts, text.num_experts_per_tok, mask)
        for layer in self._moe_layers:
            layer.last_router_logits = None
        return ce_sum, aux


class Objective(Protocol):
    """What a recipe optimises (SFT here, MPO in `internvl.train.mpo`); the loop around it is shared.

    `module` is what gets wrapped for DDP / FSDP2: every parameter the loss touches. `step` runs the
    forward and backward passes of one optimiser step's micro-batches (gradients synchronised on the
    last one) and returns the step's metrics averaged over ranks, "loss" among them. Its state (for
    example a running mean the loss reads) goes into checkpoints."""

    module: nn.Module

    def step(self, wrapped: nn.Module, batches: list[dict[str, Any]], autocast: dict[str, Any]) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SFTSteps:
    """SFT's step: Σ w·CE / Σw over every micro-batch of the step on every rank (module docstring),
    plus the MoE load-balancing loss."""

    def __init__(self, model: InternVL, config: SFTSettings, state: distributed.Distributed) -> None:
        self.module: nn.Module = SFTObjective(model, config.train.loss_chunk_size)
        self.model = model
        self.state = state
        self.v2pe = config.v2pe
        self.seed = config.seed
        self.v2pe_draws = 0  # micro-batches given random V2PE steps so far (checkpointed: exact resume)
        self.normalization = config.train.loss_normalization
        self.has_experts = model.config.text.num_experts > 0
        coef = config.train.moe_aux_loss_coef
        if coef is None:
            coef = model.config.text.router_aux_loss_coef if self.has_experts else 0.0
        self.aux_coef = coef

    def step(self, wrapped: nn.Module, batches: list[dict[str, Any]], autocast: dict[str, Any]) -> dict[str, float]:
        state, accum = self.state, len(batches)
        inputs = [model_inputs(b, state.device) for b in batches]
        if self.v2pe.mode != "none":
            for x in inputs:
                x["position_ids"] = self.v2pe_positions(x)
        # Σw of every micro-batch of this step on every rank: the loss normaliser (docs/sft.md#loss-weights).
        shifted = [shift_targets(x.pop("labels"), x.pop("loss_weight"), x.get("document_ids")) for x in inputs]
        weight_sums = torch.tensor([float(w.sum()) for _, w in shifted], dtype=torch.float64)
        state.all_reduce_sum(weight_sums)
        if self.normalization == "global":
            denominators = [float(weight_sums.sum()) / state.world_size] * accum  # DDP's gradient mean ÷ world
        else:
            denominators = [float(w) / state.world_size * accum for w in weight_sums]

        step_loss = torch.zeros((), dtype=torch.float64)
        step_aux = torch.zeros((), dtype=torch.float64)
        for index, (x, (targets, weights)) in enumerate(zip(inputs, shifted)):
            with distributed.gradient_sync(wrapped, enabled=index == accum - 1):  # sync on the last one only
                with torch.autocast(**autocast):
                    ce_sum, aux = wrapped(targets=targets, weights=weights, **x)
                micro_loss = ce_sum / max(denominators[index], 1e-12)
                (micro_loss + self.aux_coef * aux / accum).backward()
            step_loss += micro_loss.detach().double().cpu()
            step_aux += aux.detach().double().cpu() / accum
        totals = torch.stack([step_loss, step_aux])
        state.all_reduce_sum(totals)
        metrics = {"loss": float(totals[0]) / state.world_size}
        if self.has_experts:
            metrics["aux_loss"] = float(totals[1]) / state.world_size
        return metrics

    def v2pe_positions(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """V2PE positions of a micro-batch: each image's step fixed, or drawn from a generator seeded by
        (seed, rank, micro-batch count), so that a resumed run draws what an uninterrupted one would."""
        ids = x["input_ids"]
        delta: float | list[float] = self.v2pe.delta
        if self.v2pe.mode == "random":
            key = (self.seed * 1_000_003 + self.state.rank * 10_007 + self.v2pe_draws) % 2**63
            generator = torch.Generator().manual_seed(key)
            delta = random_deltas(count_images(ids, self.model.image_token_id), generator)
            self.v2pe_draws += 1
        return self.model.positions(ids, x.get("attention_mask"), x.get("document_ids"), delta=delta)

    def state_dict(self) -> dict[str, Any]:
        return {"v2pe_draws": self.v2pe_draws} if self.v2pe.mode == "random" else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.v2pe_draws = int(state.get("v2pe_draws", 0))


def sft_objective(model: InternVL, config: SFTSettings, state: distributed.Distributed, source: Any) -> Objective:
    return SFTSteps(model, config, state)


MakeObjective = Callable[[InternVL, SFTSettings, distributed.Distributed, Any], Objective]


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """The contract's tensors on `device`, minus what changes nothing (an all-ones mask, one document per row)."""
    out = {k: batch[k].to(device, non_blocking=True) for k in data.TENSOR_KEYS if batch.get(k) is not None}
    mask = out.get("attention_mask")
    if mask is not None and bool(mask.all()):
        del out["attention_mask"]
    documents = out.get("document_ids")
    if documents is not None and bool((documents == documents[:, :1]).all()):
        del out["document_ids"]
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# The recipe


def run(config: SFTSettings, make_objective: MakeObjective = sft_objective) -> dict[str, Any]:
    """Train as `config` says; returns {"step", "loss", "run_dir", "checkpoint"} of the last step.
    `make_objective(model, config, state, source)` builds what is optimised (SFT by default)."""
    validate(config)
    finished = finished_run(config)
    if finished is not None:
        return finished
    state = distributed.setup(config.train.device, config.distributed.backend, config.distributed.init_method)
    try:
        return _train(config, state, make_objective)
    finally:
        distributed.teardown(state)


def finished_run(config: SFTSettings) -> dict[str, Any] | None:
    """The result of a run whose last checkpoint already reached `train.max_steps`, read without loading
    anything (running a finished recipe again says so at once); None when there is training left."""
    if config.checkpoint.resume != "auto" or config.train.max_steps <= 0:
        return None
    last = checkpoint.latest_checkpoint(config.output_dir)
    if last is None:
        return None
    trainer_state = json.loads((last / "trainer_state.json").read_text())
    if trainer_state["step"] < config.train.max_steps:
        return None
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"{config.output_dir}: already finished at step {trainer_state['step']} ({last}); "
            "raise train.max_steps to train on, or use another output_dir",
            file=sys.stderr,
        )
    return {
        "step": trainer_state["step"],
        "loss": trainer_state.get("loss", float("nan")),
        "run_dir": str(config.output_dir),
        "checkpoint": str(last),
        "already_finished": True,
    }


def _train(config: SFTSettings, state: distributed.Distributed, make_objective: MakeObjective) -> dict[str, Any]:
    config = dataclasses.replace(config)
    if config.model.path:
        config.model = dataclasses.replace(config.model, path=str(model_folder(config.model.path).resolve()))
    run_dir = Path(config.output_dir)
    accum = config.train.gradient_accumulation_steps
    autocast: dict[str, Any] = dict(
        device_type=state.device.type, dtype=torch.bfloat16, enabled=config.train.precision == "bf16"
    )

    # 1. The model: weights, adapters, what trains, modes, checkpointing flags.
    seed_everything(config.seed)
    model = build_model(config.model)
    lora.apply_lora(
        model, config.lora.language_rank, config.lora.vision_rank, config.lora.alpha_multiplier, config.lora.dropout
    )
    trainable = set_trainable(model, config.freeze, config.lora)
    if config.v2pe.mode != "none":  # checkpoints and exports carry the step used at inference
        model.config.v2pe_delta = config.v2pe.delta
    elif model.config.uses_v2pe and state.is_main:
        print(
            f"warning: the model answers with V2PE (v2pe_delta {model.config.v2pe_delta}) but v2pe.mode is none: "
            "it trains with ordinary positions; set v2pe.mode to fixed or random to train as it answers",
            file=sys.stderr,
        )
    model.vision.gradient_checkpointing = config.train.activation_checkpointing
    model.language.gradient_checkpointing = config.train.activation_checkpointing
    model.to(state.device)
    set_modes(model, trainable)
    has_experts = model.config.text.num_experts > 0
    if has_experts and state.active and config.distributed.strategy == "fsdp":
        raise ConfigError(
            "FSDP2 with MoE experts is not supported (ranks route tokens to different experts); "
            "use distributed.strategy=ddp"
        )
    # 2. What the recipe computes (SFT: weighted CE), then data parallelism (DDP) or sharding (FSDP2),
    #    then the optimiser over the wrapped parameters.
    source = data.build_batch_source(
        config.data.source, data_options(config), model.config, state.rank, state.world_size, config.seed
    )
    objective = make_objective(model, config, state, source)
    wrapped = distributed.wrap(
        objective.module,
        model,
        config.distributed.strategy,
        state,
        find_unused_parameters=config.distributed.find_unused_parameters or has_experts,
    )
    part_lr = {
        "vision": config.optim.lr_vision,
        "projector": config.optim.lr_projector,
        "language": config.optim.lr_language,
    }
    groups = optim.parameter_groups(model.named_parameters(), config.optim.lr, config.optim.weight_decay, part_lr)
    if not groups:
        raise ConfigError("nothing to train: every part is frozen and no LoRA rank is set")
    optimizer = optim.build_optimizer(groups, tuple(config.optim.betas), config.optim.eps)  # type: ignore[arg-type]
    params = [p for g in optimizer.param_groups for p in g["params"]]

    # 3. The length of the run.
    max_steps = config.train.max_steps
    if max_steps <= 0:
        if not hasattr(source, "__len__"):
            raise ConfigError("train.max_steps is 0 but the data source has no length; set train.max_steps")
        max_steps = config.train.epochs * len(source) // accum
        if max_steps <= 0:
            raise ConfigError(f"the data source gives {len(source)} micro-batches per rank: fewer than one step")
    warmup = optim.warmup_steps_for(max_steps, config.optim.warmup_steps, config.optim.warmup_ratio)
    stream = data.BatchStream(source)
    stop_at = min(max_steps, config.train.stop_at_step) if config.train.stop_at_step > 0 else max_steps

    # 4. Resume: weights, optimiser, data position, counters, RNG states (the schedule is a function of the step).
    step, samples_seen, tokens_seen = 0, 0, 0
    resume_from = find_resume(config, run_dir)
    if resume_from is not None:
        saved = checkpoint.load_checkpoint(resume_from, state.rank)
        load_weights(wrapped, model, saved["weights"], state, resume_from)
        distributed.load_optimizer_state(wrapped, optimizer, saved["optimizer"], state)
        for group, configured in zip(optimizer.param_groups, groups):  # this recipe's lrs / decay, not the saved
            group["peak_lr"], group["weight_decay"] = configured["peak_lr"], configured["weight_decay"]
        progress = saved["trainer_state"]
        stream.load_state_dict(progress["data"])
        step, samples_seen, tokens_seen = progress["step"], progress["samples"], progress["tokens"]
        if progress["world_size"] != state.world_size and state.is_main:
            print(
                f"warning: {resume_from} was written by {progress['world_size']} processes and this run has "
                f"{state.world_size}: each rank's data position is kept, so the batch order differs from an "
                "uninterrupted run",
                file=sys.stderr,
            )
        objective.load_state_dict(progress.get("objective", {}))
        if saved["rng"] is not None:
            checkpoint.set_rng_state(saved["rng"])
        else:
            seed_everything(config.seed + state.rank + step)
        if state.is_main:
            print(f"resuming from {resume_from} (step {step})", file=sys.stderr)
    else:
        seed_everything(config.seed + state.rank)
    if state.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_yaml(config), encoding="utf-8")
        checkpoint.remove_partial(run_dir)
    metrics = MetricsLog(run_dir, resume_step=step if resume_from is not None else None) if state.is_main else None

    from tqdm.auto import tqdm

    bar = tqdm(
        total=stop_at,
        initial=step,
        file=sys.stderr,
        dynamic_ncols=True,
        unit="step",
        disable=not (state.is_main and config.log.progress_bar),
    )
    last_checkpoint: Path | None = resume_from
    loss_value = float("nan")
    started = time.perf_counter()

    # 5. The loop: one optimiser step per iteration.
    while step < stop_at:
        step_start = time.perf_counter()
        batches = [next(stream) for _ in range(accum)]
        step_metrics = objective.step(wrapped, batches, autocast)

        # Statistics of the whole step over all ranks.
        real = sum(
            int(b["attention_mask"].sum()) if b.get("attention_mask") is not None else b["input_ids"].numel()
            for b in batches
        )
        every = sum(b["input_ids"].numel() for b in batches)
        samples = sum(int(b.get("num_samples", b["input_ids"].shape[0])) for b in batches)
        stats = torch.tensor([real, every, samples], dtype=torch.float64)
        state.all_reduce_sum(stats)
        loss_value = step_metrics["loss"]
        if not math.isfinite(loss_value):
            raise TrainingError(nonfinite_message("loss", loss_value, step + 1, config, last_checkpoint))

        grad_norm = distributed.clip_grad_norm(params, config.optim.max_grad_norm)
        if not math.isfinite(grad_norm):
            raise TrainingError(nonfinite_message("gradient norm", grad_norm, step + 1, config, last_checkpoint))
        factor = optim.lr_factor(step, max_steps, warmup, config.optim.min_lr_ratio)
        optim.set_learning_rates(optimizer, factor)
        lrs = {g["part"]: g["lr"] for g in optimizer.param_groups}
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        samples_seen += int(stats[2])
        tokens_seen += int(stats[0])
        seconds = time.perf_counter() - step_start
        tokens_per_s = float(stats[0]) / max(seconds, 1e-9)

        # Log, show, save.
        if metrics is not None and (step % config.log.every_steps == 0 or step == stop_at):
            record = {
                "step": step,
                "loss": loss_value,
                "lr": config.optim.lr * factor,
                "grad_norm": grad_norm,
                "tokens_per_s": tokens_per_s,
                "padding_share": 1.0 - float(stats[0]) / max(float(stats[1]), 1.0),
                "samples": samples_seen,
                "tokens": tokens_seen,
                "elapsed_s": time.perf_counter() - started,
            }
            record.update({f"lr_{part}": lr for part, lr in lrs.items()})
            record.update({name: value for name, value in step_metrics.items() if name != "loss"})
            metrics.write(record)
        bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
        bar.update(1)
        every_steps = config.checkpoint.every_steps
        if config.checkpoint.enabled and (step == stop_at or (every_steps > 0 and step % every_steps == 0)):
            progress = {
                "step": step,
                "max_steps": max_steps,
                "samples": samples_seen,
                "tokens": tokens_seen,
                "world_size": state.world_size,
                "data": stream.state_dict(),
                "schedule": {
                    "max_steps": max_steps,
                    "warmup_steps": warmup,
                    "min_lr_ratio": config.optim.min_lr_ratio,
                    "lr_factor": factor,
                },
                "loss": loss_value,
                "objective": objective.state_dict(),
            }
            last_checkpoint = save(config, run_dir, step, wrapped, model, optimizer, progress, state)
    bar.close()

    if state.is_main and config.log.plot and (run_dir / "metrics.jsonl").is_file():
        plot_metrics(run_dir)
    return {
        "step": step,
        "loss": loss_value,
        "run_dir": str(run_dir),
        "checkpoint": str(last_checkpoint) if last_checkpoint else None,
    }


def nonfinite_message(what: str, value: float, step: int, config: SFTSettings, last: Path | None) -> str:
    return (
        f"step {step}: the {what} is {value} (not finite); training stopped before the optimiser step, so no weight "
        f"was changed by it. The last checkpoint is {last if last else 'none (no checkpoint written yet)'}. "
        f"Things to try: a lower learning rate (optim.lr={config.optim.lr:g}) or a longer warm-up "
        f"(optim.warmup_steps / optim.warmup_ratio), gradient clipping "
        f"(optim.max_grad_norm={config.optim.max_grad_norm:g}), train.precision=fp32 (now {config.train.precision}) "
        "if bf16 overflows, and a look at the samples of this step (empty answers, broken images, extreme lengths); "
        "then resume from the last checkpoint (checkpoint.resume=auto)."
    )


# ----------------------------------------------------------------------------------------------
# Checkpoints of this recipe


def find_resume(config: SFTSettings, run_dir: Path) -> Path | None:
    choice = config.checkpoint.resume
    if choice == "never":
        return None
    if choice == "auto":
        return checkpoint.latest_checkpoint(run_dir)
    return checkpoint.resolve_checkpoint(choice)


def trainable_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def save(
    config: SFTSettings,
    run_dir: Path,
    step: int,
    wrapped: nn.Module,
    model: InternVL,
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
    state: distributed.Distributed,
) -> Path:
    """Gather full weights and optimiser state (collective), then write the checkpoint atomically."""
    full = distributed.model_state(wrapped, state)  # "model.<our name>" -> tensor, on rank 0
    keep = trainable_names(model) if config.checkpoint.weights == "trainable" else None
    weights = {}
    for key, tensor in full.items():
        name = key.removeprefix("model.")
        if keep is None or name in keep:
            weights[name] = tensor
    if model.config.text.tie_word_embeddings:
        weights.pop("language.lm_head.weight", None)  # the same tensor as language.embed.weight
    optimizer_state = distributed.optimizer_state(wrapped, optimizer, state)
    return checkpoint.save_checkpoint(
        run_dir,
        step,
        state,
        weights=weights,
        optimizer=optimizer_state,
        trainer_state=progress,
        config_yaml=dump_yaml(config),
        keep_last=config.checkpoint.keep_last,
    )


def load_weights(
    wrapped: nn.Module, model: InternVL, weights: dict[str, torch.Tensor], state: distributed.Distributed, folder: Path
) -> None:
    names = {name for name, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    unknown = sorted(set(weights) - names - {"language.lm_head.weight"})
    if unknown:
        raise CheckpointError(f"{folder}: tensor {unknown[0]!r} is not a parameter of this model (another recipe?)")
    missing = sorted(trainable_names(model) - set(weights))
    if missing:
        raise CheckpointError(
            f"{folder}: trainable parameter {missing[0]!r} is missing; it was saved with other freeze / LoRA settings"
        )
    distributed.load_model_state(wrapped, {f"model.{k}": v for k, v in weights.items()}, state)


def export_model(
    checkpoint_path: str | Path,
    out: str | Path,
    layout: str = "original",
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """A run's checkpoint as a plain model folder: LoRA merged into the base weights, loadable by
    `internvl.weights.load_model` (and the official / transformers code for the layout)."""
    from safetensors.torch import load_file

    from internvl.weights import TOKENIZER_FILES

    folder = checkpoint.resolve_checkpoint(checkpoint_path)
    check_destination(Path(out), overwrite)  # before the work: a bad destination fails at once
    model_settings, lora_settings, v2pe = checkpoint_model_settings(folder)
    model = build_model(model_settings)
    if v2pe.mode != "none":
        model.config.v2pe_delta = v2pe.delta
    lora.apply_lora(
        model,
        lora_settings.language_rank,
        lora_settings.vision_rank,
        lora_settings.alpha_multiplier,
        lora_settings.dropout,
    )
    weights = load_file(str(folder / "model.safetensors"))
    if not model.config.flash and any(k.startswith(("compressed_projector.", "router.")) for k in weights):
        model.add_flash_parts()  # trained by ViCO from a plain model (internvl.train.vico)
    names = set(model.state_dict())
    unknown = sorted(set(weights) - names)
    if unknown:
        raise CheckpointError(f"{folder}: tensor {unknown[0]!r} does not belong to the model its config.yaml describes")
    model.load_state_dict(weights, strict=False)
    lora.merge_lora(model)
    model.eval()
    if dtype is not None:
        model.to(dtype)
    out = Path(out)
    save_model(model, out, layout=layout, overwrite=overwrite)
    if model_settings.path:
        for name in TOKENIZER_FILES:
            if (Path(model_settings.path) / name).is_file():
                shutil.copy2(Path(model_settings.path) / name, out / name)
    return out


def checkpoint_model_settings(folder: Path) -> tuple[ModelSettings, LoraSettings, V2PESettings]:
    """The model, LoRA and V2PE settings a checkpoint was trained with (any recipe: SFT, MPO, GSPO), from its
    config.yaml."""
    import yaml

    path = folder / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CheckpointError(f"{path}: cannot read the run's settings ({e})") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not a recipe (a mapping of settings)")
    model_settings = from_dict(ModelSettings, raw.get("model", {}), source=str(path), prefix="model.")
    lora_settings = from_dict(LoraSettings, raw.get("lora") or {}, source=str(path), prefix="lora.")
    v2pe = from_dict(V2PESettings, raw.get("v2pe") or {}, source=str(path), prefix="v2pe.")
    return model_settings, lora_settings, v2pe
