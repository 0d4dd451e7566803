"""The HTTP side: a FastAPI app with the OpenAI routes, over an `Engine`.

    GET  /health                 {"status": "ok", "running_rows", "free_rows", "waiting", "cancelled_requests"}
                                 (no key needed)
    GET  /info                   whether a key is needed, the server's limits, the thinking-mode system
                                 prompt (no key needed; what a client needs before its first request)
    GET  /                       the chat page (page.py), unless the settings turn it off
    GET  /v1/models              the one model served
    POST /v1/chat/completions    an answer, or with `stream: true` server-sent events ending in `data: [DONE]`

A request is read (size-capped), parsed, checked and prepared in a worker thread before it is queued;
the engine's thread hands events back to the event loop through `call_soon_threadsafe`. A client that
disconnects cancels its job, which frees its rows at the engine's next step. Every error, FastAPI's
own included, is answered in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from internvl.errors import InputError
from internvl.inputs.template import THINKING_SYSTEM_PROMPT
from internvl.serve import protocol
from internvl.serve.engine import Engine, Event, Job, QueueFull
from internvl.serve.page import add_page_routes
from internvl.serve.prepare import Prepared, Preparer
from internvl.serve.protocol import APIError, ChatCompletionRequest
from internvl.serve.settings import ServeSettings

log = logging.getLogger("internvl.serve")


def create_app(engine: Engine, settings: ServeSettings, reward_model: Any = None) -> FastAPI:
    """The app; it starts the engine's thread on startup and stops it on shutdown. `reward_model`
    (`internvl.reward.ProcessRewardModel`) enables the `best_of` extension."""
    max_n = min(settings.max_n, engine.settings.max_batch)
    preparer = Preparer(engine.chat, settings, engine.max_seq_len, max_n, reward_model=reward_model is not None)
    scoring = threading.Lock()  # one reward-model forward at a time

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="internvl", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(protocol.error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        location = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse(
            protocol.error_body(400, f"{location}: {first.get('msg')}", "invalid_value"), status_code=400
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(protocol.error_body(500, f"internal error: {type(exc).__name__}"), status_code=500)

    def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
            raise APIError(401, "missing or invalid API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **engine.stats()}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        limits = {
            "max_request_bytes": settings.max_request_bytes,
            "max_images": settings.max_images,
            "max_image_pixels": settings.max_image_pixels,
            "max_media_bytes": settings.max_media_bytes,
            "max_video_frames": settings.max_video_frames,
            "max_tokens": settings.max_tokens,
            "max_tiles": settings.max_tiles,
            "max_n": settings.max_n,
        }
        return {
            "api_key_required": settings.api_key is not None,
            "reward_model": reward_model is not None,
            "limits": limits,
            "thinking_system_prompt": THINKING_SYSTEM_PROMPT,
        }

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        model = {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "internvl"}
        return {"object": "list", "data": [model]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        check_key(request)
        chat_request = parse_request(await read_body(request, settings.max_request_bytes))
        if chat_request.model != settings.model_name:
            raise APIError(
                404,
                f"the model {chat_request.model!r} does not exist; this server has {settings.model_name!r}",
                code="model_not_found",
                param="model",
            )
        prepared: Prepared = await run_in_threadpool(preparer, chat_request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def emit(event: Event) -> None:  # on the engine's thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop is gone (shutdown)
                job.cancel()

        job = Job(prepared.inputs, prepared.config, emit, prepared.n, prepared.ignore_eos)
        try:
            engine.submit(job)
        except QueueFull as exc:
            raise APIError(503, f"the server is busy ({exc}); retry later", code="server_busy") from exc
        except InputError as exc:  # checked by the preparer already; kept for callers of other engines
            raise APIError(400, str(exc), code="invalid_input") from exc
        answer_id, name = protocol.completion_id(), settings.model_name
        if chat_request.stream:
            include_usage = bool(chat_request.stream_options and chat_request.stream_options.include_usage)
            return StreamingResponse(
                stream_events(job, events, answer_id, name, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        texts, reasons, tokens = await collect_events(request, job, events)
        if prepared.best_of is None:
            return protocol.completion(answer_id, name, texts, reasons, job.prompt_tokens, tokens)
        best = prepared.best_of

        def score() -> list[float]:
            with scoring:
                return [float(x) for x in reward_model.rank_scores(best.question, best.images, texts)]

        scores = await run_in_threadpool(score)
        keep = sorted(range(len(texts)), key=lambda k: -scores[k])[: best.keep]  # stable: the first of equals
        return protocol.completion(
            answer_id,
            name,
            [texts[k] for k in keep],
            [reasons[k] for k in keep],
            job.prompt_tokens,
            tokens,
            scores=[scores[k] for k in keep],
        )

    if settings.web:
        add_page_routes(app)
    return app


BODY_TIMEOUT_S = 60.0  # a body that takes longer to arrive gets 408 (slow or stalled senders hold no slot)


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes and with 408 when it has not
    arrived within `timeout_s`. A client that leaves while sending is logged as one debug line."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(
            413, f"the request body ({declared} bytes) exceeds the limit of {limit} bytes", code="request_too_large"
        )
    body = bytearray()
    timeout_s = BODY_TIMEOUT_S if timeout_s is None else timeout_s

    async def receive() -> None:
        async for piece in request.stream():
            body.extend(piece)
            if len(body) > limit:
                raise APIError(413, f"the request body exceeds the limit of {limit} bytes", code="request_too_large")

    try:
        await asyncio.wait_for(receive(), timeout_s)
    except asyncio.TimeoutError as exc:
        raise APIError(408, f"the request body did not arrive within {timeout_s:g} s", code="request_timeout") from exc
    except ClientDisconnect as exc:
        log.debug("a client left while sending its request body (%d bytes received)", len(body))
        raise APIError(400, "the client disconnected while sending the request", code="client_disconnected") from exc
    return bytes(body)


def parse_request(body: bytes) -> ChatCompletionRequest:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the body is not valid JSON ({exc})", code="invalid_json") from exc
    except RecursionError as exc:
        raise APIError(400, "the body is not valid JSON (nested too deeply)", code="invalid_json") from exc
    try:  # text that cannot be UTF-8 (lone surrogates from \ud800 escapes) is refused here, not deep inside
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise APIError(
            400,
            f"the body holds invalid Unicode ({exc.reason} at {exc.object[exc.start : exc.end]!a})",
            code="invalid_json",
        ) from exc
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        message, param = protocol.describe_validation_error(exc)
        raise APIError(400, message, code="invalid_value", param=param) from exc


async def collect_events(
    request: Request, job: Job, events: asyncio.Queue[Event]
) -> tuple[list[str], list[str | None], int]:
    """Every choice's text and finish reason, and the tokens generated, once a non-streamed request is
    done; cancel the job if the client goes away."""
    watcher = asyncio.create_task(cancel_on_disconnect(request, job, events))
    texts: list[list[str]] = [[] for _ in range(job.n)]
    reasons: list[str | None] = [None] * job.n
    tokens = [0] * job.n
    try:
        while not all(reasons):
            event = await events.get()
            if event.error is not None:
                raise APIError(500, event.error, code="generation_failed")
            texts[event.choice].append(event.text)
            tokens[event.choice] = event.completion_tokens
            reasons[event.choice] = event.finish_reason
    finally:
        watcher.cancel()
        job.cancel()  # a no-op once every choice has finished
    return ["".join(t) for t in texts], reasons, sum(tokens)


async def cancel_on_disconnect(request: Request, job: Job, events: asyncio.Queue[Event]) -> None:
    """Cancel the job when the client disconnects, and end the wait for its events."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.cancel()
    events.put_nowait(Event(error="the client disconnected"))


async def stream_events(
    job: Job, events: asyncio.Queue[Event], answer_id: str, model: str, include_usage: bool
) -> AsyncIterator[str]:
    """Server-sent events: a role chunk per choice, content chunks, a finish chunk per choice, the
    usage chunk if asked, `[DONE]`. Closing the stream (a client that left) cancels the job."""

    def sse(body: dict[str, Any]) -> str:
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        for choice in range(job.n):
            yield sse(
                protocol.chunk(answer_id, model, [protocol.delta_choice(choice, {"role": "assistant", "content": ""})])
            )
        open_choices, tokens = job.n, [0] * job.n
        while open_choices:
            event = await events.get()
            if event.error is not None:
                yield sse(protocol.error_body(500, event.error, code="generation_failed"))
                break
            tokens[event.choice] = event.completion_tokens
            if event.text:
                yield sse(
                    protocol.chunk(answer_id, model, [protocol.delta_choice(event.choice, {"content": event.text})])
                )
            if event.finish_reason is not None:
                open_choices -= 1
                yield sse(
                    protocol.chunk(answer_id, model, [protocol.delta_choice(event.choice, {}, event.finish_reason)])
                )
        else:
            if include_usage:
                yield sse(protocol.chunk(answer_id, model, [], protocol.usage(job.prompt_tokens, sum(tokens))))
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()
