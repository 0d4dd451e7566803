"""The OpenAI chat-completions wire format: the request we accept, the responses and stream chunks we
send, and errors in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`.

Extensions beyond OpenAI's fields (all optional): `max_tiles` (tiles per image), `top_k`,
`repetition_penalty`, `ignore_eos` (generate through stop tokens until the token limit), `best_of`
(sample that many answers and return the `n` the server's reward model scores highest), and
`video_url` content parts (`{"type": "video_url", "video_url": {"url": ..., "num_frames": 8}}`).
Fields we do not know are ignored, as OpenAI-compatible servers usually do; fields whose meaning we
cannot honour (`logprobs`, `tools`, penalties other than 0) are refused.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# -- errors ---------------------------------------------------------------------------------------

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class APIError(Exception):
    """An error answered to the client with `status` and an OpenAI-shaped body."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.code, self.param)


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def describe_validation_error(error: ValidationError) -> tuple[str, str | None]:
    """A one-line message and the offending parameter of pydantic's first complaint."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
    return f"{location or 'body'}: {first['msg']}{more}", location or None


# -- the request ------------------------------------------------------------------------------------


class _Wire(BaseModel):
    """Unknown fields are ignored (clients send many optional ones). Types are strict: "8" is not an
    integer, true is not a number, "yes" is not a boolean (an integer is still a valid float)."""

    model_config = ConfigDict(extra="ignore", strict=True)


class ImageURL(_Wire):
    url: str
    detail: str | None = None  # accepted and ignored: tiling follows `max_tiles`


class VideoURL(_Wire):
    url: str
    num_frames: int | None = Field(None, ge=1)


class TextPart(_Wire):
    type: Literal["text"]
    text: str


class ImagePart(_Wire):
    type: Literal["image_url"]
    image_url: ImageURL


class VideoPart(_Wire):
    type: Literal["video_url"]
    video_url: VideoURL


ContentPart = Annotated[TextPart | ImagePart | VideoPart, Field(discriminator="type")]


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]


class StreamOptions(_Wire):
    include_usage: bool = False


class ChatCompletionRequest(_Wire):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # extensions
    max_tiles: int | None = Field(None, ge=1)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    ignore_eos: bool = False
    best_of: int | None = Field(None, ge=1)
    # refused when used
    logprobs: bool | None = None
    tools: list[Any] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None

    def unsupported(self) -> str | None:
        """The name of a field set to something we cannot honour, else None."""
        if self.logprobs:
            return "logprobs"
        if self.tools:
            return "tools"
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) not in (None, 0):
                return name
        return None

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


# -- responses ------------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    id: str,
    model: str,
    answers: list[str],
    finish_reasons: list[str | None],
    prompt_tokens: int,
    completion_tokens: int,
    scores: list[float] | None = None,
) -> dict[str, Any]:
    """A `chat.completion`; with `scores` (Best-of-N), each choice also carries its `reward_score`."""
    choices: list[dict[str, Any]] = [
        {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason, "logprobs": None}
        for i, (text, reason) in enumerate(zip(answers, finish_reasons))
    ]
    for choice, score in zip(choices, scores or []):
        choice["reward_score"] = score
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk(id: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk`; `choices` entries are `delta_choice(...)`."""
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def delta_choice(index: int, delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
