"""Mixed Preference Optimization (docs/mpo.md): SFT's recipe with a preference objective.

    internvl train mpo configs/mpo_world.yaml optim.lr=1e-6

Everything but the objective is the SFT recipe (`internvl.train.sft`): the model, freezing, LoRA,
DDP / FSDP2, the schedule, atomic checkpoints with exact resume, metrics and plots. What MPO adds:

1. **Reference log-probabilities, once.** Before the first step, the frozen starting model scores every
   pair (the sum of log-probabilities of the chosen and of the rejected answer) and the sums are cached
   in RUN/reference_logps.json, keyed by "annotation:line". Only one model is ever in memory; the official
   trainer keeps a second copy and recomputes the reference at every step.
2. **The loss** of `internvl.train.preference`: 0.8 DPO (sigmoid) + 0.2 BCO (bco_pair) + 1.0 SFT on the
   chosen answer, beta 0.1, each micro-batch's pairs averaged, micro-batches of a step averaged.
3. **Metrics**: each loss term, the chosen and rejected rewards, their margin and the share of pairs whose
   chosen reward is higher (rewards/accuracy), per logged step.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from internvl.data import preference as pair_data
from internvl.errors import ConfigError
from internvl.inputs.prompt import IGNORE_INDEX
from internvl.model.internvl import InternVL
from internvl.settings import load_settings
from internvl.train import distributed, sft
from internvl.train.loss import shift_targets, target_log_probs
from internvl.train.preference import (
    PreferenceLossSettings,
    RunningMean,
    check_loss_settings,
    micro_batch_reward_mean,
    preference_loss,
    sequence_logps,
)

REFERENCE_FILE = "reference_logps.json"


@dataclass
class MPOSettings(sft.SFTSettings):
    """The SFT recipe's settings (`internvl.train.sft.SFTSettings`) plus the preference loss."""

    mpo: PreferenceLossSettings = field(default_factory=PreferenceLossSettings)
    reference_cache: str = ""  # the reference log-probabilities' JSON; "" = RUN/reference_logps.json


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> MPOSettings:
    return load_settings(MPOSettings, path, overrides)


def validate(config: MPOSettings) -> None:
    if config.data.source != pair_data.SOURCE:
        raise ConfigError(
            f"data.source for MPO is {pair_data.SOURCE} (MPO JSONL files named by a meta JSON), "
            f"not {config.data.source!r}"
        )
    sft.validate(config)
    check_loss_settings(config.mpo)
    pair_data.check_pair_options(sft.data_options(config))


def reference_path(config: MPOSettings) -> Path:
    return Path(config.reference_cache) if config.reference_cache else Path(config.output_dir) / REFERENCE_FILE


class PolicyLogProbs(nn.Module):
    """Model forward + per-token log-probabilities of the supervised tokens, in one module (so that DDP
    and FSDP2 see the output head, which the model's own forward does not use here)."""

    def __init__(self, model: InternVL, chunk_size: int) -> None:
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_flags: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """-> (rows, T) float32 log p(target) at supervised positions, 0 elsewhere."""
        hidden = self.model(
            input_ids, pixel_values, attention_mask=attention_mask, image_flags=image_flags, return_hidden=True
        )
        return target_log_probs(hidden, self.model.language.lm_head, targets, self.chunk_size)


PAIR_KEYS = ("input_ids", "pixel_values", "attention_mask", "image_flags")


def pair_inputs(batch: dict[str, Any], device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The model's inputs of a pair micro-batch, and what each position predicts (-100: nothing)."""
    inputs = {k: batch[k].to(device) for k in PAIR_KEYS if batch.get(k) is not None}
    labels = batch["labels"].to(device)
    targets, _ = shift_targets(labels, torch.ones_like(labels, dtype=torch.float32))
    return inputs, targets


def supervised_mask(targets: torch.Tensor) -> torch.Tensor:
    return (targets != IGNORE_INDEX).float()


@torch.no_grad()
def compute_reference(
    module: PolicyLogProbs, source: pair_data.PairBatches, device: torch.device, autocast: dict[str, Any], show: bool
) -> dict[str, list[float]]:
    """{pair key: [logp(chosen), logp(rejected)]} under the starting model, in eval mode."""
    from tqdm.auto import tqdm

    modes = [(m, m.training) for m in module.model.modules()]  # frozen parts stay in eval mode after
    module.model.eval()
    cache: dict[str, list[float]] = {}
    total = sum(len(dataset) for dataset in source.datasets)
    bar = tqdm(total=total, desc="reference log-probs", unit="pair", file=sys.stderr, disable=not show)
    for batch in source.batches_in_file_order():
        inputs, targets = pair_inputs(batch, device)
        with torch.autocast(**autocast):
            token_logps = module(targets=targets, **inputs)
        sums = sequence_logps(token_logps, supervised_mask(targets)).double().cpu()
        chosen, rejected = sums.chunk(2)
        for key, c, r in zip(batch["pair_keys"], chosen.tolist(), rejected.tolist()):
            cache[key] = [c, r]
        bar.update(len(batch["pair_keys"]))
    bar.close()
    for submodule, training in modes:
        submodule.training = training
    return cache


def load_or_compute_reference(
    config: MPOSettings,
    module: PolicyLogProbs,
    source: pair_data.PairBatches,
    state: distributed.Distributed,
    autocast: dict[str, Any],
) -> dict[str, list[float]]:
    """The cache file if it exists, else computed by rank 0 (before any weight moves) and written atomically."""
    path = reference_path(config)
    if not path.is_file() and state.is_main:
        cache = compute_reference(module, source, state.device, autocast, config.log.progress_bar)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(cache), encoding="utf-8")
        os.replace(partial, path)
    state.barrier()
    cache = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(cache, dict):
        raise ConfigError(f"{path}: not a reference cache (a JSON object of pair key -> [chosen, rejected])")
    return cache


class MPOSteps:
    """MPO's step: the preference loss of each micro-batch (`internvl.train.preference`), averaged over
    the step's micro-batches (DDP then averages over ranks)."""

    def __init__(
        self,
        model: InternVL,
        config: MPOSettings,
        state: distributed.Distributed,
        source: pair_data.PairBatches,
    ) -> None:
        self.module: nn.Module = PolicyLogProbs(model, config.train.loss_chunk_size)
        self.state = state
        self.settings = config.mpo
        self.running = RunningMean()
        autocast = dict(device_type=state.device.type, dtype=torch.bfloat16, enabled=config.train.precision == "bf16")
        self.reference = load_or_compute_reference(config, self.module, source, state, autocast)  # type: ignore[arg-type]

    def reference_of(self, keys: list[str]) -> torch.Tensor:
        """(2B,) reference sums, chosen then rejected, for the pairs `keys`."""
        missing = [key for key in keys if key not in self.reference]
        if missing:
            raise ConfigError(
                f"pair {missing[0]} has no reference log-probabilities in the cache: the data changed after the "
                "cache was written; delete the cache file (reference_cache) to recompute it"
            )
        values = torch.tensor([self.reference[key] for key in keys], dtype=torch.float64)  # (B, 2)
        return torch.cat([values[:, 0], values[:, 1]])

    def step(self, wrapped: nn.Module, batches: list[dict[str, Any]], autocast: dict[str, Any]) -> dict[str, float]:
        state, accum = self.state, len(batches)
        totals: dict[str, float] = {}
        chosen_rewards, rejected_rewards = [], []
        for index, batch in enumerate(batches):
            inputs, targets = pair_inputs(batch, state.device)
            mask = supervised_mask(targets)
            reference = self.reference_of(batch["pair_keys"])
            with distributed.gradient_sync(wrapped, enabled=index == accum - 1):
                with torch.autocast(**autocast):
                    token_logps = wrapped(targets=targets, **inputs)
                delta = 0.0
                if self.settings.bco_delta == "running" and "bco_pair" in self.settings.loss_types:
                    # TRL gathers every rank's micro-batch mean and merges them as one update.
                    gathered = torch.tensor(
                        [micro_batch_reward_mean(token_logps, mask, reference, self.settings.beta), 1.0],
                        dtype=torch.float64,
                    )
                    state.all_reduce_sum(gathered)
                    delta = self.running.update(float(gathered[0] / gathered[1]), float(gathered[1]))
                result = preference_loss(token_logps, mask, reference, self.settings, delta)
                (result.loss / accum).backward()
            totals["loss"] = totals.get("loss", 0.0) + float(result.loss.detach()) / accum
            for name, value in result.per_type.items():
                totals[f"loss_{name}"] = totals.get(f"loss_{name}", 0.0) + value / accum
            chosen_rewards.append(result.chosen_rewards.cpu())
            rejected_rewards.append(result.rejected_rewards.cpu())
        chosen, rejected = torch.cat(chosen_rewards).double(), torch.cat(rejected_rewards).double()
        totals["rewards_chosen"] = float(chosen.mean())
        totals["rewards_rejected"] = float(rejected.mean())
        totals["rewards_margin"] = float((chosen - rejected).mean())
        totals["rewards_accuracy"] = float((chosen > rejected).double().mean())
        totals["bco_delta"] = self.running.mean
        names = sorted(totals)
        reduced = torch.tensor([totals[name] for name in names], dtype=torch.float64)
        state.all_reduce_sum(reduced)
        return {name: float(value) / state.world_size for name, value in zip(names, reduced)}

    def state_dict(self) -> dict[str, Any]:
        return {"bco_running_mean": self.running.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "bco_running_mean" in state:
            self.running.load_state_dict(state["bco_running_mean"])


def mpo_objective(model: InternVL, config: sft.SFTSettings, state: distributed.Distributed, source: Any) -> MPOSteps:
    if not isinstance(config, MPOSettings):
        raise ConfigError("the MPO objective needs MPO settings (internvl.train.mpo.load_config)")
    if not isinstance(source, pair_data.PairBatches):
        raise ConfigError(f"MPO trains on pairs: data.source must be {pair_data.SOURCE}")
    return MPOSteps(model, config, state, source)


def run(config: MPOSettings) -> dict[str, Any]:
    """Train as `config` says (module docstring); returns what `internvl.train.sft.run` returns."""
    validate(config)
    return sft.run(config, make_objective=mpo_objective)
