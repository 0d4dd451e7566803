"""Where does the decoder look when it must copy a name from the question? Attention mass per layer and head.

On the first N chart questions of a world export whose gold answer restates a bar name of the question
(`benchmarks/nano_copy_probe.py` picks the same items), the position that predicts the answer's first name
token spreads its attention over the prompt. This prints, per decoder layer and head, the mean share that
goes to the picture's tokens, to the question's copy of that name, and to everything else. A decoder that
copies has a head with a large share on the name; docs/nano/README.md#copying-the-question reads the table.

The attention is recomputed from each layer's own inputs, caught by a forward pre-hook on the attention module
(the model runs unchanged): q and k from the layer's qkv projection, RoPE, a causal softmax.

Run: `.venv/bin/python benchmarks/nano_attention_probe.py --data runs/nano/world-held --models nano`
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, publish
from nano_copy_probe import STEP, chart_items

import internvl
from internvl.inputs.tokens import IMAGE_PLACEHOLDER
from internvl.model.llm import Attention, apply_rope


def attention_probabilities(module: Attention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(heads, T, T) causal attention probabilities of one unbatched, unpadded prefill through `module`."""
    qkv = module.qkv(x)
    qk = qkv[..., : module.q_size + module.kv_size].unflatten(-1, (-1, module.head_dim))
    if module.qk_norm:
        qk = torch.cat([module.q_norm(qk[:, :, : module.num_heads]), module.k_norm(qk[:, :, module.num_heads :])], 2)
    qk = apply_rope(qk.transpose(1, 2), cos, sin)
    q, k = qk[0, : module.num_heads], qk[0, module.num_heads :]
    k = k.repeat_interleave(module.num_heads // module.num_kv_heads, dim=0)
    scores = q @ k.transpose(-1, -2) / math.sqrt(module.head_dim)
    length = scores.shape[-1]
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1)


@torch.no_grad()
def attention_shares(chat: internvl.Chat, items: list[tuple[str, str, str, str]]) -> torch.Tensor:
    """(layers, heads, 3) mean shares of the name-predicting position's attention: picture, question name, rest."""
    caught: list[torch.Tensor] = []

    def catch(module: Attention, args: tuple) -> None:
        x, cos, sin = args[:3]
        caught.append(attention_probabilities(module, x, cos, sin))

    attentions = [layer.attn for layer in chat.model.language.layers]
    hooks = [attention.register_forward_pre_hook(catch) for attention in attentions]
    total, counted = torch.zeros(len(attentions), attentions[0].num_heads, 3), 0
    try:
        for image, question, _described, answer in items:
            inputs = chat.processor(
                [{"role": "user", "content": question.replace(f"{IMAGE_PLACEHOLDER}\n", "")}], images=[image]
            )
            answer_ids = chat.tokenizer(answer, add_special_tokens=False)["input_ids"]
            name = chat.tokenizer(" " + STEP.search(answer).group(1), add_special_tokens=False)["input_ids"]
            prompt = inputs.input_ids.tolist()
            in_question = [i for i, token in enumerate(prompt) if token == name[0]]
            if len(name) != 1 or not in_question or name[0] not in answer_ids:
                continue  # only single-token names that the question holds
            ids = torch.tensor(prompt + answer_ids)
            predicting = len(prompt) + answer_ids.index(name[0]) - 1
            caught.clear()
            chat.model(ids[None], pixel_values=inputs.pixel_values)
            picture = ids[: predicting + 1] == chat.model.image_token_id
            for layer, probabilities in enumerate(caught):
                row = probabilities[:, predicting, : predicting + 1]  # (heads, positions so far)
                shares = torch.stack([row[:, picture].sum(-1), row[:, in_question].sum(-1)], -1)
                total[layer] += torch.cat([shares, 1 - shares.sum(-1, keepdim=True)], -1)
            counted += 1
    finally:
        for hook in hooks:
            hook.remove()
    return total / max(counted, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an `internvl world generate --describe` folder")
    parser.add_argument("--models", nargs="+", default=["nano"], help="model folders, or nano")
    parser.add_argument("--n", type=int, default=30, help="chart questions")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    items = chart_items(args.data, args.n)
    lines = [
        "## Where does the decoder look when it must copy a name? (benchmarks/nano_attention_probe.py)",
        "",
        machine_line(),
        "",
        f"{len(items)} chart questions of `{args.data}`: the mean share of attention, at the position that "
        "predicts the answer's first bar name, on the picture's tokens / on the question's copy of the name / "
        "elsewhere; one cell per head.",
        "",
    ]
    for model in args.models:
        chat = internvl.load(None if model == "nano" else model)
        shares = attention_shares(chat, items)
        heads = shares.shape[1]
        lines += [
            f"`{model}`:",
            "",
            "| layer | " + " | ".join(f"head {h}" for h in range(heads)) + " |",
            "|---|" + "---|" * heads,
        ]
        for layer, row in enumerate(shares.tolist()):
            lines.append(f"| {layer} | " + " | ".join(f"{p:.2f} / {n:.2f} / {o:.2f}" for p, n, o in row) + " |")
        lines.append("")
    publish(lines, args.append)


if __name__ == "__main__":
    main()
