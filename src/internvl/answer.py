"""The answer policy: how generated tokens become an answer. One place for `Chat`, the server engine
and the evaluation answerer (which answers through `Chat`).

It follows the official `chat()` (docs/prompts.md#chat):

* generation stops at the template's stop token and at the caller's stop ids; a caller's stop string
  that is one special token is a stop id too (it vanishes from decoded text, so the text could never
  show it: Hermes-2 stops at `<|endoftext|>`);
* the answer is decoded with special tokens skipped, cut before the template's stop string and the
  caller's stop strings, and stripped;
* a streamed answer (`AnswerText`) releases the same text in pieces: joined, they equal the answer.

Sampling generators are seeded by `internvl.generate.sampling_generator`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from internvl.generate import GenerationConfig, TextStream


@dataclass(frozen=True)
class AnswerPolicy:
    """The rules above for one tokenizer and template (`Chat.answers`)."""

    tokenizer: Any
    stop_token: str  # the template's stop token text (`<|im_end|>`)
    stop_token_id: int
    stop_str: str | None = None  # the template's extra stop string, if any

    def settings(self, base: GenerationConfig, **overrides: Any) -> GenerationConfig:
        """`base` with `overrides`, the template's stop token id and stop string always included."""
        config = replace(base, **overrides)
        stop_ids = tuple(dict.fromkeys((*config.stop_token_ids, self.stop_token_id)))
        stop_strings = tuple(config.stop_strings)
        if self.stop_str and self.stop_str not in stop_strings:
            stop_strings += (self.stop_str,)
        return replace(config, stop_token_ids=stop_ids, stop_strings=stop_strings)

    def stop_ids(self, config: GenerationConfig) -> frozenset[int]:
        """The stop token ids of `config`, plus its stop strings that are a single special token."""
        ids = set(config.stop_token_ids)
        for text in config.stop_strings:
            token = self.tokenizer.convert_tokens_to_ids(text)
            if token is not None and token != self.tokenizer.unk_token_id and self.decode_text([token]) == "":
                ids.add(int(token))
        return frozenset(ids)

    def decode_raw(self, tokens: list[int]) -> str:
        """Text with special tokens kept: what stop strings are matched against during generation."""
        return self.tokenizer.decode(tokens, skip_special_tokens=False)

    def decode_text(self, tokens: list[int]) -> str:
        """Answer text as the official `chat()` decodes it (special tokens skipped)."""
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def answer(self, tokens: Sequence[int], config: GenerationConfig) -> str:
        """The finished answer of generated `tokens` under `config` (made by `settings`)."""
        return self._cut(tokens, config).strip()

    def continuation(self, tokens: Sequence[int], config: GenerationConfig) -> str:
        """Like `answer`, for text that continues a given prefix: leading space is kept (it may separate
        the prefix from what follows), trailing space is stripped."""
        return self._cut(tokens, config).rstrip()

    def _cut(self, tokens: Sequence[int], config: GenerationConfig) -> str:
        text = self.decode_text([t for t in tokens if t != self.stop_token_id])
        for stop in (self.stop_token, *config.stop_strings):
            text = text.split(stop)[0]
        return text

    def stream(self, config: GenerationConfig) -> "AnswerText":
        """A streamed answer under `config`: push tokens, get text pieces."""
        return AnswerText(self.decode_text, (self.stop_token, *config.stop_strings))


class AnswerText:
    """The text of one answer in pieces, shaped as `AnswerPolicy.answer` shapes the whole: cut before the
    first stop string, leading and trailing whitespace removed (trailing whitespace is held back until
    more text follows it), so the pieces joined equal the non-streamed answer."""

    def __init__(self, decode: Callable[[list[int]], str], stop_strings: tuple[str, ...]) -> None:
        self._stream = TextStream(decode, stop_strings)
        self._started = False
        self._pending = ""  # trailing whitespace not yet released

    @property
    def stopped(self) -> bool:
        return self._stream.stopped

    def push(self, token: int) -> str:
        return self._shape(self._stream.push(token))

    def finish(self) -> str:
        return self._shape(self._stream.finish())  # the whitespace still held back is dropped

    def _shape(self, piece: str) -> str:
        if not self._started:
            piece = piece.lstrip()
            if not piece:
                return ""
            self._started = True
        piece = self._pending + piece
        body = piece.rstrip()
        self._pending = piece[len(body) :]
        return body
