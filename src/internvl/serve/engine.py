"""Continuous batching: one thread owns the model and advances every running answer together.

Each step of the scheduler loop (`Engine.step`):

    1. drop the rows of requests whose client has gone (`Job.cancel`)
    2. admit waiting requests while slots are free, up to a prompt-token budget: prefill each one
       alone (its images are encoded here) and copy its keys/values into one row per choice
    3. one decode step for all rows: (rows, 1) tokens -> (rows, vocab) logits over the `SlotCache`
    4. per row, pick the next token with the request's own settings and generator, turn it into
       text, and hand the piece to the request (`Job.emit`); finished rows leave the batch

So requests join and leave the running batch at every step, and a newcomer's prefill is interleaved
with the decoding of the others. Failures stay with their request: an exception in a request's
prefill or sampling is reported to that request alone and the loop goes on.

Answers equal `Chat.ask_messages` for each prompt alone, greedy and seeded (tests/test_serve_engine.py).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from internvl.answer import AnswerText
from internvl.chat import Chat
from internvl.errors import InputError
from internvl.generate import GenerationConfig, pick_tokens, present_tokens, sampling_generator
from internvl.inputs.processor import ProcessedInputs
from internvl.model.cache import KVCache
from internvl.model.flash import route_prompts
from internvl.serve.slots import SlotCache

log = logging.getLogger("internvl.serve")


@dataclass(frozen=True)
class EngineSettings:
    """max_batch: rows decoded together (a request with n choices takes n); max_queue: requests waiting
    for rows, more are refused; max_seq_len: positions per row, prompt + answer (None: the model's
    context, at most 4096); prefill_tokens_per_step: prompt tokens prefilled between two decode steps
    (one request is always admitted when rows are free, however long)."""

    max_batch: int = 16
    max_queue: int = 64
    max_seq_len: int | None = None
    prefill_tokens_per_step: int = 2048

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 0 or self.prefill_tokens_per_step < 1:
            raise ValueError(f"invalid engine settings: {self}")


class QueueFull(Exception):
    """The engine's waiting queue is full; the request should be retried later."""


@dataclass(frozen=True)
class Event:
    """What the engine tells a request: a text piece of one choice, the end of that choice (with its
    reason, "stop" or "length", and token count), or an error that ends the whole request."""

    choice: int = 0
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class Job:
    """One request's generation: the processed prompt, its settings, and where its events go.

    `emit` is called from the engine's thread; it must be quick and thread-safe (the server hands the
    event to its event loop). `ignore_eos` keeps generating through stop tokens and stop strings
    until `max_new_tokens` (benchmarks use it for answers of equal length).
    """

    inputs: ProcessedInputs
    config: GenerationConfig
    emit: Callable[[Event], None]
    n: int = 1
    ignore_eos: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Free the request's rows at the next step (a client that went away)."""
        self.cancelled.set()

    @property
    def prompt_tokens(self) -> int:
        return int(self.inputs.input_ids.shape[0])


@dataclass
class _Row:
    """One choice of one job, decoding in cache row `index` of the engine's rows list."""

    job: Job
    choice: int
    text: AnswerText
    stop_ids: frozenset[int]
    generator: torch.Generator | None
    present: torch.Tensor | None  # (1, vocab) tokens seen, for the repetition penalty
    tokens: int = 0
    next_token: int = -1


class Engine:
    """The scheduler: a waiting queue, the running rows and their `SlotCache`, one thread.

    `submit` may be called from any thread; everything else runs on the engine's thread (`start`), or
    on the caller's when a test drives `step()` itself.
    """

    def __init__(self, chat: Chat, settings: EngineSettings | None = None) -> None:
        self.chat = chat
        self.model = chat.model
        self.settings = settings or EngineSettings()
        context = self.model.config.text.max_position_embeddings
        self.max_seq_len = min(self.settings.max_seq_len or min(context, 4096), context)
        self.cache = SlotCache.for_model(self.model, self.settings.max_batch, self.max_seq_len)
        self._device = self.model.language.embed.weight.device
        self._waiting: deque[Job] = deque()
        self._rows: list[_Row] = []  # row i of the list is row i of the cache
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = False
        self.cancelled_requests = 0  # dropped because their client went away (waiting or running), since the start

    # -- any thread -------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue a job. Raises InputError if it can never run here, QueueFull if the queue is full."""
        if job.config.max_new_tokens < 1:
            raise InputError("max_new_tokens must be at least 1 to serve a request")
        if job.n > self.settings.max_batch:
            raise InputError(f"n = {job.n} choices exceed the server's batch of {self.settings.max_batch} rows")
        if job.prompt_tokens + job.config.max_new_tokens > self.max_seq_len:
            raise InputError(
                f"the prompt ({job.prompt_tokens} tokens) plus max_new_tokens ({job.config.max_new_tokens}) "
                f"exceed the server's {self.max_seq_len} positions per sequence"
            )
        with self._wake:
            if len(self._waiting) >= self.settings.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting")
            self._waiting.append(job)
            self._wake.notify()

    def stats(self) -> dict[str, int]:
        rows = len(self._rows)
        return {
            "running_rows": rows,
            "free_rows": self.settings.max_batch - rows,
            "waiting": len(self._waiting),
            "cancelled_requests": self.cancelled_requests,
        }

    def start(self) -> None:
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="internvl-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the loop; requests still waiting or running get an error event."""
        with self._wake:
            self._running = False
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._wake:
            jobs = list(self._waiting) + list(dict.fromkeys(row.job for row in self._rows))
            self._waiting.clear()
        for job in jobs:
            job.emit(Event(error="the server is shutting down"))
        self._rows.clear()
        self.cache.clear()

    # -- the engine's thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while self._running and not self._waiting and not self._rows:
                    self._wake.wait()
                if not self._running:
                    return
            try:
                self.step()
            except Exception:  # a bug of ours: fail the running requests, keep serving
                log.exception("engine step failed")
                self._fail_all("internal error in the generation loop")

    @torch.inference_mode()
    def step(self) -> None:
        """Drop cancelled rows, admit newcomers, and decode one token for every running row."""
        cancelled = [i for i, row in enumerate(self._rows) if row.job.cancelled.is_set()]
        self.cancelled_requests += len({id(self._rows[i].job) for i in cancelled})
        self._remove(cancelled)
        with self._wake:
            waiting = deque(job for job in self._waiting if not job.cancelled.is_set())
            self.cancelled_requests += len(self._waiting) - len(waiting)
            self._waiting = waiting
        self._admit()
        if self._rows:
            self._decode()

    def _admit(self) -> None:
        budget = self.settings.prefill_tokens_per_step
        admitted = 0
        while True:
            with self._wake:
                if not self._waiting:
                    return
                job = self._waiting[0]
                if job.n > self.settings.max_batch - len(self._rows):
                    return  # first come, first served: wait for rows to free up
                if admitted and job.prompt_tokens > budget:
                    return
                self._waiting.popleft()
            budget -= job.prompt_tokens
            admitted += 1
            self._start(job)

    def _start(self, job: Job) -> None:
        """Prefill one job and give each of its choices a row and a first token."""
        try:
            logits, keys, values, offset = self._prefill(job)
            rows = [self._new_row(job, choice) for choice in range(job.n)]
        except Exception as exc:
            log.exception("prefill failed")
            job.emit(Event(error=f"prefill failed: {type(exc).__name__}: {exc}"))
            return
        first = len(self._rows)
        for row in rows:
            self.cache.add(keys, values, offset)
            self._rows.append(row)
        self._advance(list(range(first, first + job.n)), logits.expand(job.n, -1))

    def _prefill(self, job: Job) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """The prompt alone through the model: last logits (1, vocab), keys and values (layers,
        kv_heads, prompt, head_dim), and the offset of the row's rotary positions (V2PE: the next
        token's position is the last prompt position + 1, which the cache index need not be)."""
        pixels = job.inputs.pixel_values  # (tiles, 3, S, S) float32; the vision encoder casts to its dtype
        # Flash models (docs/flash.md): compressed tiles shorten the prompt before prefill
        prompts, features, _ = route_prompts(self.model, [job.inputs.input_ids], [pixels], self.chat.visual_resolution)
        ids = prompts[0][None].to(self._device)  # (1, prompt)
        pixels = None if pixels is None or features is not None else pixels.to(self._device)
        cache = KVCache.for_model(self.model, 1, ids.shape[1])
        positions = self.model.positions(ids)  # (1, prompt): 0, 1, ... unless the model uses V2PE
        logits = self.model(ids, pixels, position_ids=positions, cache=cache, last_only=True, image_features=features)
        logits = logits[:, -1]  # (1, vocab)
        offset = float(positions[0, -1]) + 1.0 - ids.shape[1]
        return logits, cache.keys[:, 0], cache.values[:, 0], offset

    def _new_row(self, job: Job, choice: int) -> _Row:
        config = job.config
        generator = sampling_generator(config, self._device, choice)  # n choices with one seed still differ
        present = None
        if config.repetition_penalty != 1.0:
            present = present_tokens(
                job.inputs.input_ids[None].to(self._device), None, self.model.config.text.vocab_size
            )
        answers = self.chat.answers
        return _Row(job, choice, answers.stream(config), answers.stop_ids(config), generator, present)

    def _decode(self) -> None:
        """One step for all rows: (rows, 1) next tokens -> (rows, vocab) logits -> the tokens after."""
        tokens = torch.tensor([row.next_token for row in self._rows], device=self._device)  # (rows,)
        mask, positions = self.cache.decode_inputs()
        try:
            logits = self.model(
                tokens[:, None], attention_mask=mask, position_ids=positions, cache=self.cache, last_only=True
            )[:, -1]  # (rows, vocab)
        except Exception:  # nothing tells which request caused it: all running ones end, the server goes on
            log.exception("decode step failed")
            self._fail_all("the decode step failed")
            return
        self._advance(list(range(len(self._rows))), logits)

    def _advance(self, indices: list[int], logits: torch.Tensor) -> None:
        """Pick a token for each row in `indices` from its logits row, emit the text, retire finished rows."""
        failed: set[int] = set()  # id() of the jobs whose sampling or text failed

        def fail(row: _Row, exc: Exception) -> None:
            log.exception("generation failed")
            failed.add(id(row.job))
            row.job.emit(Event(error=f"generation failed: {type(exc).__name__}: {exc}"))

        picked: list[tuple[int, torch.Tensor]] = []
        for i, index in enumerate(indices):
            row = self._rows[index]
            if id(row.job) in failed:
                continue
            try:
                picked.append((index, self._pick(row, logits[i : i + 1])))
            except Exception as exc:
                fail(row, exc)
        leaving: list[int] = []
        tokens = torch.cat([token for _, token in picked]).tolist() if picked else []  # the one host sync
        for (index, _), token in zip(picked, tokens):
            row = self._rows[index]
            if id(row.job) in failed:
                continue
            try:
                if self._push(row, token):
                    leaving.append(index)
            except Exception as exc:
                fail(row, exc)
        # a failed job's choices all leave, wherever they are
        leaving += [i for i, row in enumerate(self._rows) if id(row.job) in failed]
        self._remove(leaving)

    def _pick(self, row: _Row, logits: torch.Tensor) -> torch.Tensor:
        """(1, vocab) logits -> (1,) the row's next token, by its request's rules and generator."""
        return pick_tokens(logits, row.job.config, row.present, row.generator)

    def _push(self, row: _Row, token: int) -> bool:
        """Record `token` for `row`, emit its text; True when the row is finished."""
        job, config = row.job, row.job.config
        row.tokens += 1
        row.next_token = token
        if row.present is not None:
            row.present[0, token] = True
        is_stop_token = token in row.stop_ids
        piece = "" if is_stop_token else row.text.push(token)
        reason = None
        if not job.ignore_eos and (is_stop_token or row.text.stopped):
            reason = "stop"
        elif row.tokens >= config.max_new_tokens:
            reason = "length"
        if reason is not None:
            piece += row.text.finish()
        if piece or reason is not None:
            job.emit(Event(row.choice, piece, reason, row.tokens))
        return reason is not None

    def _remove(self, indices: list[int]) -> None:
        for index in sorted(set(indices), reverse=True):  # the last row moves into a freed one
            self.cache.remove(index)
            self._rows[index] = self._rows[-1]
            self._rows.pop()

    def _fail_all(self, message: str) -> None:
        for job in dict.fromkeys(row.job for row in self._rows):
            job.emit(Event(error=message))
        self._rows.clear()
        self.cache.clear()
