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


def chat_answerer(chat: Chat, settings: RunSettings) -> Answerer:
    """Answer items with `chat`: each item's images (tiled up to `settings.max_tiles`) before its prompt,
    the whole batch in one left-padded generation."""
    overrides = generation_overrides(settings)

    def answer(items: Sequence[EvalItem]) -> list[str]:
        conversations: list[list[dict[str, Any]]] = []
        images: list[list[Any]] = []
        for item in items:
            pictures = item.load_images()
            if item.meta.get("media") == "video":
                # frames of one video, one tile each, as training writes them (docs/images-and-video.md#video)
                frames = frame_lines(len(pictures))
                conversations.append([{"role": "user", "content": frames + item.prompt}])
                images.append(pictures)
                continue
            parts: list[Any] = [{"type": "image", "image": image} for image in pictures]
            conversations.append([{"role": "user", "content": [*parts, item.prompt]}])
            images.append([])
        budgets = [1 if item.meta.get("media") == "video" else settings.max_tiles for item in items]
        return chat.ask_batch_messages(conversations, images, max_tiles=budgets, **overrides)

    return answer


def model_answerer(settings: RunSettings) -> Answerer:
    """`internvl eval run`'s factory: load `settings.model` (None: the embedded nano model), with the
    `dtype` and `quantize` of `settings.extra` when given."""
    dtype = settings.extra.get("dtype")
    chat = load(
        settings.model,
        max_tiles=settings.max_tiles,
        template=settings.template,
        system_message=settings.system_prompt,
        dtype=None if dtype is None else getattr(torch, dtype),
        quantize=settings.extra.get("quantize"),
    )
    return chat_answerer(chat, settings)
