"""AdamW with one parameter group per (model part, decay or not), and the warm-up + cosine schedule.

The schedule has no state of its own: before each optimiser step the recipe sets every group's lr to
`peak_lr x lr_factor(step)`, the curve of transformers' `get_cosine_schedule_with_warmup`.

Parts are the model's three top-level modules: `vision`, `projector`, `language`; each can have its own
learning rate. A Flash model's second connector counts as `projector`, its router as `router`
(docs/flash.md). Weight decay applies to matrices only (linear / conv / embedding weights, LoRA A and B,
the ViT's CLS and position embeddings); norms, biases and the ViT layer scales (all 1-D) are not decayed,
as transformers' Trainer does for norms and biases.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

PARTS = ("vision", "projector", "language")
PART_OF_MODULE = {"vision": "vision", "projector": "projector", "language": "language"}
PART_OF_MODULE.update({"compressed_projector": "projector", "router": "router"})  # Flash models
GROUP_ORDER = (*PARTS, "router")


def part_of(name: str) -> str:
    """'language.layers.0.attn.qkv.weight' -> 'language' (also through wrapper prefixes like 'model.')."""
    for piece in name.split("."):
        if piece in PART_OF_MODULE:
            return PART_OF_MODULE[piece]
    raise ValueError(f"parameter {name!r} belongs to no model part {GROUP_ORDER}")


def decays(name: str, param: torch.Tensor) -> bool:
    return param.dim() >= 2 and not name.endswith(".bias")


def parameter_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    part_lr: dict[str, float | None] | None = None,
) -> list[dict]:
    """AdamW groups of the trainable parameters: for each part, decayed and undecayed.

    Each group carries `name` ("language/decay"), `part`, its own `peak_lr` (= initial `lr`) and `weight_decay`.
    """
    part_lr = part_lr or {}
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        part = part_of(name)
        decay = decays(name, param)
        key = (part, decay)
        if key not in groups:
            group_lr = part_lr.get(part)
            groups[key] = {
                "name": f"{part}/{'decay' if decay else 'no_decay'}",
                "part": part,
                "params": [],
                "param_names": [],
                "lr": lr if group_lr is None else group_lr,
                "peak_lr": lr if group_lr is None else group_lr,
                "weight_decay": weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    order = {(p, d): i for i, (p, d) in enumerate((p, d) for p in GROUP_ORDER for d in (True, False))}
    return [groups[k] for k in sorted(groups, key=order.__getitem__)]


def build_optimizer(
    groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> torch.optim.AdamW:
    if not groups:
        raise ValueError("no trainable parameters: every part is frozen and no LoRA adapter is set")
    clean = [{k: v for k, v in g.items() if k != "param_names"} for g in groups]
    return torch.optim.AdamW(clean, betas=betas, eps=eps)


def warmup_steps_for(max_steps: int, warmup_steps: int, warmup_ratio: float) -> int:
    """`warmup_steps` when positive, else ceil(ratio · max_steps) (transformers' rule)."""
    return warmup_steps if warmup_steps > 0 else math.ceil(warmup_ratio * max_steps)


def lr_factor(step: int, max_steps: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate for the optimiser step with index `step` (0-based).

    Linear warm-up 0 -> 1 over `warmup` steps, then half a cosine from 1 to `min_ratio` at `max_steps`:
    the same curve as transformers' `get_cosine_schedule_with_warmup` (which uses min_ratio 0).
    """
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, max_steps - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return min_ratio + (1.0 - min_ratio) * cosine


def set_learning_rates(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """lr of every group = its peak lr x the schedule's factor (called before each optimiser step).

    The schedule is a pure function of the step: resuming needs only the step, and a resumed run with a
    changed `max_steps` follows the new schedule.
    """
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * factor
