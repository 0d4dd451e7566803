"""Loss and optimiser pieces against plain references: full-logits CE, transformers' load-balancing loss
and cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from internvl.train import optim
from internvl.train.loss import load_balancing_loss, shift_targets, weighted_cross_entropy_sum


def reference_loss(hidden, head, labels, loss_weight):
    """Materialise every logit, shift by one, weighted sum: the obvious implementation."""
    logits = head(hidden).float()[:, :-1]  # (B, T-1, V)
    targets = labels[:, 1:]
    w = loss_weight[:, 1:] * (targets != -100)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none", ignore_index=-100)
    return (ce * w.reshape(-1)).sum()


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_chunked_weighted_ce_matches_full_logits_values_and_gradients(chunk):
    g = torch.Generator().manual_seed(0)
    B, T, D, V = 2, 17, 12, 50
    head = nn.Linear(D, V, bias=False)
    hidden = torch.randn(B, T, D, generator=g, requires_grad=True)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :5] = -100
    labels[1, 10:] = -100
    weight = torch.rand(B, T, generator=g) * (labels != -100)

    expected = reference_loss(hidden, head, labels, weight)
    expected.backward()
    grads = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None

    targets, w = shift_targets(labels, weight)
    ours = weighted_cross_entropy_sum(hidden, head, targets, w, chunk_size=chunk)
    ours.backward()
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(hidden.grad, grads[0], atol=1e-6)
    assert torch.allclose(head.weight.grad, grads[1], atol=1e-6)


def test_shift_targets_drops_pairs_across_packed_documents():
    labels = torch.tensor([[-100, 5, 6, 7, -100, 8, 9]])
    weight = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.5]])
    documents = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])  # token 7 starts document 1
    targets, w = shift_targets(labels, weight, documents)
    assert targets.tolist() == [[5, 6, 7, -100, 8, 9, -100]]
    assert w.tolist() == [[1.0, 1.0, 0.0, 0.0, 0.5, 0.5, 0.0]]


def test_no_supervised_token_gives_zero_loss_with_head_in_graph():
    head = nn.Linear(4, 9, bias=False)
    hidden = torch.randn(1, 3, 4, requires_grad=True)
    targets = torch.full((1, 3), -100)
    loss = weighted_cross_entropy_sum(hidden, head, targets, torch.zeros(1, 3))
    loss.backward()
    assert float(loss.detach()) == 0.0 and head.weight.grad is not None and float(head.weight.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("masked", [False, True])
def test_load_balancing_loss_matches_transformers(masked):
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

    g = torch.Generator().manual_seed(1)
    B, T, E, K = 2, 6, 5, 2
    logits = tuple(torch.randn(B * T, E, generator=g) for _ in range(3))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 4:] = 0
    expected = load_balancing_loss_func(logits, E, K, mask if masked else None)
    ours = load_balancing_loss(list(logits), E, K, mask.reshape(-1) if masked else None)
    assert torch.allclose(ours, torch.as_tensor(expected, dtype=torch.float32), atol=1e-6)


def test_parameter_groups_per_part_and_no_decay_on_norms_and_biases():
    from internvl.model.internvl import InternVL
    from tests.test_train_support import tiny_config

    model = InternVL(tiny_config())
    for p in model.projector.parameters():
        p.requires_grad_(False)
    groups = optim.parameter_groups(
        model.named_parameters(), lr=1e-5, weight_decay=0.05, part_lr={"vision": 2e-6, "language": None}
    )
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"vision/decay", "vision/no_decay", "language/decay", "language/no_decay"}
    assert by_name["vision/decay"]["lr"] == 2e-6 and by_name["language/decay"]["lr"] == 1e-5
    assert by_name["language/no_decay"]["weight_decay"] == 0.0 and by_name["language/decay"]["weight_decay"] == 0.05
    no_decay = set(by_name["language/no_decay"]["param_names"] + by_name["vision/no_decay"]["param_names"])
    assert "language.norm.weight" in no_decay and "language.layers.0.attn.qkv.bias" in no_decay
    assert "vision.layers.0.ls1" in no_decay and "vision.layers.0.norm1.bias" in no_decay
    assert "language.layers.0.attn.qkv.weight" in by_name["language/decay"]["param_names"]
    counted = sum(len(g["params"]) for g in groups)
    assert counted == sum(1 for n, p in model.named_parameters() if not n.startswith("projector."))


def test_schedule_matches_transformers_cosine_with_warmup():
    from transformers import get_cosine_schedule_with_warmup

    param = nn.Parameter(torch.zeros(1))
    theirs = get_cosine_schedule_with_warmup(torch.optim.SGD([param], lr=1.0), 3, 20)
    for step in range(20):
        assert math.isclose(optim.lr_factor(step, 20, 3), theirs.get_last_lr()[0], abs_tol=1e-12)
        theirs.optimizer.step()
        theirs.step()
    assert optim.warmup_steps_for(1000, 0, 0.03) == 30 and optim.warmup_steps_for(1000, 7, 0.03) == 7
    assert optim.lr_factor(0, 10, 0) == 1.0 and math.isclose(optim.lr_factor(10, 10, 0, min_ratio=0.1), 0.1)
    optimizer = optim.build_optimizer(optim.parameter_groups([("language.x", param)], lr=2e-4, weight_decay=0.0))
    optim.set_learning_rates(optimizer, 0.25)
    assert optimizer.param_groups[0]["lr"] == 5e-5
