"""Losses of the training recipes, computed from the decoder's final hidden states.

Next-token cross-entropy (docs/sft.md#masking, docs/sft.md#loss-weights): position t predicts the token at t+1. Labels arrive
unshifted (`-100` = ignore), with a per-token `loss_weight` in which the token / sample / square
reduction of the data pipeline is already applied (0 where ignored). The recipe divides the weighted
sum returned here by Σw, the weight of every supervised token of the optimiser step on every rank,
which is what the official `loss_reduction_all_gather` (AVG of Σw across ranks) amounts to.

Memory: the (batch, seq, vocab) logits are never materialised. Only supervised positions go through
the output head, `chunk_size` rows at a time, and each chunk is checkpointed: the backward pass
recomputes that chunk's logits instead of keeping them (for Qwen vocabularies, 151k columns, one
4k-token row of fp32 logits alone is 2.5 GB).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from internvl.inputs.prompt import IGNORE_INDEX


def shift_targets(
    labels: torch.Tensor, loss_weight: torch.Tensor, document_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unshifted labels / weights (batch, seq) -> what each position predicts, (batch, seq) each.

    targets[:, t] = labels[:, t+1] and weights[:, t] = loss_weight[:, t+1]; the last position predicts
    nothing. In packed rows, the last token of one document would "predict" the first token of the next
    one, which it cannot see: that pair gets weight 0 (the official code keeps it, but its first token
    is always an unsupervised `<|im_start|>`, so the two agree on real data).
    """
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    weights = torch.zeros_like(loss_weight, dtype=torch.float32)
    weights[:, :-1] = loss_weight[:, 1:].float()
    if document_ids is not None:
        weights[:, :-1] = weights[:, :-1] * (document_ids[:, 1:] == document_ids[:, :-1])
    weights = torch.where(targets == IGNORE_INDEX, torch.zeros_like(weights), weights)
    return targets, weights


def _chunk_cross_entropy(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()  # (chunk, vocab), fp32 for the log-softmax even under bf16 autocast
    return F.cross_entropy(logits, targets, reduction="none")


def token_cross_entropy(head: nn.Module, rows: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """CE(head(rows_i), targets_i) for each of the (n, d) rows -> (n,) float32, `chunk_size` rows at a time;
    each chunk is checkpointed when gradients flow, so its logits are recomputed in backward, not kept."""
    checkpointed = torch.is_grad_enabled() and (rows.requires_grad or any(p.requires_grad for p in head.parameters()))
    pieces = []
    for start in range(0, rows.shape[0], chunk_size):
        piece = slice(start, start + chunk_size)
        if checkpointed:
            pieces.append(checkpoint(_chunk_cross_entropy, head, rows[piece], targets[piece], use_reentrant=False))
        else:
            pieces.append(_chunk_cross_entropy(head, rows[piece], targets[piece]))
    return torch.cat(pieces)


def _head_in_graph(hidden: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """A zero that uses the head (DDP wants every trainable parameter used, even with nothing supervised)."""
    return head(hidden.reshape(-1, hidden.shape[-1])[:1]).float().sum() * 0.0


def weighted_cross_entropy_sum(
    hidden: torch.Tensor,
    head: nn.Module,
    targets: torch.Tensor,
    weights: torch.Tensor,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Σ_t w_t · CE(head(hidden_t), target_t) as a float32 scalar, over positions with w_t != 0.

    hidden (batch, seq, d) final normed states; head the output projection (d -> vocab);
    targets, weights (batch, seq) from `shift_targets`.
    """
    keep = (weights != 0) & (targets != IGNORE_INDEX)
    if not bool(keep.any()):
        return _head_in_graph(hidden, head)
    return (token_cross_entropy(head, hidden[keep], targets[keep], chunk_size) * weights[keep]).sum()


def target_log_probs(
    hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk_size: int = 1024
) -> torch.Tensor:
    """log p(target_t) at every position with a target (float32, batch x seq), 0 where targets is -100.

    The preference losses sum these per row (`internvl.train.preference`); like
    `weighted_cross_entropy_sum`, only supervised positions go through the head, chunk by chunk."""
    keep = targets != IGNORE_INDEX
    out = torch.zeros(targets.shape, dtype=torch.float32, device=hidden.device)
    if not bool(keep.any()):
        return out + _head_in_graph(hidden, head)
    return out.masked_scatter(keep, -token_cross_entropy(head, hidden[keep], targets[keep], chunk_size))


def load_balancing_loss(
    router_logits: list[torch.Tensor], num_experts: int, top_k: int, token_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Switch-Transformer auxiliary loss over all MoE layers, as transformers' `load_balancing_loss_func`
    (which the InternVL 3.5 code adds with `router_aux_loss_coef`, docs/architecture.md#language-models).

    router_logits: one (tokens, experts) tensor per MoE layer; token_mask: (tokens,) 1 for real tokens.
    Returns E · Σ_e f_e · P_e, with f_e the share of (token, top-k slot) assignments routed to expert e
    per slot and P_e the mean router probability of e, both over real tokens.
    """
    logits = torch.cat([layer.float() for layer in router_logits], dim=0)  # (layers*tokens, experts)
    probs = F.softmax(logits, dim=-1)
    chosen = torch.topk(probs, top_k, dim=-1).indices
    assigned = F.one_hot(chosen, num_experts).float()  # (layers*tokens, top_k, experts)
    if token_mask is None:
        tokens_per_expert = assigned.mean(dim=0)  # (top_k, experts)
        prob_per_expert = probs.mean(dim=0)  # (experts,)
    else:
        mask = token_mask.reshape(-1).float().repeat(len(router_logits))  # (layers*tokens,)
        total = mask.sum().clamp(min=1)
        tokens_per_expert = (assigned * mask[:, None, None]).sum(dim=0) / total
        prob_per_expert = (probs * mask[:, None]).sum(dim=0) / total
    return (tokens_per_expert * prob_per_expert[None]).sum() * num_experts
