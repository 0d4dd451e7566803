"""From an OpenAI request to what the engine runs: the caps checked, the messages turned into the
processor's format with their media read under the server's rules, the prompt tokenised and tiled,
its length checked against the context, and the generation settings resolved.

Everything that can be refused is refused here, before the request is queued, so a bad request never
reaches the running batch.
"""

from __future__ import annotations

import ctypes
import functools
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from internvl.chat import Chat
from internvl.errors import ConfigError, InputError
from internvl.generate import GenerationConfig
from internvl.inputs.processor import ProcessedInputs
from internvl.serve.media import decode_image, image_size, read_image_url, read_url
from internvl.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    ImagePart,
    TextPart,
    VideoPart,
)
from internvl.serve.settings import ServeSettings

MAX_STOP_STRINGS = 4  # as OpenAI


@dataclass(frozen=True)
class Prepared:
    """A request ready for the engine: model inputs, generation settings, choices, `ignore_eos`."""

    inputs: ProcessedInputs
    config: GenerationConfig
    n: int  # answers generated (best_of when set)
    ignore_eos: bool
    best_of: BestOf | None = None


@dataclass
class BestOf:
    """What the reward model needs to pick the best `keep` of the generated answers: the last user
    message's text and the request's images (docs/prm.md#best-of-n-in-the-server)."""

    keep: int
    question: str
    images: list[Any]


def request_has_media(request: ChatCompletionRequest) -> bool:
    return any(
        isinstance(part, (ImagePart, VideoPart))
        for message in request.messages
        if not isinstance(message.content, str)
        for part in message.content
    )


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


def release_memory() -> None:
    """Return freed heap pages to the system (glibc's malloc_trim). Without it, the memory of a request's
    decoded images stays with the process after the request is done (measured: benchmarks/serve_memory.py)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def best_of_inputs(request: ChatCompletionRequest, messages: list[dict[str, Any]]) -> BestOf:
    """The reward model's question (the last user message's text) and images (every decoded image)."""
    images = [
        part["image"]
        for message in messages
        if message["role"] == "user" and not isinstance(message["content"], str)
        for part in message["content"]
        if part.get("type") == "image"
    ]
    last = [m for m in messages if m["role"] == "user"][-1]["content"]
    question = last if isinstance(last, str) else "\n".join(p["text"] for p in last if p.get("type") == "text")
    return BestOf(request.n, question, images)


class Preparer:
    """Turns requests into `Prepared` inputs; call it from worker threads (it blocks).

    One request is processed (tiled and tokenised) at a time: the tokenizer is shared, and
    preparation should not crowd the CPU the decode loop needs.
    """

    def __init__(
        self, chat: Chat, settings: ServeSettings, max_seq_len: int, max_n: int, reward_model: bool = False
    ) -> None:
        self.chat = chat
        self.reward_model = reward_model  # the server can pick the best of several answers (`best_of`)
        self.settings = settings
        self.max_seq_len = max_seq_len  # prompt + answer tokens the engine gives one answer
        self.max_n = max_n  # choices per request: the cap, and at most the engine's batch
        self._lock = threading.Lock()
        self._longest: int | None = None

    def __call__(self, request: ChatCompletionRequest) -> Prepared:
        self._check_caps(request)
        try:
            with tempfile.TemporaryDirectory(prefix="internvl-serve-") as scratch:  # videos are decoded from files
                messages, sizes = self._messages(request, Path(scratch))
                self._check_fit(request, messages, sizes)  # before any pixel is decoded or any text tokenised
                self._decode_images(messages)
                with self._lock:
                    try:
                        inputs = self.chat.processor(messages, max_tiles=request.max_tiles)
                    except InputError as exc:  # a video's error names the request's part, not our scratch file
                        message = re.sub(
                            re.escape(scratch) + r"/video-(\d+)-(\d+)", r"messages[\1].content[\2]", str(exc)
                        )
                        raise APIError(400, message, code="invalid_input", param="messages") from exc
        finally:
            if request_has_media(request):
                release_memory()  # decoded images and base64 bodies are gone: give their pages back
        config = self._config(request, int(inputs.input_ids.shape[0]))
        if request.best_of is None:
            return Prepared(inputs, config, request.n, request.ignore_eos)
        return Prepared(inputs, config, request.best_of, request.ignore_eos, best_of_inputs(request, messages))

    def _check_caps(self, request: ChatCompletionRequest) -> None:
        s = self.settings
        if request.best_of is not None:
            self._check_best_of(request)
        unsupported = request.unsupported()
        if unsupported:
            raise APIError(
                400, f"{unsupported} is not supported by this server", code="unsupported_parameter", param=unsupported
            )
        limit = request.token_limit()
        if limit is not None and limit > s.max_tokens:
            raise APIError(
                400,
                f"max_tokens = {limit} exceeds this server's cap of {s.max_tokens}",
                code="max_tokens_exceeded",
                param="max_tokens",
            )
        if request.n > self.max_n:
            raise APIError(
                400, f"n = {request.n} exceeds this server's cap of {self.max_n}", code="n_exceeded", param="n"
            )
        if request.max_tiles is not None and request.max_tiles > s.max_tiles:
            raise APIError(
                400,
                f"max_tiles = {request.max_tiles} exceeds this server's cap of {s.max_tiles}",
                code="max_tiles_exceeded",
                param="max_tiles",
            )
        stops = request.stop_strings()
        if len(stops) > MAX_STOP_STRINGS or not all(stops):
            raise APIError(400, f"stop takes at most {MAX_STOP_STRINGS} non-empty strings", param="stop")
        parts = [p for m in request.messages if not isinstance(m.content, str) for p in m.content]
        media = sum(isinstance(p, (ImagePart, VideoPart)) for p in parts)
        if media > s.max_images:
            raise APIError(
                400,
                f"the request has {media} images and videos; this server takes at most {s.max_images}",
                code="too_many_images",
                param="messages",
            )
        for part in parts:
            if isinstance(part, VideoPart) and (part.video_url.num_frames or 0) > s.max_video_frames:
                raise APIError(
                    400,
                    f"num_frames = {part.video_url.num_frames} exceeds this server's cap of {s.max_video_frames}",
                    code="too_many_frames",
                    param="messages",
                )

    def _messages(
        self, request: ChatCompletionRequest, scratch: Path
    ) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        """OpenAI messages -> the processor's messages (images as their encoded bytes, decoded later by
        `_decode_images`; videos as files in `scratch`), and each image's size read from its header."""
        messages: list[dict[str, Any]] = []
        sizes: list[tuple[int, int]] = []
        for i, message in enumerate(request.messages):
            role = "system" if message.role == "developer" else message.role
            if isinstance(message.content, str):
                messages.append({"role": role, "content": message.content})
                continue
            content: list[Any] = []
            for j, part in enumerate(message.content):
                label = f"messages[{i}].content[{j}]"
                if isinstance(part, TextPart):
                    content.append({"type": "text", "text": part.text})
                elif role != "user":
                    raise APIError(
                        400,
                        f"{label}: images and videos may only appear in user messages",
                        code="invalid_input",
                        param="messages",
                    )
                elif isinstance(part, ImagePart):
                    data = read_image_url(part.image_url.url, self.settings, label)
                    sizes.append(image_size(data, self.settings, label))
                    content.append({"type": "image", "image": data, "label": label})
                else:
                    path = scratch / f"video-{i}-{j}"
                    path.write_bytes(read_url(part.video_url.url, self.settings, label, kind="video"))
                    content.append({"type": "video", "video": path, "num_frames": part.video_url.num_frames})
            messages.append({"role": role, "content": content})
        return messages, sizes

    def _check_fit(
        self, request: ChatCompletionRequest, messages: list[dict[str, Any]], sizes: list[tuple[int, int]]
    ) -> None:
        """Refuse, in microseconds, a request whose prompt cannot fit: its images' tokens come from their
        tile grids (header sizes), its text's from a lower bound (UTF-8 bytes / the longest token's bytes)."""
        processor = self.chat.processor
        tiles = processor.count_image_tiles(sizes, request.max_tiles)
        text_bytes = 0
        for message in messages:
            content = message["content"]
            texts = [content] if isinstance(content, str) else [p["text"] for p in content if p.get("type") == "text"]
            text_bytes += sum(len(text.encode("utf-8", "replace")) for text in texts)
        at_least = tiles * processor.num_image_token + -(-text_bytes // self.longest_token_bytes)
        limit = request.token_limit() or 1
        if at_least + limit > self.max_seq_len:
            raise APIError(
                400,
                f"the prompt is at least {at_least} tokens ({tiles} image tiles and {text_bytes} bytes of text) + "
                f"{limit} to generate, over the {self.max_seq_len} tokens this server gives a conversation: use "
                "fewer or smaller images (max_tiles), a shorter text or a lower max_tokens",
                code="context_length_exceeded",
                param="messages",
            )

    def _check_best_of(self, request: ChatCompletionRequest) -> None:
        def refuse(message: str) -> None:
            raise APIError(400, message, code="invalid_value", param="best_of")

        best_of = int(request.best_of or 0)
        if not self.reward_model:
            refuse("best_of needs a reward model, and this server has none (internvl serve --reward-model DIR)")
        if best_of < request.n:
            refuse(f"best_of = {best_of} must be at least n = {request.n}")
        if best_of > self.max_n:
            refuse(f"best_of = {best_of} exceeds this server's cap of {self.max_n}")
        if request.stream:
            refuse("best_of cannot be streamed: the answers are chosen once all are written")
        if any(
            isinstance(part, VideoPart)
            for m in request.messages
            if not isinstance(m.content, str)
            for part in m.content
        ):
            refuse("best_of works with text and images; the reward model does not score answers about videos")

    def _decode_images(self, messages: list[dict[str, Any]]) -> None:
        """Decode the images `_messages` left as bytes (pixel cap checked from the header first)."""
        for message in messages:
            if isinstance(message["content"], str):
                continue
            for part in message["content"]:
                if part.get("type") == "image":
                    part["image"] = decode_image(part["image"], self.settings, part.pop("label"))

    @property
    def longest_token_bytes(self) -> int:
        """The most UTF-8 bytes one token's text can hold (an upper bound: text / this <= its tokens)."""
        if self._longest is None:
            vocab = self.chat.tokenizer.get_vocab() if hasattr(self.chat.tokenizer, "get_vocab") else {}
            self._longest = max((len(token.encode("utf-8", "replace")) for token in vocab), default=64)
        return self._longest

    def _config(self, request: ChatCompletionRequest, prompt_tokens: int) -> GenerationConfig:
        room = self.max_seq_len - prompt_tokens
        limit = request.token_limit()
        if room < 1 or (limit is not None and limit > room):
            wanted = f" + {limit} to generate" if limit is not None else ""
            raise APIError(
                400,
                f"the prompt is {prompt_tokens} tokens{wanted}, over the {self.max_seq_len} tokens "
                "this server gives a conversation: use fewer or smaller images (max_tiles), a shorter "
                "text or a lower max_tokens",
                code="context_length_exceeded",
                param="messages",
            )
        overrides: dict[str, Any] = {
            "max_new_tokens": limit if limit is not None else min(self.settings.max_tokens, room),
            "stop_strings": request.stop_strings(),
            "seed": request.seed,
        }
        for name in ("temperature", "top_p", "top_k", "repetition_penalty"):
            if getattr(request, name) is not None:
                overrides[name] = getattr(request, name)
        try:
            return self.chat.answers.settings(self.chat.generation, **overrides)
        except ConfigError as exc:
            raise APIError(400, str(exc), code="invalid_value") from exc
