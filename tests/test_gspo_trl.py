"""The GSPO loss against TRL's `GRPOTrainer` (the independent reference; TRL is a test-only dependency).

A fixed batch of 4 answers (prompts of one length, answers of 2-6 tokens, right padding), a tiny random
Qwen2 decoder, fixed "old" log-probabilities (the policy's own, perturbed, so that ratios differ from 1
and the clip binds for some answers) and fixed advantages. TRL computes `_compute_loss` with
loss_type "grpo", beta 0 and importance_sampling_level "sequence" (GSPO) or "token" (GRPO); we compute
`gspo_loss` with the same decoder weights inside an InternVL. Loss and gradients must agree within 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from internvl.train.gspo import group_advantages, gspo_loss
from internvl.weights import load_model
from tests.test_mpo_trl import assert_same_gradients, causal_lm_from, our_token_logps
from tests.tiny import build_hf_model, save_hf

trl = pytest.importorskip("trl", reason="TRL is the reference for the GSPO loss (pip install trl; in [dev])")

TOLERANCE = 1e-5
PROMPT = 5
ANSWERS = (6, 2, 4, 5)
ADVANTAGES = torch.tensor([1.0, -0.5, 0.8, -1.2])


def fixed_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(0, 300, (len(ANSWERS), PROMPT), generator=g)
    completion_ids = torch.zeros(len(ANSWERS), max(ANSWERS), dtype=torch.long)
    completion_mask = torch.zeros_like(completion_ids)
    for r, n in enumerate(ANSWERS):
        completion_ids[r, :n] = torch.randint(0, 300, (n,), generator=g)
        completion_mask[r, :n] = 1
    return prompt_ids, completion_ids, completion_mask


def trl_trainer(policy, level: str, eps_low: float, eps_high: float, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tests.inputs_fixtures import build_qwen2_tokenizer

    args = GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        loss_type="grpo",
        beta=0.0,
        importance_sampling_level=level,
        epsilon=eps_low,
        epsilon_high=eps_high,
        num_generations=2,
        per_device_train_batch_size=4,
        report_to="none",
        use_cpu=True,
        bf16=False,
    )
    dataset = Dataset.from_list([{"prompt": "a"}])  # required, not used
    return GRPOTrainer(
        model=policy,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=dataset,
        processing_class=build_qwen2_tokenizer(),
    )


@pytest.mark.parametrize("level,eps_low,eps_high,noise", [("sequence", 0.02, 0.03, 0.15), ("token", 0.2, 0.28, 0.5)])
def test_gspo_loss_and_gradients_equal_trl(tmp_path, level, eps_low, eps_high, noise):
    hf_policy = build_hf_model("qwen2", seed=7, std=0.1)
    ours = load_model(save_hf(hf_policy, tmp_path / "policy")).float()
    prompt_ids, completion_ids, completion_mask = fixed_batch()
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([torch.ones_like(prompt_ids), completion_mask], dim=1)
    answer = torch.cat([torch.zeros_like(prompt_ids), completion_mask], dim=1)

    # The old policy: ours, perturbed per token (fixed), placed where each side keeps its answer tokens.
    with torch.no_grad():
        token_logps, supervised = our_token_logps(ours, ids, mask, answer)
    noise = noise * torch.randn(token_logps.shape, generator=torch.Generator().manual_seed(3))
    old = (token_logps + noise) * supervised
    old_trl = torch.zeros(completion_ids.shape)
    for r, n in enumerate(ANSWERS):
        old_trl[r, :n] = old[r][supervised[r].bool()]

    trainer = trl_trainer(causal_lm_from(hf_policy), level, eps_low, eps_high, tmp_path)
    trl_policy = trainer.model
    trl_policy.train()
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": ADVANTAGES,
        "old_per_token_logps": old_trl,
    }
    trainer.current_gradient_accumulation_steps = 1
    trl_loss = trainer._compute_loss(trl_policy, inputs)
    trl_loss.backward()

    ours.train()
    token_logps, supervised = our_token_logps(ours, ids, mask, answer)
    result = gspo_loss(token_logps, old, supervised, ADVANTAGES, level, eps_low, eps_high)
    result.loss.backward()

    loss, expected = float(result.loss.detach()), float(trl_loss.detach())
    assert abs(loss - expected) < TOLERANCE, (loss, expected)
    assert 0 < result.clipped_share < 1, result.clipped_share  # the clip binds for some, not all: a test that can fail
    assert_same_gradients(ours, trl_policy)


def test_group_advantages_equal_trl_rule():
    """TRL: (r - group mean) / (group std with Bessel's correction + 1e-4)."""
    from trl.trainer.utils import nanstd

    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0])
    grouped = rewards.view(-1, 4)
    expected = (grouped - grouped.mean(dim=1, keepdim=True)) / (nanstd(grouped, dim=1)[:, None] + 1e-4)
    assert torch.allclose(group_advantages(rewards, 4).float(), expected.reshape(-1), atol=1e-6)
    assert group_advantages(rewards, 4)[4:].abs().max() == 0  # a group of equal rewards teaches nothing
