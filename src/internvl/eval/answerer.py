"""The model-backed answerer: evaluation items -> batched chat generation -> answer strings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from internvl.chat import Chat, load
from internvl.eval.formats import EvalItem
from internvl.eval.runner import Answerer, RunSettings
from internvl.inputs.prompt import frame_lines


def generation_overrides(settings: RunSettings) -> dict[str, Any]:
    """The run's generation settings in `GenerationConfig` terms (do_sample=False means greedy)."""
    generation = dict(settings.generation)
    greedy = not generation.get("do_sample", False) or float(generation.get("temperature", 0.0)) == 0.0
    out: dict[str, Any] = {
        "max_new_tokens": int(generation.get("max_new_tokens", 1024)),
        "temperature": 0.0 if greedy else float(generation["temperature"]),
        "top_p": float(generation.get("top_p", 1.0)),
    }
    if generation.get("num_beams", 1) != 1:
        raise ValueError("beam search is not supported; use num_beams=1")
    return out


def item_conversation(item: EvalItem, settings: RunSettings) -> tuple[list[dict[str, Any]], list[Any], int]:
    """How an item is asked: its conversation, the images passed beside it, and its tile budget. Images
    go before the prompt; a video's frames one tile each, as training writes them
    (docs/images-and-video.md#video)."""
    pictures = item.load_images()
    if item.meta.get("media") == "video":
        return [{"role": "user", "content": frame_lines(len(pictures)) + item.prompt}], pictures, 1
    parts: list[Any] = [{"type": "image", "image": image} for image in pictures]
    return [{"role": "user", "content": [*parts, item.prompt]}], [], settings.max_tiles


def chat_answerer(chat: Chat, settings: RunSettings) -> Answerer:
    """Answer items with `chat`, the whole batch in one left-padded generation."""
    overrides = generation_overrides(settings)

    def answer(items: Sequence[EvalItem]) -> list[str]:
        asked = [item_conversation(item, settings) for item in items]
        return chat.ask_batch_messages(
            [c for c, _, _ in asked], [i for _, i, _ in asked], max_tiles=[b for _, _, b in asked], **overrides
        )

    return answer


def model_answerer(settings: RunSettings) -> Answerer:
    """`internvl eval run`'s factory: load `settings.model` (None: the embedded nano model), with the
    `dtype`, `quantize`, `visual_resolution` and `v2pe_delta` of `settings.extra` when given."""
    dtype = settings.extra.get("dtype")
    chat = load(
        settings.model,
        max_tiles=settings.max_tiles,
        template=settings.template,
        system_message=settings.system_prompt,
        dtype=None if dtype is None else getattr(torch, dtype),
        quantize=settings.extra.get("quantize"),
        visual_resolution=settings.extra.get("visual_resolution"),
        v2pe_delta=settings.extra.get("v2pe_delta"),
    )
    best_of_n = int(settings.extra.get("best_of_n", 1))
    if best_of_n > 1:
        from internvl.eval.best_of_n import best_of_n_answerer, load_critic

        critic = load_critic(str(settings.extra.get("critic", "self-consistency")), settings)
        return best_of_n_answerer(chat, settings, best_of_n, critic)
    return chat_answerer(chat, settings)
