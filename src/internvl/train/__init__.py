"""Training: one plain recipe per method (`sft.py`) and the loop pieces they share.

    loss.py         weighted next-token cross-entropy from hidden states, in chunks; MoE load balancing
    optim.py        AdamW parameter groups (per-part learning rates, no decay on norms/biases), warm-up + cosine
    lora.py         LoRA adapters on the language model / vision encoder (peft), and merging them back
    checkpoint.py   atomic training checkpoints: weights, optimiser, step (the schedule), data position, RNG states
    distributed.py  torchrun process groups, DDP / FSDP2 wrapping, collective helpers
    data.py         the batch-source contract, resumable batch streams, a synthetic packed source
    metrics.py      metrics.jsonl and the loss / learning-rate plot
    sft.py          supervised fine-tuning: `run(config)`
    cli.py          `internvl train sft | export` (alias merge-lora), `internvl plot`

Recipes are read by `internvl.settings` (YAML into dataclasses, dotted `key=value` overrides).
Importing this package is cheap: torch and peft load with the modules that need them.
"""

from internvl.errors import TrainingError

__all__ = ["TrainingError"]
