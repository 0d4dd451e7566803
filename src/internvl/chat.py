"""The high-level API: load a checkpoint folder, ask questions about images and videos.

    chat = internvl.load("path/to/InternVL3-1B")
    chat.ask("What is in the picture?", images=["a.png"])           # one question, official chat() prompt
    session = chat.session(); session.ask("Describe it.", images=["a.png"]); session.ask("And the colour?")
    chat.ask_batch(["Q1", "Q2"], images=[["a.png"], []])            # one batched generation

Prompts follow the official `chat()` recipe (docs/prompts.md#chat): the checkpoint's template, its system
message (config `system_message`, else the template default), `<image>\\n` before the first question,
generation stopping at the template's stop token, and the answer cut at the stop string and stripped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from internvl.answer import AnswerPolicy
from internvl.config import InternVLConfig, check_v2pe_delta
from internvl.errors import CheckpointError, ConfigError, InputError
from internvl.generate import GenerationConfig, generate, stream
from internvl.inputs.image import ImageSource
from internvl.inputs.processor import Message, ProcessedInputs, Processor, VideoSource
from internvl.inputs.tokens import IMG_CONTEXT, load_tokenizer
from internvl.model.flash import check_resolution, route_prompts
from internvl.model.internvl import InternVL
from internvl.model.linear import choose_cpu_kernels, fast_fp32_linears, quantize_int4, quantize_int8
from internvl.shipped import model_folder
from internvl.weights import load_model

log = logging.getLogger("internvl")

QUANTIZE_MODES = ("int8", "int4")  # weight-only, the language model's projections


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> None:
    """A device this machine has: a line naming it, not a traceback from deep inside torch."""
    try:
        kind = torch.device(device).type
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}; use cpu or cuda (cuda:N)") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine or in this PyTorch build; use cpu")


@dataclass
class Chat:
    """A model, its tokenizer and processor, and default generation settings."""

    model: InternVL
    tokenizer: Any
    processor: Processor
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    # Flash models (docs/flash.md): each tile at full resolution, compressed, or as the router decides
    visual_resolution: str = "full"

    # -- single questions ------------------------------------------------------------------------
    def ask(
        self,
        question: str,
        images: Sequence[ImageSource] = (),
        videos: Sequence[VideoSource] = (),
        history: Sequence[tuple[str, str]] = (),
        max_tiles: int | None = None,
        **generation: Any,
    ) -> str:
        """The answer to `question` about `images` / `videos`, after the (question, answer) `history`.

        Generation settings (max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed,
        stop_strings) override the chat's defaults for this call.
        """
        return self.ask_messages(_messages(question, history), images, videos, max_tiles, **generation)

    def ask_messages(
        self,
        messages: Sequence[Message],
        images: Sequence[ImageSource] = (),
        videos: Sequence[VideoSource] = (),
        max_tiles: int | None = None,
        **generation: Any,
    ) -> str:
        inputs, config = self._prepare(messages, images, videos, max_tiles, generation)
        prompts, pixels, features = self._route([inputs.input_ids], [inputs.pixel_values])
        tokens = generate(
            self.model, prompts[0][None], None, pixels, config, decode=self.answers.decode_raw, image_features=features
        )[0]
        return self.answers.answer(tokens, config)

    def stream(
        self,
        question: str,
        images: Sequence[ImageSource] = (),
        videos: Sequence[VideoSource] = (),
        history: Sequence[tuple[str, str]] = (),
        max_tiles: int | None = None,
        **generation: Any,
    ) -> Iterator[str]:
        """Like `ask`, yielding the answer in text pieces as they are generated."""
        inputs, config = self._prepare(_messages(question, history), images, videos, max_tiles, generation)
        prompts, pixels, features = self._route([inputs.input_ids], [inputs.pixel_values])
        text = self.answers.stream(config)
        for step in stream(
            self.model, prompts[0][None], None, pixels, config, decode=self.answers.decode_raw, image_features=features
        ):
            token = step[0]
            if token is None or token in config.stop_token_ids:
                continue
            piece = text.push(token)
            if piece:
                yield piece
        rest = text.finish()
        if rest:
            yield rest

    def session(self, system_message: str | None = None) -> "Session":
        """A multi-turn conversation that keeps its history (and the images of each turn)."""
        return Session(self, system_message)

    # -- batches ---------------------------------------------------------------------------------
    def ask_batch(
        self,
        questions: Sequence[str],
        images: Sequence[Sequence[ImageSource]] | None = None,
        max_tiles: int | None = None,
        **generation: Any,
    ) -> list[str]:
        """Answers to several independent questions, generated together (left padding); each question
        has its own list of images (any number, including none)."""
        images = images if images is not None else [[] for _ in questions]
        if len(images) != len(questions):
            raise InputError(f"{len(questions)} questions but {len(images)} image lists")
        conversations = [[{"role": "user", "content": q}] for q in questions]
        return self.ask_batch_messages(conversations, images, max_tiles, **generation)

    def ask_batch_messages(
        self,
        conversations: Sequence[Sequence[Message]],
        images: Sequence[Sequence[ImageSource]],
        max_tiles: int | Sequence[int | None] | None = None,
        **generation: Any,
    ) -> list[str]:
        """Batched answers to whole conversations; `max_tiles` is one budget or one per conversation."""
        if not conversations:
            return []
        rows, config = self._generate_batch(conversations, images, max_tiles, None, generation)
        return [self.answers.answer(tokens, config) for tokens in rows]

    def continue_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        images: Sequence[Sequence[ImageSource]],
        prefixes: Sequence[str],
        max_tiles: int | Sequence[int | None] | None = None,
        **generation: Any,
    ) -> list[str]:
        """Each conversation's answer when it must start with `prefixes[i]` (the assistant's text so far,
        written into the prompt after the assistant's role): the prefix followed by what the model writes
        next, as the official pipelines continue a partial solution. Only trailing space is stripped."""
        if len(prefixes) != len(conversations):
            raise InputError(f"{len(conversations)} conversations but {len(prefixes)} prefixes")
        if not conversations:
            return []
        rows, config = self._generate_batch(conversations, images, max_tiles, prefixes, generation)
        return [prefix + self.answers.continuation(tokens, config) for prefix, tokens in zip(prefixes, rows)]

    def _generate_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        images: Sequence[Sequence[ImageSource]],
        max_tiles: int | Sequence[int | None] | None,
        prefixes: Sequence[str] | None,
        generation: dict[str, Any],
    ) -> tuple[list[list[int]], GenerationConfig]:
        budgets = list(max_tiles) if isinstance(max_tiles, Sequence) else [max_tiles] * len(conversations)
        inputs = [
            self.processor(c, images=imgs, max_tiles=budget) for c, imgs, budget in zip(conversations, images, budgets)
        ]
        config = self.answers.settings(self.generation, **generation)
        prompts = [item.input_ids for item in inputs]
        if prefixes is not None:
            encoded = self.tokenizer(list(prefixes), add_special_tokens=False)["input_ids"]
            prompts = [torch.cat([ids, torch.tensor(extra, dtype=torch.long)]) for ids, extra in zip(prompts, encoded)]
        for item, ids in zip(inputs, prompts):
            self._check_context(replace(item, input_ids=ids), config)
        prompts, pixels, features = self._route(prompts, [item.pixel_values for item in inputs])
        ids, mask = left_pad(prompts, self.pad_token_id)
        rows = generate(self.model, ids, mask, pixels, config, decode=self.answers.decode_raw, image_features=features)
        return rows, config

    def _route(
        self, prompts: Sequence[torch.Tensor], pixel_values: Sequence[torch.Tensor | None]
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """Prompts, tiles and image features at the chat's visual resolution: (prompts, pixels, None) at full
        resolution (the model encodes the tiles in prefill); else (cut prompts, None, features)."""
        prompts, features, _ = route_prompts(self.model, prompts, pixel_values, self.visual_resolution)
        if features is not None:
            return prompts, None, features
        tiles = [p for p in pixel_values if p is not None]
        return prompts, torch.cat(tiles) if tiles else None, None  # the ViT casts to its dtype

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def answers(self) -> AnswerPolicy:
        """How generated tokens become answers (stop rules, decoding, shaping) for this chat."""
        template = self.processor.template
        return AnswerPolicy(self.tokenizer, template.stop_token, self.processor.stop_token_id, template.stop_str)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else int(self.processor.stop_token_id)

    def _prepare(
        self,
        messages: Sequence[Message],
        images: Sequence[ImageSource],
        videos: Sequence[VideoSource],
        max_tiles: int | None,
        generation: dict[str, Any],
    ) -> tuple[ProcessedInputs, GenerationConfig]:
        """Model inputs and generation settings of one conversation, refused early if too long."""
        inputs = self.processor(messages, images=images, videos=videos, max_tiles=max_tiles)
        config = self.answers.settings(self.generation, **generation)
        self._check_context(inputs, config)
        return inputs, config

    def _check_context(self, inputs: ProcessedInputs, config: GenerationConfig) -> None:
        """Refuse a prompt that does not fit the model's context before any model work is done. With V2PE
        what must fit is the prompt's position span, which its image tokens shorten."""
        limit = self.model.config.text.max_position_embeddings
        length = int(inputs.input_ids.shape[0])
        what = f"{length} tokens long"
        if self.model.config.uses_v2pe:
            length = math.ceil(float(self.model.positions(inputs.input_ids[None])[0, -1])) + 1
            what = f"{length} positions long (V2PE step {self.model.config.v2pe_delta})"
        if length >= limit:
            raise InputError(
                f"the prompt is {what} and the model's context is {limit}: use fewer or smaller "
                "images (--max-tiles) or a shorter text"
            )
        if length + config.max_new_tokens > limit:
            log.warning(
                "prompt (%d) + max_new_tokens (%d) exceed the context (%d); the answer may be cut",
                length,
                config.max_new_tokens,
                limit,
            )


@dataclass
class Session:
    """A conversation with history: each `ask` adds the question (with its images) and the answer."""

    chat: Chat
    system_message: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)

    def ask(self, question: str, images: Sequence[ImageSource] = (), **generation: Any) -> str:
        content: list[Any] = [{"type": "image", "image": image} for image in images] + [question]
        turn = {"role": "user", "content": content}
        system = [{"role": "system", "content": self.system_message}] if self.system_message is not None else []
        answer = self.chat.ask_messages(system + self.messages + [turn], **generation)
        self.messages += [turn, {"role": "assistant", "content": answer}]
        return answer

    def reset(self) -> None:
        self.messages.clear()


def _messages(question: str, history: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for asked, answered in history:
        messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
    return messages + [{"role": "user", "content": question}]


def left_pad(rows: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D id tensors -> (batch, longest) ids and attention mask, padded on the left for generation."""
    longest = max(int(r.shape[0]) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, longest - row.shape[0] :] = row
        mask[i, longest - row.shape[0] :] = 1
    return ids, mask


def load(
    folder: str | Path | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: str | None = None,
    max_tiles: int | None = None,
    template: str | None = None,
    system_message: str | None = None,
    thinking: bool = False,
    generation: GenerationConfig | None = None,
    quantize: str | None = None,
    v2pe_delta: float | None = None,
    visual_resolution: str | None = None,
) -> Chat:
    """Load a checkpoint folder (either layout) with its tokenizer, ready to `ask`.

    `folder=None` loads the embedded nano model. dtype: default float32 on CPU, the checkpoint's on
    CUDA; device: CUDA when available, else CPU. `max_tiles` defaults to the config's `max_dynamic_patch`; `template` to the
    config's; `system_message` to the config's, else the template's default. With bf16 weights on a CPU
    without native bf16 (`model.linear`), the vision encoder and projector are kept in fp32; fp32 decoder
    projections on the CPU decode on our kernel (`model.linear.fast_fp32_linears`). `quantize="int8"` stores
    the language model's projections as int8 (q8_0 on our CPU kernels: a quarter of fp32's bytes read per
    decoded token), `quantize="int4"` as 4-bit (q4_0; CPU only).
    `v2pe_delta` overrides the config's V2PE step of image tokens (docs/architecture.md#v2pe;
    1 = ordinary positions). `visual_resolution` (full | compressed | router) picks the connector of each
    tile on Flash models (docs/flash.md); default: router on Flash models, else full.
    """
    check_v2pe_delta(v2pe_delta, "v2pe_delta")
    if quantize not in (None, *QUANTIZE_MODES):
        raise ConfigError(f"unknown quantize mode {quantize!r}; choose int8 or int4, or leave it unset")
    if quantize == "int4" and (device or default_device()) != "cpu":
        raise ConfigError("quantize='int4' has CPU kernels only (ours, or PyTorch's): run it with device='cpu'")
    folder = model_folder(folder if folder is not None else "nano")
    device = device or default_device()
    check_device(device)
    if dtype is None and device == "cpu":
        dtype = torch.float32  # a CPU without bf16 matrix units runs bf16 matmuls far slower than fp32
    model = load_model(folder, dtype=dtype, device=device)
    if v2pe_delta is not None:
        model.config.v2pe_delta = v2pe_delta
    choose_cpu_kernels(model)
    if quantize == "int8":
        quantize_int8(model.language)
    elif quantize == "int4":
        quantize_int4(model.language)
    if device == "cpu":  # the fp32 projections left (all but quantized ones) on our decoding kernel and oneDNN
        fast_fp32_linears(model)
    tokenizer = load_tokenizer(folder)
    image_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    if image_token_id is None or image_token_id == tokenizer.unk_token_id:
        raise CheckpointError(f"{folder}: the tokenizer has no {IMG_CONTEXT} token")
    if model.image_token_id is not None and model.image_token_id != image_token_id:
        log.warning(
            "config image_token_id %s differs from the tokenizer's %s; using the tokenizer's",
            model.image_token_id,
            image_token_id,
        )
    model.image_token_id = int(image_token_id)
    resolution = visual_resolution or ("router" if model.config.flash else "full")
    check_resolution(resolution, model.config.flash)
    processor = build_processor(model.config, tokenizer, max_tiles, template, system_message, thinking)
    return Chat(model, tokenizer, processor, generation or GenerationConfig(max_new_tokens=1024), resolution)


def build_processor(
    config: InternVLConfig,
    tokenizer: Any,
    max_tiles: int | None = None,
    template: str | None = None,
    system_message: str | None = None,
    thinking: bool = False,
) -> Processor:
    """The processor a model's config calls for (its template, system message, tiling and image size);
    each argument left as None takes the config's value."""
    return Processor(
        tokenizer,
        num_image_token=config.num_image_token,
        template=template or config.template,
        system_message=system_message if system_message is not None else config.system_message,
        thinking=thinking,
        min_tiles=config.min_dynamic_patch,
        max_tiles=max_tiles if max_tiles is not None else config.max_dynamic_patch,
        use_thumbnail=config.use_thumbnail,
        tile_size=config.vision.image_size,
    )
