"""Online RL with GSPO (docs/gspo.md): the second stage of Cascade RL, after MPO.

    internvl train gspo configs/gspo.yaml model.path=runs/mpo-model

Everything but the objective is the SFT recipe (`internvl.train.sft`): the model, freezing, LoRA, DDP,
the schedule, atomic checkpoints with exact resume, metrics and plots. What GSPO adds, per prompt batch
of the data source (`internvl.data.prompts`):

1. **Rollout.** The current policy samples `group_size` answers to each prompt with our batched
   generation and KV cache, and scores its own log-probabilities of the sampled tokens before any update
   (the "old" policy). The rewards (`internvl.train.rewards`, weighted) of each group become advantages
   A = (r - mean) / (std + eps), std with Bessel's correction, as TRL computes them.
2. **Updates.** The rollout's answers, shuffled, are split into `updates_per_rollout` micro-batches that
   follow one another (the source repeats the prompt batch for each). For each answer, the sequence
   ratio s = exp(mean over its tokens of log pi(y_t) - log pi_old(y_t)) is clipped to
   [1 - epsilon_low, 1 + epsilon_high], and the loss is the mean over answers of -min(s A, clip(s) A).
   No reference model and no KL term. `importance_level: token` gives GRPO's per-token ratio instead
   (each answer's per-token losses averaged), for comparison.

The loss equals TRL's `GRPOTrainer` (loss_type "grpo", beta 0) at both importance levels
(tests/test_gspo_trl.py).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from internvl.data import prompts as prompt_data
from internvl.errors import ConfigError
from internvl.generate import GenerationConfig, generate
from internvl.inputs.prompt import IGNORE_INDEX
from internvl.model.internvl import InternVL
from internvl.settings import load_settings
from internvl.train import distributed, sft
from internvl.train.loss import shift_targets, target_log_probs
from internvl.train.mpo import PolicyLogProbs
from internvl.train.rewards import Reward, load_reward

DEFAULT_REWARDS = {"internvl.train.rewards:accuracy": 1.0, "internvl.train.rewards:answer_format": 0.5}


@dataclass
class GSPOLossSettings:
    """The `gspo:` section of a recipe."""

    group_size: int = 8  # G answers sampled per prompt
    importance_level: Literal["sequence", "token"] = "sequence"  # GSPO's sequence ratio, or GRPO's per token
    epsilon_low: float = 3e-4  # clip range of the ratio (the GSPO paper's values for sequence ratios;
    epsilon_high: float = 4e-4  # token-level GRPO usually takes 0.2 / 0.28)
    updates_per_rollout: int = 2  # micro-batches one rollout is split into
    zero_variance_groups: Literal["keep", "drop"] = "keep"  # keep: advantage 0, still averaged; drop: left out
    advantage_eps: float = 1e-4
    rewards: dict = field(default_factory=lambda: dict(DEFAULT_REWARDS))  # package.module:function -> weight
    temperature: float = 1.0  # sampling of the rollouts
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 256


@dataclass
class GSPOSettings(sft.SFTSettings):
    """The SFT recipe's settings (`internvl.train.sft.SFTSettings`) plus the GSPO objective."""

    gspo: GSPOLossSettings = field(default_factory=GSPOLossSettings)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> GSPOSettings:
    return load_settings(GSPOSettings, path, overrides)


def validate(config: GSPOSettings) -> None:
    if config.data.source != prompt_data.SOURCE:
        raise ConfigError(
            f"data.source for GSPO is {prompt_data.SOURCE} (a JSONL of questions), not {config.data.source!r}"
        )
    sft.validate(config)
    g = config.gspo
    if g.group_size < 2:
        raise ConfigError(f"gspo.group_size must be at least 2 (advantages compare answers), got {g.group_size}")
    if g.updates_per_rollout < 1:
        raise ConfigError(f"gspo.updates_per_rollout must be at least 1, got {g.updates_per_rollout}")
    if not (0 <= g.epsilon_low < 1 and g.epsilon_high >= 0):
        raise ConfigError(
            f"gspo.epsilon_low must be in [0, 1) and epsilon_high >= 0, got {g.epsilon_low}, {g.epsilon_high}"
        )
    if g.importance_level not in ("sequence", "token"):
        raise ConfigError(f"gspo.importance_level is 'sequence' or 'token', got {g.importance_level!r}")
    if g.zero_variance_groups not in ("keep", "drop"):
        raise ConfigError(f"gspo.zero_variance_groups is 'keep' or 'drop', got {g.zero_variance_groups!r}")
    if not g.rewards:
        raise ConfigError("gspo.rewards is empty: name at least one reward function with its weight")
    for name, weight in g.rewards.items():
        load_reward(str(name))
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise ConfigError(f"gspo.rewards[{name!r}]: the weight must be a number, got {weight!r}")
    GenerationConfig(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p)
    if g.temperature == 0:
        raise ConfigError(
            "gspo.temperature must be above 0: greedy rollouts give every answer of a group the same reward"
        )
    if config.distributed.strategy == "fsdp":
        raise ConfigError(
            "GSPO samples with the whole model on each rank: use distributed.strategy=ddp (FSDP2 is not supported)"
        )
    repeat = config.data.options.get("repeat_each", g.updates_per_rollout)
    if repeat != g.updates_per_rollout:
        raise ConfigError(
            f"data.options.repeat_each ({repeat}) must equal gspo.updates_per_rollout ({g.updates_per_rollout}); "
            "leave it out and the recipe sets it"
        )
    config.data.options["repeat_each"] = g.updates_per_rollout
    prompt_data.check_prompt_options(sft.data_options(config))


# ------------------------------------------------------------------------------------------ the loss


@dataclass
class GSPOLoss:
    loss: torch.Tensor  # scalar: the mean over answers of the clipped surrogate
    clipped_share: float  # share of answers (sequence) or tokens (token) where the clip binds
    ratio_mean: float  # mean importance ratio over answers (sequence) or tokens (token)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(N,) rewards, question-major in groups of `group_size` -> (r - group mean) / (group std + eps),
    std with Bessel's correction (TRL's `scale_rewards="group"`)."""
    grouped = rewards.double().view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + eps)).reshape(-1)


def gspo_loss(
    token_logps: torch.Tensor,
    old_logps: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    level: str = "sequence",
    epsilon_low: float = 3e-4,
    epsilon_high: float = 4e-4,
) -> GSPOLoss:
    """The clipped surrogate of (R, T) answer-token log-probabilities against the rollout's `old_logps`
    (mask: 1 on answer tokens) and (R,) advantages. Sequence level (GSPO): one ratio per answer, the
    exponent of its mean token log-ratio. Token level (GRPO): one ratio per token, each answer's token
    losses averaged. Either way the loss is the mean over answers."""
    mask = mask.float()
    lengths = mask.sum(dim=1).clamp(min=1.0)
    log_ratio = (token_logps - old_logps) * mask
    if level == "sequence":
        ratio = torch.exp(log_ratio.sum(dim=1) / lengths)[:, None]  # (R, 1)
        weight = torch.ones_like(ratio)
    else:
        ratio = torch.exp(log_ratio)  # (R, T)
        weight = mask
    a = advantages.to(ratio.dtype)[:, None]
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per = -torch.min(ratio * a, clipped * a)
    per_answer = (per * mask).sum(dim=1) / lengths
    with torch.no_grad():
        binds = ((ratio < 1 - epsilon_low) & (a < 0)) | ((ratio > 1 + epsilon_high) & (a > 0))
        count = weight.sum().clamp(min=1.0)
        clipped_share = float((binds.float() * weight).sum() / count)
        ratio_mean = float((ratio.detach() * weight).sum() / count)
    return GSPOLoss(per_answer.mean(), clipped_share, ratio_mean)


# ------------------------------------------------------------------------------------------ rollouts


@dataclass
class Rollout:
    """The answers sampled for one prompt batch, with what the updates need. Lists, so that a checkpoint
    taken between its micro-batches can hold it (trainer_state.json) and resume exactly."""

    key: str  # the prompt batch ("epoch:batch")
    completions: list[list[int]]  # (P*G) sampled token ids, question-major, the stop token included
    old_logps: list[list[float]]  # their log-probabilities under the policy that sampled them
    rewards: list[float]
    advantages: list[float]
    parts: list[list[int]]  # the answers of each micro-batch (shuffled, zero-variance groups dropped if asked)
    entropy: float  # mean token entropy of the sampling policy over the answers
    zero_variance_share: float  # share of groups whose answers all got the same reward
    rollout_s: float
    sampled_tokens: int
    reward_terms: dict[str, float] = field(default_factory=dict)  # each reward function's mean, unweighted

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class GSPOSteps:
    """GSPO's step: for each micro-batch, sample a rollout if it starts one, then the clipped surrogate of
    its part of the rollout, averaged over the step's micro-batches (DDP then averages over ranks)."""

    def __init__(self, model: InternVL, config: GSPOSettings, state: distributed.Distributed) -> None:
        from internvl.answer import AnswerPolicy
        from internvl.chat import build_processor
        from internvl.inputs.tokens import load_tokenizer

        self.model = model
        self.chunk_size = config.train.loss_chunk_size
        self.module: nn.Module = PolicyLogProbs(model, self.chunk_size)
        self.state = state
        self.settings = config.gspo
        self.seed = config.seed
        tokenizer = load_tokenizer(sft.data_options(config)["tokenizer"])
        processor = build_processor(model.config, tokenizer)
        self.stop_id = int(processor.stop_token_id)
        self.pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else self.stop_id
        self.answers = AnswerPolicy(tokenizer, processor.template.stop_token, self.stop_id, processor.template.stop_str)
        self.rewards: list[tuple[Reward, float]] = [
            (load_reward(str(name)), float(weight)) for name, weight in self.settings.rewards.items()
        ]
        # metric names: reward_<function> (the whole name where two functions share one)
        short = [str(name).rsplit(":", 1)[-1] for name in self.settings.rewards]
        self.reward_names = [
            "reward_" + (s if short.count(s) == 1 else str(name)) for s, name in zip(short, self.settings.rewards)
        ]
        self.rollout: Rollout | None = None

    # -- sampling ----------------------------------------------------------------------------------
    def generation_config(self, key: str) -> GenerationConfig:
        g = self.settings
        seed = zlib.crc32(f"{self.seed}:{self.state.rank}:{key}".encode())
        return GenerationConfig(
            max_new_tokens=g.max_new_tokens,
            temperature=g.temperature,
            top_k=g.top_k,
            top_p=g.top_p,
            stop_token_ids=(self.stop_id,),
            seed=seed,
        )

    @torch.no_grad()
    def sample(self, batch: dict[str, Any], autocast: dict[str, Any]) -> Rollout:
        from internvl.chat import left_pad

        g = self.settings
        started = time.perf_counter()
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        prompts = [p for p in batch["prompts"] for _ in range(g.group_size)]
        ids, mask = left_pad([p.input_ids for p in prompts], self.pad_id)
        config = self.generation_config(batch["rollout"])
        device = self.state.device
        with torch.autocast(**autocast):
            features = self.group_image_features(batch["prompts"])
            completions = generate(self.model, ids.to(device), mask.to(device), None, config, image_features=features)
        completions = [self.usable(c) for c in completions]
        texts = [self.answers.answer(c, config) for c in completions]
        questions = [q for q in batch["questions"] for _ in range(g.group_size)]
        terms = [[float(f(text, q)) for text, q in zip(texts, questions)] for f, _ in self.rewards]
        weights = torch.tensor([w for _, w in self.rewards], dtype=torch.float64)
        rewards = weights @ torch.tensor(terms, dtype=torch.float64)  # each answer's weighted sum
        advantages = group_advantages(rewards, g.group_size, g.advantage_eps)
        flat = rewards.view(-1, g.group_size)
        constant = (flat == flat[:, :1]).all(dim=1)
        old_logps, entropy = self.score(batch, completions, autocast)
        for submodule, training in modes:
            submodule.training = training

        keep = list(range(len(completions)))
        if g.zero_variance_groups == "drop":
            keep = [i for i in keep if not bool(constant[i // g.group_size])]
        rng = np.random.default_rng(config.seed)
        shuffled = [keep[int(i)] for i in rng.permutation(len(keep))]
        parts = [list(part) for part in np.array_split(np.array(shuffled, dtype=np.int64), g.updates_per_rollout)]
        return Rollout(
            key=batch["rollout"],
            completions=completions,
            old_logps=old_logps,
            rewards=rewards.tolist(),
            advantages=advantages.tolist(),
            parts=[[int(i) for i in part] for part in parts],
            entropy=entropy,
            zero_variance_share=float(constant.double().mean()),
            rollout_s=time.perf_counter() - started,
            sampled_tokens=sum(len(c) for c in completions),
            reward_terms={name: float(np.mean(values)) for name, values in zip(self.reward_names, terms)},
        )

    def group_image_features(self, prompts: list[Any]) -> torch.Tensor | None:
        """The image features of every sampled row: each prompt's tiles go through the encoder once, and
        its features are repeated for the `group_size` rows that answer it (question-major order)."""
        with_images = [p.pixel_values for p in prompts if p.pixel_values is not None]
        if not with_images:
            return None
        encoded = self.model.encode_images(torch.cat(with_images).to(self.state.device))
        per_prompt = encoded.split([tiles.shape[0] for tiles in with_images])
        return torch.cat([features for features in per_prompt for _ in range(self.settings.group_size)])

    def usable(self, tokens: list[int]) -> list[int]:
        """A sampled answer cut before any `<IMG_CONTEXT>` token (a barely trained policy can sample one;
        fed back, it would ask for image features that do not exist), and never empty."""
        image_token = self.model.image_token_id
        if image_token is not None and image_token in tokens:
            tokens = tokens[: tokens.index(image_token)]
        return tokens or [self.stop_id]

    def score(
        self, batch: dict[str, Any], completions: list[list[int]], autocast: dict[str, Any]
    ) -> tuple[list[list[float]], float]:
        """Each answer's token log-probabilities under the current weights (the old policy of this
        rollout's updates), through the same code path the updates use, and the mean token entropy."""
        index = list(range(len(completions)))
        inputs, targets = self.rows(batch, completions, index)
        keep = targets != IGNORE_INDEX
        head = self.model.language.lm_head
        with torch.autocast(**autocast):
            hidden = self.model(**inputs, return_hidden=True)
            logps = target_log_probs(hidden, head, targets, self.chunk_size)
            rows = hidden[keep]
            total = 0.0
            for start in range(0, rows.shape[0], self.chunk_size):
                logits = head(rows[start : start + self.chunk_size]).float()
                total += float(-(logits.softmax(-1) * logits.log_softmax(-1)).sum())
        entropy = total / max(int(keep.sum()), 1)
        return [logps[r][keep[r]].tolist() for r in range(len(completions))], entropy

    def rows(
        self, batch: dict[str, Any], completions: list[list[int]], index: list[int]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Model inputs (prompt + answer, right padded) of the answers `index`, and their targets (the
        answer tokens; -100 elsewhere)."""
        g, device = self.settings, self.state.device
        prompts = [batch["prompts"][i // g.group_size] for i in index]
        sequences = [
            torch.cat([p.input_ids, torch.tensor(completions[i], dtype=torch.long)]) for p, i in zip(prompts, index)
        ]
        length = max(int(s.shape[0]) for s in sequences)
        ids = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        labels = torch.full_like(ids, IGNORE_INDEX)
        mask = torch.zeros_like(ids)
        for r, (p, s) in enumerate(zip(prompts, sequences)):
            ids[r, : s.shape[0]] = s
            labels[r, p.input_ids.shape[0] : s.shape[0]] = s[p.input_ids.shape[0] :]
            mask[r, : s.shape[0]] = 1
        targets, _ = shift_targets(labels, torch.ones_like(labels, dtype=torch.float32))
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        tiles = [p.pixel_values for p in prompts if p.pixel_values is not None]
        if tiles:
            pixels = torch.cat(tiles)
            inputs["pixel_values"] = pixels.to(device)
            inputs["image_flags"] = torch.ones(pixels.shape[0], dtype=torch.long, device=device)
        return inputs, targets.to(device)

    # -- the step ----------------------------------------------------------------------------------
    def step(self, wrapped: nn.Module, batches: list[dict[str, Any]], autocast: dict[str, Any]) -> dict[str, float]:
        state, accum, g = self.state, len(batches), self.settings
        totals: dict[str, float] = {}
        rollout_s = sampled = 0.0
        update_started = time.perf_counter()
        for number, batch in enumerate(batches):
            if self.rollout is None or self.rollout.key != batch["rollout"] or batch["part"] == 0:
                self.rollout = self.sample(batch, autocast)
                rollout_s += self.rollout.rollout_s
                sampled += self.rollout.sampled_tokens
            rollout = self.rollout
            index = rollout.parts[batch["part"]]
            advantages = torch.tensor([rollout.advantages[i] for i in index], dtype=torch.float32)
            if not index:  # every group of this part was dropped: a zero loss that still runs the model
                index, advantages = [0], torch.zeros(1)
            inputs, targets = self.rows(batch, rollout.completions, index)
            answer = targets != IGNORE_INDEX
            old = torch.zeros(targets.shape, dtype=torch.float32, device=state.device)
            old = old.masked_scatter(
                answer, torch.tensor([x for i in index for x in rollout.old_logps[i]], device=state.device)
            )
            with distributed.gradient_sync(wrapped, enabled=number == accum - 1):
                with torch.autocast(**autocast):
                    token_logps = wrapped(targets=targets, **inputs)
                result = gspo_loss(
                    token_logps,
                    old,
                    answer,
                    advantages.to(state.device),
                    g.importance_level,
                    g.epsilon_low,
                    g.epsilon_high,
                )
                (result.loss / accum).backward()
            step_values = {
                "loss": float(result.loss.detach()),
                "clipped_share": result.clipped_share,
                "ratio_mean": result.ratio_mean,
                "reward_mean": float(np.mean(rollout.rewards)),
                "reward_std": float(np.std(rollout.rewards)),
                "zero_variance_share": rollout.zero_variance_share,
                "response_length": float(np.mean([len(c) for c in rollout.completions])),
                "entropy": rollout.entropy,
                **rollout.reward_terms,
            }
            for name, value in step_values.items():
                totals[name] = totals.get(name, 0.0) + value / accum
        totals["rollout_s"] = rollout_s
        totals["update_s"] = time.perf_counter() - update_started - rollout_s
        totals["sampled_tokens_per_s"] = sampled / rollout_s if rollout_s > 0 else 0.0
        names = sorted(totals)
        reduced = torch.tensor([totals[name] for name in names], dtype=torch.float64)
        state.all_reduce_sum(reduced)
        return {name: float(value) / state.world_size for name, value in zip(names, reduced)}

    def state_dict(self) -> dict[str, Any]:
        return {"rollout": self.rollout.to_dict() if self.rollout is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("rollout")
        self.rollout = Rollout(**saved) if saved else None


def gspo_objective(model: InternVL, config: sft.SFTSettings, state: distributed.Distributed, source: Any) -> GSPOSteps:
    if not isinstance(config, GSPOSettings):
        raise ConfigError("the GSPO objective needs GSPO settings (internvl.train.gspo.load_config)")
    if not isinstance(source, prompt_data.PromptBatches):
        raise ConfigError(f"GSPO trains on prompts: data.source must be {prompt_data.SOURCE}")
    return GSPOSteps(model, config, state)


def run(config: GSPOSettings) -> dict[str, Any]:
    """Train as `config` says (module docstring); returns what `internvl.train.sft.run` returns."""
    validate(config)
    return sft.run(config, make_objective=gspo_objective)
