"""The MPO objective (docs/mpo.md#the-loss): preference, quality and generation losses of one micro-batch.

A micro-batch holds B pairs as 2B rows, the chosen answers first, then the rejected ones in the same
order. For each row, logp(y) is the sum of log pi(y_t | x, y_<t) over its supervised positions (the
answer and its end token). With the reference model's sums cached (ref_c, ref_r) and beta:

    r_c = beta * (logp(y_c) - ref_c)          r_r = beta * (logp(y_r) - ref_r)
    sigmoid   (DPO)   -log s(r_c - r_r)
    bco_pair  (BCO)   -log s(r_c - delta) - log s(-(r_r - delta))
    sft               mean over the chosen rows' supervised tokens of -log pi(y_t)

and the loss is sum_k weight_k * mean over pairs of loss_k (sft is one number per micro-batch). MPO uses
weights 0.8, 0.2 and 1.0. delta is a running mean of the rewards (`RunningMean`): InternVL's MPO trainer
(`internvl_chat/internvl/train/trainer_dpo.py`, on TRL 0.x) updates it with each micro-batch's
mean(cat(r_c, r_r)) before using it; TRL 1.x dropped it (delta = 0), which `bco_delta: zero` reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from internvl.errors import ConfigError

LOSS_TYPES = ("sigmoid", "bco_pair", "sft")


@dataclass
class PreferenceLossSettings:
    beta: float = 0.1  # reward scale (TRL's default; InternVL's scripts do not change it)
    loss_types: list[str] = field(default_factory=lambda: list(LOSS_TYPES))  # any of sigmoid, bco_pair, sft
    loss_weights: list[float] = field(default_factory=lambda: [0.8, 0.2, 1.0])  # one per loss type
    bco_delta: Literal["running", "zero"] = "running"  # running: InternVL's MPO (TRL 0.x); zero: TRL 1.x


def check_loss_settings(settings: PreferenceLossSettings) -> None:
    unknown = [t for t in settings.loss_types if t not in LOSS_TYPES]
    if unknown or not settings.loss_types:
        raise ConfigError(f"mpo.loss_types must be a non-empty list of {', '.join(LOSS_TYPES)}; got {unknown or []}")
    if len(set(settings.loss_types)) != len(settings.loss_types):
        raise ConfigError(f"mpo.loss_types lists a type twice: {settings.loss_types}")
    if len(settings.loss_weights) != len(settings.loss_types):
        raise ConfigError(
            f"mpo.loss_weights needs one weight per loss type: {len(settings.loss_types)} types, "
            f"{len(settings.loss_weights)} weights"
        )
    if not all(w == w and abs(w) != float("inf") for w in settings.loss_weights):
        raise ConfigError(f"mpo.loss_weights must be finite numbers, got {settings.loss_weights}")
    if not (settings.beta > 0 and settings.beta != float("inf")):
        raise ConfigError(f"mpo.beta must be a finite number > 0, got {settings.beta}")
    if settings.bco_delta not in ("running", "zero"):
        raise ConfigError(f"mpo.bco_delta must be running or zero, got {settings.bco_delta!r}")


class RunningMean:
    """The running mean of TRL 0.x's `RunningMoments`, as the BCO loss reads it: count starts at 1e-24,
    and each update merges one number x (the micro-batch's mean reward) as mean += (x - mean) / (count + 1).
    Its state goes into checkpoints, so a resumed run continues with the same delta."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.count = 1e-24

    def update(self, value: float, count: float = 1.0) -> float:
        """Merge the mean `value` of `count` numbers (one per rank: TRL gathers the ranks' micro-batch
        means) and return the new mean."""
        total = self.count + count
        self.mean += (value - self.mean) * count / total
        self.count = total
        return self.mean

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.count = float(state["mean"]), float(state["count"])


@dataclass
class PreferenceLoss:
    """The micro-batch loss and what to log about it (all detached but `loss`)."""

    loss: torch.Tensor  # scalar with gradient
    per_type: dict[str, float]  # each loss type's mean over the pairs, before weighting
    chosen_rewards: torch.Tensor  # (B,) beta * (logp_c - ref_c)
    rejected_rewards: torch.Tensor  # (B,)


def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(R, T) per-token log-probs and (R, T) 0/1 mask of supervised positions -> (R,) sums."""
    return (token_logps * mask).sum(dim=1)


def preference_loss(
    token_logps: torch.Tensor,
    mask: torch.Tensor,
    reference_logps: torch.Tensor,
    settings: PreferenceLossSettings,
    delta: float = 0.0,
) -> PreferenceLoss:
    """The MPO loss of one micro-batch (module docstring).

    token_logps: (2B, T) log pi(y_t) at every position (any value where mask is 0), chosen rows first.
    mask: (2B, T) 1 at supervised positions. reference_logps: (2B,) the reference model's sums, same order.
    delta: the BCO shift (see `RunningMean`), already updated with this micro-batch when running.
    """
    if token_logps.shape[0] % 2:
        raise ValueError(
            f"a preference micro-batch has an even number of rows (chosen, rejected); got {token_logps.shape[0]}"
        )
    mask = mask.to(token_logps.dtype)
    logps = sequence_logps(token_logps, mask)
    chosen, rejected = logps.float().chunk(2)
    ref_chosen, ref_rejected = reference_logps.float().to(logps.device).chunk(2)
    chosen_rewards = settings.beta * (chosen - ref_chosen)
    rejected_rewards = settings.beta * (rejected - ref_rejected)
    total = logps.new_zeros((), dtype=torch.float32)
    per_type: dict[str, float] = {}
    for loss_type, weight in zip(settings.loss_types, settings.loss_weights):
        if loss_type == "sigmoid":
            value = (-F.logsigmoid(chosen_rewards - rejected_rewards)).mean()
        elif loss_type == "bco_pair":
            value = (-F.logsigmoid(chosen_rewards - delta) - F.logsigmoid(-(rejected_rewards - delta))).mean()
        elif loss_type == "sft":
            chosen_tokens, _ = token_logps.float().chunk(2)
            chosen_mask, _ = mask.float().chunk(2)
            value = -(chosen_tokens * chosen_mask).sum() / chosen_mask.sum().clamp(min=1.0)
        else:
            raise ConfigError(f"unknown preference loss type {loss_type!r}; choose from {', '.join(LOSS_TYPES)}")
        per_type[loss_type] = float(value.detach())
        total = total + weight * value
    return PreferenceLoss(total, per_type, chosen_rewards.detach(), rejected_rewards.detach())


def micro_batch_reward_mean(
    token_logps: torch.Tensor, mask: torch.Tensor, reference_logps: torch.Tensor, beta: float
) -> float:
    """mean(cat(r_c, r_r)) of a micro-batch: the number TRL 0.x feeds its running mean before the BCO loss."""
    logps = sequence_logps(token_logps.detach().float(), mask.float())
    return float((beta * (logps - reference_logps.float().to(logps.device))).mean())
