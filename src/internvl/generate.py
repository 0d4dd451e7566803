"""Generation: one prefill and a decode loop over the pre-allocated KV cache, sampling, stop rules,
streaming. Plain PyTorch in the manner of gpt-fast; no transformers.

Flow for a batch of LEFT-padded prompts (the images' tiles of all rows concatenated in row order):

    prefill   model(input_ids (batch, prompt), pixel_values (tiles, 3, H, W), mask, positions, cache)
              -> logits of the last position (batch, vocab); the images are encoded here, once
    step      logits -> repetition penalty -> greedy | temperature, top-k, top-p, sample -> tokens (batch,)
              -> stop rules on the host -> model(tokens (batch, 1), mask, positions, cache) -> (batch, vocab)

Positions follow transformers' `generate`: cumsum(attention_mask) - 1 (0 on padding), so a row's
tokens get the same positions alone or in a batch. A row that finishes is dropped from the batch
(`KVCache.select_rows`, which copies the cache once per step in which rows end): for batch 8 on CPU this
measured 8-18% faster than carrying finished rows along as padding (tiny and ~100M-parameter decoders,
rows ending spread over 256 steps).

Returned tokens: the new tokens of each row, INCLUDING the token at which a stop rule fired (a stop
token id, or the token that completed a stop string), as transformers' `generate` does. A caller can
therefore tell "stopped" from "ran out of `max_new_tokens`", and cut text at a stop string itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from internvl.errors import ConfigError, InputError
from internvl.model.cache import KVCache
from internvl.model.cpu_kernels import argmax_rows

if TYPE_CHECKING:
    from internvl.model.internvl import InternVL

Decode = Callable[[list[int]], str]  # a tokenizer's decode: token ids -> text
REPLACEMENT_CHARACTER = "\ufffd"  # what a bytes decoder writes for an incomplete UTF-8 sequence


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick tokens and when to stop.

    temperature: 0 picks the most likely token (greedy; top_k/top_p are then ignored); > 0 samples
        from softmax(logits / temperature).
    top_k: keep the k most likely tokens before sampling (0 = all).
    top_p: keep the smallest set of most likely tokens whose probability reaches top_p (1 = all);
        the most likely token is always kept.
    repetition_penalty: transformers' rule: the logit of every token already present in the prompt
        (padding excluded) or the generated text is divided by it when positive and multiplied by it
        when negative (1 = off). Applied before temperature, top-k and top-p, in greedy mode too.
    stop_token_ids: a row ends when it produces one of these (the token is part of its output).
    stop_strings: a row ends when its generated text contains one of these (needs `decode`).
    seed: seeds the sampling generator (a `torch.Generator`, global RNG state is not touched);
        None draws a fresh seed.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        # accept lists for the two collections, keep the frozen dataclass hashable
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))
        if self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        for name in ("temperature", "top_p", "repetition_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        if any(not s for s in self.stop_strings):
            raise ConfigError("stop_strings must not contain an empty string")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# ----------------------------------------------------------------------------------------------
# Logit processing and sampling (all on (batch, vocab) float32 logits)


def present_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab_size: int) -> torch.Tensor:
    """(batch, seq) ids -> (batch, vocab) bool, True where the token occurs at a non-padding position."""
    counts = torch.zeros(input_ids.shape[0], vocab_size, dtype=torch.long, device=input_ids.device)
    real = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
    return counts.scatter_add_(1, input_ids, real) > 0


def apply_repetition_penalty(logits: torch.Tensor, present: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor on a presence mask: for present tokens, a positive
    logit is divided by `penalty`, a negative one multiplied by it."""
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(present, penalised, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest of its row to -inf (ties with the k-th are kept)."""
    k = min(k, logits.shape[-1])
    threshold = torch.topk(logits, k, dim=-1).values[:, -1:]  # (batch, 1)
    return logits.masked_fill(logits < threshold, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the most likely tokens until their probability reaches p; always keep the first."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the strictly more likely tokens
    remove_sorted = mass_before >= p
    remove_sorted[:, 0] = False
    remove = remove_sorted.scatter(1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def pick_tokens(
    logits: torch.Tensor,
    config: GenerationConfig,
    present: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(batch, vocab) logits -> (batch,) token ids, by the config's rules (see GenerationConfig)."""
    logits = logits.float()
    if config.repetition_penalty != 1.0:
        if present is None:
            raise InputError("repetition_penalty needs the presence mask of the tokens seen so far")
        logits = apply_repetition_penalty(logits, present, config.repetition_penalty)
    if config.greedy:
        return argmax_rows(logits)  # PyTorch's CPU argmax took 1-2% of a quantized decode step
    # Scale after shifting each row's largest logit to 0: a tiny temperature (or an extreme penalty) then
    # sends the others towards -inf, where logits / temperature would overflow to inf and softmax to nan.
    big = torch.finfo(logits.dtype).max
    logits = logits.nan_to_num(nan=-big, posinf=big, neginf=-big)
    temperature = max(config.temperature, torch.finfo(logits.dtype).tiny)  # 1e-300 is 0 in float32
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if config.top_k > 0:
        logits = top_k_filter(logits, config.top_k)
    if config.top_p < 1.0:
        logits = top_p_filter(logits, config.top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ----------------------------------------------------------------------------------------------
# Text: incremental decoding that never splits a character, and stop strings


class TextStream:
    """The text of a growing token sequence, released in pieces that never split a character.

    `push(token)` returns the text that became stable with this token ("" if none), `finish()` the rest;
    joined, the pieces equal `decode(all tokens)` (cut before a stop string, see below).
    Only a small window of tokens is decoded per push (the tokens since the previous piece and those
    of the piece before, as context for tokenizers that strip a leading space), and new text is
    released only when the decoded window does not end in U+FFFD, i.e. no UTF-8 character is still
    waiting for its remaining bytes.

    With `stop_strings`, the text is cut before the first occurrence of any of them (`stopped` turns
    True), and a tail that could be the beginning of one is held back until it is decided.
    """

    def __init__(self, decode: Decode, stop_strings: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop_strings = tuple(stop_strings)
        self._longest_stop = max((len(s) for s in self._stop_strings), default=0)
        self.tokens: list[int] = []
        self._prefix_start = 0  # window start: the first token of the previous piece
        self._read_start = 0  # the first token not yet released as text
        self.text = ""  # all stable text so far (not cut at stop strings)
        self._released = 0  # characters of `text` returned to the caller
        self.stopped = False

    def push(self, token: int) -> str:
        self.tokens.append(token)
        if self.stopped:
            return ""
        prefix = self._decode(self.tokens[self._prefix_start : self._read_start])
        window = self._decode(self.tokens[self._prefix_start :])
        if len(window) <= len(prefix) or window.endswith(REPLACEMENT_CHARACTER):
            return ""  # nothing new, or a character still incomplete
        self.text += window[len(prefix) :]
        self._prefix_start, self._read_start = self._read_start, len(self.tokens)
        return self._release(final=False)

    def finish(self) -> str:
        """The remaining text, incomplete characters included (as U+FFFD)."""
        if not self.stopped:
            prefix = self._decode(self.tokens[self._prefix_start : self._read_start])
            window = self._decode(self.tokens[self._prefix_start :])
            self.text += window[len(prefix) :]
            self._prefix_start = self._read_start = len(self.tokens)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        start = self._released
        # an occurrence cannot begin before `start`: a possible beginning is always held back
        cut = min((i for i in (self.text.find(s, start) for s in self._stop_strings) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            end = cut
        elif final:
            end = len(self.text)
        else:
            end = len(self.text) - self._held_back(start)
        self._released = max(end, start)
        return self.text[start:end]

    def _held_back(self, start: int) -> int:
        """Length of the longest tail of text[start:] that is a proper beginning of a stop string."""
        for size in range(min(self._longest_stop - 1, len(self.text) - start), 0, -1):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self._stop_strings):
                return size
        return 0


def stream_text(
    steps: Iterable[Sequence[int | None]],
    decode: Decode,
    stop_strings: Sequence[str] = (),
    stop_token_ids: Iterable[int] = (),
) -> Iterator[tuple[int, str]]:
    """Turn `stream(...)` steps into (row, text piece) pairs, pieces never splitting a character.

    Tokens in `stop_token_ids` are not decoded; text is cut before the first stop string. Per row,
    the pieces joined equal the row's text. Example:
        for row, piece in stream_text(stream(model, ids, mask, pixels, config, decode=tok.decode), tok.decode):
            print(piece, end="", flush=True)
    """
    skip = set(stop_token_ids)
    texts: list[TextStream] = []
    for step in steps:
        if not texts:
            texts = [TextStream(decode, stop_strings) for _ in step]
        for row, token in enumerate(step):
            if token is not None and token not in skip:
                piece = texts[row].push(token)
                if piece:
                    yield row, piece
    for row, text in enumerate(texts):
        piece = text.finish()
        if piece:
            yield row, piece


# ----------------------------------------------------------------------------------------------
# The loop


def stream(
    model: InternVL,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    config: GenerationConfig | None = None,
    *,
    decode: Decode | None = None,
    image_features: torch.Tensor | None = None,
) -> Iterator[list[int | None]]:
    """Generate step by step: yields, per step, one entry per row: the new token id, or None for a row
    that has finished. Stops when every row has finished or after `max_new_tokens` steps. Inputs are
    checked at the call; the model runs as the iterator is consumed (prefill with the first step).

    model: an `InternVL` (eval mode is the caller's business).
    input_ids: (batch, prompt) with `<IMG_CONTEXT>` runs for the images; rows of different lengths
        are LEFT-padded.
    attention_mask: (batch, prompt), 1 = token, 0 = padding; None = no padding.
    pixel_values: (tiles, 3, H, W), the tiles of all images of all rows in order (rows may have any
        number of images, including none); or `image_features` (tiles, 256, d_llm) precomputed.
    decode: a tokenizer's decode, needed only for `config.stop_strings`.
    """
    config = config or GenerationConfig()
    if input_ids.dim() != 2:
        raise InputError(f"input_ids must be (batch, prompt), got shape {tuple(input_ids.shape)}")
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise InputError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(input_ids.shape)}"
            )
        if not bool(attention_mask[:, -1].all()):
            raise InputError("prompts must be LEFT-padded for generation: the last column has padding")
    if config.stop_strings and decode is None:
        raise InputError("stop_strings need a decode function (e.g. decode=tokenizer.decode)")
    return _steps(model, input_ids, attention_mask, pixel_values, image_features, config, decode)


@torch.inference_mode()
def _steps(
    model: InternVL,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    pixel_values: torch.Tensor | None,
    image_features: torch.Tensor | None,
    config: GenerationConfig,
    decode: Decode | None,
) -> Iterator[list[int | None]]:
    """The loop of `stream`, on checked inputs."""
    if config.max_new_tokens == 0:
        return
    batch, prompt_length = input_ids.shape
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    pixel_values = None if pixel_values is None else pixel_values.to(device)

    # padding: a mask buffer for the whole generation, its future columns already 1; decode steps pass
    # views of it. Without padding no mask is passed at all (plain causal attention).
    mask_buffer: torch.Tensor | None = None
    prefill_positions: torch.Tensor | None = None
    next_positions = torch.full((batch, 1), prompt_length, dtype=torch.long, device=device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
        if not bool(attention_mask.all()):
            mask_buffer = torch.ones(batch, prompt_length + config.max_new_tokens, dtype=torch.long, device=device)
            mask_buffer[:, :prompt_length] = attention_mask
    if mask_buffer is not None or model.config.uses_v2pe:  # positions skip padding; V2PE's are floats
        prefill_positions = model.positions(input_ids, None if mask_buffer is None else attention_mask)
        next_positions = prefill_positions[:, -1:] + 1  # the prompt ends in text: a whole number

    present = None
    if config.repetition_penalty != 1.0:
        present = present_tokens(input_ids, attention_mask, model.config.text.vocab_size)
    generator = sampling_generator(config, device)
    stop_ids = set(config.stop_token_ids)
    texts = None  # per row, for stop strings
    if config.stop_strings and decode is not None:
        texts = [TextStream(decode, config.stop_strings) for _ in range(batch)]
    finished = [False] * batch

    # prefill: (batch, prompt) -> (batch, vocab); the images are encoded here and only here
    cache = KVCache.for_model(model, batch, prompt_length + config.max_new_tokens)
    logits = model(
        input_ids,
        pixel_values,
        attention_mask=None if mask_buffer is None else mask_buffer[:, :prompt_length],
        position_ids=prefill_positions,
        cache=cache,
        image_features=image_features,
        last_only=True,
    )[:, -1]

    active = list(range(batch))  # the original row of each row still in the cache
    for step in range(config.max_new_tokens):
        tokens = pick_tokens(logits, config, present, generator)  # (active,)
        emitted: list[int | None] = [None] * batch
        for row, token in zip(active, tokens.tolist()):  # the one host sync per step
            emitted[row] = token
            if token in stop_ids:
                finished[row] = True
            elif texts is not None:
                texts[row].push(token)
                finished[row] = texts[row].stopped
        yield emitted
        if all(finished) or step == config.max_new_tokens - 1:
            return
        keep = [i for i, row in enumerate(active) if not finished[row]]
        if len(keep) < len(active):  # drop the finished rows from the cache and the per-row state
            index = torch.tensor(keep, device=device)
            cache.select_rows(index)
            tokens, next_positions = tokens[index], next_positions[index]
            mask_buffer = None if mask_buffer is None else mask_buffer[index]
            present = None if present is None else present[index]
            active = [active[i] for i in keep]
        if present is not None:
            present.scatter_(1, tokens[:, None], True)
        # decode: (active, 1) -> (active, vocab)
        logits = model(
            tokens[:, None],
            attention_mask=None if mask_buffer is None else mask_buffer[:, : cache.length + 1],
            position_ids=next_positions,
            cache=cache,
            last_only=True,
        )[:, -1]
        next_positions += 1


def sampling_generator(config: GenerationConfig, device: str | torch.device, choice: int = 0) -> torch.Generator | None:
    """The random generator one answer samples with (None when greedy): seeded with `config.seed + choice`
    (the n choices of one request differ), or freshly when `config.seed` is None. The global RNG state
    is never touched."""
    if config.greedy:
        return None
    generator = torch.Generator(device=device)
    if config.seed is None:
        generator.seed()
    else:
        generator.manual_seed((config.seed + choice) % 2**64)
    return generator


def generate(
    model: InternVL,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    config: GenerationConfig | None = None,
    *,
    decode: Decode | None = None,
    image_features: torch.Tensor | None = None,
) -> list[list[int]]:
    """The new token ids of every row (stop token / stop-string token included); see `stream`."""
    rows: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    for step in stream(
        model, input_ids, attention_mask, pixel_values, config, decode=decode, image_features=image_features
    ):
        for row, token in enumerate(step):
            if token is not None:
                rows[row].append(token)
    return rows
