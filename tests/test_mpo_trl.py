"""The MPO loss against TRL's `DPOTrainer` (the independent reference; TRL is a test-only dependency).

One fixed batch of token pairs, a tiny random Qwen2 decoder as the policy and another as the reference.
TRL computes its loss with `loss_type=["sigmoid", "bco_pair", "sft"]` and `loss_weights=[0.8, 0.2, 1.0]`;
we compute ours with the same decoder weights inside an InternVL (text-only rows), the reference sums
coming from our own forward of the reference weights, as the MPO recipe caches them. Loss, each reward
and the gradients must agree within 1e-5. TRL 1.x has no running BCO shift, so this comparison uses
`bco_delta: zero`; the running shift of TRL 0.x (what InternVL's MPO trainer ran) is checked against
its update rule in tests/test_mpo.py.
"""

from __future__ import annotations

import pytest
import torch

from internvl.train.loss import shift_targets, target_log_probs
from internvl.train.preference import PreferenceLossSettings, preference_loss
from internvl.weights import load_model
from tests.tiny import build_hf_model, save_hf

trl = pytest.importorskip("trl", reason="TRL is the reference for the MPO loss (pip install trl; in [dev])")

TOLERANCE = 1e-5


def causal_lm_from(hf_internvl):
    """transformers' Qwen2ForCausalLM holding the decoder of a transformers InternVL model."""
    from transformers import Qwen2ForCausalLM

    lm = Qwen2ForCausalLM(hf_internvl.config.text_config)
    state = {f"model.{k}": v for k, v in hf_internvl.model.language_model.state_dict().items()}
    state["lm_head.weight"] = hf_internvl.lm_head.weight
    lm.load_state_dict(state)
    return lm.float()


def fixed_pairs(seed: int = 0):
    """4 rows (2 pairs, chosen first): prompts of 5-7 tokens, answers of 3-6, right padding."""
    g = torch.Generator().manual_seed(seed)
    rows = [(6, 5), (5, 3), (6, 6), (7, 4)]  # (prompt, answer) lengths: chosen 0, chosen 1, rejected 0, rejected 1
    length = max(p + a for p, a in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    completion = torch.zeros_like(ids)
    for r, (p, a) in enumerate(rows):
        ids[r, : p + a] = torch.randint(0, 300, (p + a,), generator=g)
        mask[r, : p + a] = 1
        completion[r, p : p + a] = 1
    return ids, mask, completion


def trl_trainer(policy, reference, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from tests.inputs_fixtures import build_qwen2_tokenizer

    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        loss_type=["sigmoid", "bco_pair", "sft"],
        loss_weights=[0.8, 0.2, 1.0],
        beta=0.1,
        report_to="none",
        use_cpu=True,
        bf16=False,
    )
    dataset = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}])  # required, not used
    return DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=dataset, processing_class=build_qwen2_tokenizer()
    )


def our_token_logps(model, ids, mask, completion):
    labels = ids.masked_fill(completion == 0, -100)
    targets, _ = shift_targets(labels, torch.ones_like(labels, dtype=torch.float32))
    hidden = model(ids, None, attention_mask=mask, return_hidden=True)
    return target_log_probs(hidden, model.language.lm_head, targets), (targets != -100).float()


def test_mpo_loss_and_gradients_equal_trl(tmp_path):
    hf_policy = build_hf_model("qwen2", seed=1, std=0.1)
    hf_reference = build_hf_model("qwen2", seed=2, std=0.1)
    ours = load_model(save_hf(hf_policy, tmp_path / "policy")).float()
    ours_reference = load_model(save_hf(hf_reference, tmp_path / "reference")).float().eval()
    ids, mask, completion = fixed_pairs()

    # TRL
    trainer = trl_trainer(causal_lm_from(hf_policy), causal_lm_from(hf_reference), tmp_path)
    trl_policy = trainer.model
    trl_policy.train()
    trl_loss = trainer.compute_loss(
        trl_policy, {"input_ids": ids, "attention_mask": mask, "completion_mask": completion}
    )
    trl_loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    # Ours: the reference sums as the recipe caches them (no gradient), then the policy's loss.
    with torch.no_grad():
        ref_tokens, ref_mask = our_token_logps(ours_reference, ids, mask, completion)
        reference = (ref_tokens * ref_mask).sum(dim=1)
    ours.train()
    token_logps, supervised = our_token_logps(ours, ids, mask, completion)
    settings = PreferenceLossSettings(bco_delta="zero")
    result = preference_loss(token_logps, supervised, reference, settings)
    result.loss.backward()

    assert abs(float(result.loss) - float(trl_loss)) < TOLERANCE, (float(result.loss), float(trl_loss))
    assert abs(float(result.chosen_rewards.mean()) - metrics["rewards/chosen"]) < TOLERANCE
    assert abs(float(result.rejected_rewards.mean()) - metrics["rewards/rejected"]) < TOLERANCE
    margin = float((result.chosen_rewards - result.rejected_rewards).mean())
    assert abs(margin - metrics["rewards/margins"]) < TOLERANCE
    assert float(result.loss) > 0 and abs(margin) > 1e-3  # policy and reference differ: a test that can fail

    assert_same_gradients(ours, trl_policy)


def assert_same_gradients(ours, trl_policy, tolerance: float = TOLERANCE) -> None:
    """Output head and embeddings element by element, the whole decoder by its norm (not zero)."""
    pairs = [
        (ours.language.lm_head.weight.grad, trl_policy.lm_head.weight.grad),
        (ours.language.embed.weight.grad, trl_policy.model.embed_tokens.weight.grad),
    ]
    for mine, theirs in pairs:
        assert (mine - theirs).abs().max().item() < tolerance
    our_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in ours.language.parameters() if p.grad is not None))
    trl_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in trl_policy.parameters() if p.grad is not None))
    assert float(trl_norm) > 0
    assert abs(float(our_norm) - float(trl_norm)) < tolerance * max(1.0, float(trl_norm))


def test_each_loss_type_alone_equals_trl(tmp_path):
    """sigmoid, bco_pair and sft one at a time (weight 1): a swapped term would cancel in the mix above."""
    hf_policy = build_hf_model("qwen2", seed=3, std=0.1)
    hf_reference = build_hf_model("qwen2", seed=4, std=0.1)
    ours = load_model(save_hf(hf_policy, tmp_path / "policy")).float()
    ours_reference = load_model(save_hf(hf_reference, tmp_path / "reference")).float().eval()
    ids, mask, completion = fixed_pairs(seed=5)
    with torch.no_grad():
        ref_tokens, ref_mask = our_token_logps(ours_reference, ids, mask, completion)
        reference = (ref_tokens * ref_mask).sum(dim=1)
        token_logps, supervised = our_token_logps(ours, ids, mask, completion)
    trainer = trl_trainer(causal_lm_from(hf_policy), causal_lm_from(hf_reference), tmp_path)
    for loss_type in ("sigmoid", "bco_pair", "sft"):
        trainer.loss_types, trainer.loss_weights = [loss_type], [1.0]
        with torch.no_grad():
            expected = float(
                trainer.compute_loss(
                    trainer.model, {"input_ids": ids, "attention_mask": mask, "completion_mask": completion}
                )
            )
        settings = PreferenceLossSettings(loss_types=[loss_type], loss_weights=[1.0], bco_delta="zero")
        got = float(preference_loss(token_logps, supervised, reference, settings).loss)
        assert abs(got - expected) < TOLERANCE, (loss_type, got, expected)
