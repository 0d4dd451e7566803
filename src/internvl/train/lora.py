"""LoRA adapters (through `peft`) on the language model and / or the vision encoder, and merging them.

Targets (docs/sft.md#freezing-and-lora, on our fused module names): the decoder's `attn.qkv`, `attn.o`, `mlp.gate_up`,
`mlp.down` (and the same two in every MoE expert); the ViT's `attn.qkv`, `attn.proj`, `mlp.fc1`,
`mlp.fc2`. alpha = 2·rank, dropout 0.05 by default.

Because q/k/v and gate/up are fused here, one adapter of rank r spans the fused output (the official
code puts a separate rank-r adapter on each of q, k, v, gate, up): same targets, same rank, slightly
fewer adapter parameters. Merged weights load into either checkpoint layout all the same.

Adapters are injected in place (`peft.inject_adapter_in_model`), so the model stays an `InternVL`;
adapted linears gain `base_layer` / `lora_A.default` / `lora_B.default` sub-modules.
"""

from __future__ import annotations

import torch
from torch import nn

LANGUAGE_TARGETS = (
    r"language\.layers\.\d+\.(?:attn\.(?:qkv|o)|mlp\.(?:gate_up|down)|mlp\.experts\.\d+\.(?:gate_up|down))"
)
VISION_TARGETS = r"vision\.layers\.\d+\.(?:attn\.(?:qkv|proj)|mlp\.(?:fc1|fc2))"
ADAPTER = "default"


def apply_lora(
    model: nn.Module, language_rank: int = 0, vision_rank: int = 0, alpha_multiplier: float = 2.0, dropout: float = 0.05
) -> list[str]:
    """Inject adapters into the parts with a rank > 0; return the adapted module names.

    Afterwards only adapter weights require grad (the caller decides what else trains).
    """
    if language_rank <= 0 and vision_rank <= 0:
        return []
    from peft import LoraConfig, inject_adapter_in_model

    targets = []
    if language_rank > 0:
        targets.append(LANGUAGE_TARGETS)
    if vision_rank > 0:
        targets.append(VISION_TARGETS)
    main_rank = language_rank if language_rank > 0 else vision_rank
    rank_pattern, alpha_pattern = {}, {}
    if language_rank > 0 and vision_rank > 0 and vision_rank != language_rank:
        rank_pattern[r"vision\.layers\..*"] = vision_rank
        alpha_pattern[r"vision\.layers\..*"] = alpha_multiplier * vision_rank
    config = LoraConfig(
        r=main_rank,
        lora_alpha=alpha_multiplier * main_rank,  # type: ignore[arg-type]  # peft takes any number (alpha / r)
        lora_dropout=dropout,
        target_modules="|".join(f"(?:{t})" for t in targets),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        bias="none",
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    return adapted_modules(model)


def adapted_modules(model: nn.Module) -> list[str]:
    from peft.tuners.lora import LoraLayer

    return [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]


def is_adapter_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or ".lora_embedding_" in name


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W += scale·B·A) and put the plain layer back, in place."""
    from peft.tuners.lora import LoraLayer

    adapted = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, module in adapted:
        module.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    return model
