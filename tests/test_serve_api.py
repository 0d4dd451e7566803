"""`internvl serve` through the real `openai` client, against a server on a free loopback port:
answers equal `Chat.ask_messages`, streaming, n, stop strings, media rules, every error in
OpenAI's shape, an API key, crashes and disconnects that stay with their request, and a load test."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from internvl.chat import Chat, load
from internvl.serve.engine import Engine, EngineSettings
from internvl.serve.media import load_image_url
from internvl.serve.protocol import APIError
from internvl.serve.server import BackgroundServer
from internvl.serve.settings import ServeSettings
from tests.tiny import build_chat_model_folder

KEY = "sk-test-key"
MODEL = "tiny"
MAX_BATCH = 8
CRASH = "CRASH-MARKER"


class CrashingEngine(Engine):
    """Fails the sampling of any request whose prompt holds CRASH, after a few tokens: a stand-in for
    a bug inside one request's generation."""

    def _pick(self, row, logits):  # type: ignore[no-untyped-def]
        if CRASH in row.job.inputs.prompt and row.tokens >= 2:
            raise RuntimeError("injected failure")
        return super()._pick(row, logits)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def chat(tmp_path_factory) -> Chat:
    return load(build_chat_model_folder(tmp_path_factory.mktemp("tiny-serve-api")), max_tiles=4)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    Image.new("RGB", (120, 200), "green").save(folder / "green.png")
    return folder


@pytest.fixture(scope="module")
def server(chat, media_dir):
    settings = ServeSettings(
        model_name=MODEL,
        api_key=KEY,
        allowed_media_dir=media_dir,
        max_images=3,
        max_image_pixels=400 * 400,
        max_tokens=800,
        max_n=4,
        max_request_bytes=200_000,
    )
    engine = CrashingEngine(chat, EngineSettings(max_batch=MAX_BATCH, max_queue=256, max_seq_len=1024))
    with BackgroundServer(chat, settings, engine=engine) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


RED = Image.new("RGB", (300, 120), "red")
BLUE = Image.new("RGB", (90, 90), "blue")


def health(server) -> dict:
    return httpx.get(f"{server.url}/health").json()


def wait_until_idle(server, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = health(server)
        if state["running_rows"] == 0 and state["waiting"] == 0 or time.monotonic() > deadline:
            return state
        time.sleep(0.02)


# -- answers ----------------------------------------------------------------------------------------


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == [MODEL]
    state = health(server)
    assert (state["status"], state["running_rows"], state["free_rows"], state["waiting"]) == ("ok", 0, MAX_BATCH, 0)


def test_text_answer_and_usage(client, chat):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "what colour is it?"}]
    response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12)
    choice = response.choices[0]
    assert choice.message.content == chat.ask_messages(messages, max_new_tokens=12)
    assert choice.finish_reason in ("stop", "length")
    prompt = chat.processor(messages).input_ids.shape[0]
    assert response.usage.prompt_tokens == prompt
    assert 1 <= response.usage.completion_tokens <= 12
    assert response.usage.total_tokens == prompt + response.usage.completion_tokens


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_one_image_in_each_format(client, chat, fmt):
    data = encode(RED, fmt)
    content = [image_part(data_url(data, f"image/{fmt.lower()}")), {"type": "text", "text": "what colour is it?"}]
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=10, extra_body={"max_tiles": 2}
    )
    expected = chat.ask_messages(
        [{"role": "user", "content": [{"type": "image", "image": data}, "what colour is it?"]}],
        max_tiles=2,
        max_new_tokens=10,
    )
    assert response.choices[0].message.content == expected
    assert response.usage.prompt_tokens > 2 * 16  # two tiles or more of image tokens


def test_several_images_across_turns_and_a_local_file(client, chat, media_dir):
    messages = [
        {
            "role": "user",
            "content": [
                image_part(data_url(encode(RED))),
                image_part(data_url(encode(BLUE))),
                {"type": "text", "text": "which is red?"},
            ],
        },
        {"role": "assistant", "content": "the first"},
        {
            "role": "user",
            "content": [image_part((media_dir / "green.png").as_uri()), {"type": "text", "text": "and this?"}],
        },
    ]
    response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10)
    green = Image.open(media_dir / "green.png")
    expected = chat.ask_messages(
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": RED}, {"type": "image", "image": BLUE}, "which is red?"],
            },
            {"role": "assistant", "content": "the first"},
            {"role": "user", "content": [{"type": "image", "image": green}, "and this?"]},
        ],
        max_new_tokens=10,
    )
    assert response.choices[0].message.content == expected


def test_video_frames(client, chat, tmp_path):
    pytest.importorskip("av")
    from tests.inputs_fixtures import write_clip

    clip = write_clip(tmp_path / "clip.mp4", n_frames=12, codec="mpeg4", pix_fmt="yuv420p")
    part = {"type": "video_url", "video_url": {"url": data_url(clip.read_bytes(), "video/mp4"), "num_frames": 4}}
    response = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [part, {"type": "text", "text": "what happens?"}]}],
        max_tokens=8,
    )
    expected = chat.ask_messages(
        [{"role": "user", "content": [{"type": "video", "video": clip, "num_frames": 4}, "what happens?"]}],
        max_new_tokens=8,
    )
    assert response.choices[0].message.content == expected


def test_streaming_joins_to_the_answer(client):
    messages = [
        {"role": "user", "content": [image_part(data_url(encode(BLUE))), {"type": "text", "text": "how many?"}]}
    ]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=16, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_n_seeded_choices(client, chat):
    messages = [{"role": "user", "content": "is there a square?"}]
    response = client.chat.completions.create(
        model=MODEL, messages=messages, n=3, temperature=1.0, seed=7, max_tokens=10
    )
    assert [c.index for c in response.choices] == [0, 1, 2]
    for i, choice in enumerate(response.choices):
        assert choice.message.content == chat.ask_messages(messages, temperature=1.0, seed=7 + i, max_new_tokens=10)
    streamed = ["", ""]
    for chunk in client.chat.completions.create(
        model=MODEL, messages=messages, n=2, temperature=1.0, seed=7, max_tokens=10, stream=True
    ):
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
    assert streamed == [c.message.content for c in response.choices[:2]]


def test_stop_strings_and_length(client):
    messages = [{"role": "user", "content": "what colour is it?"}]
    full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20).choices[0].message.content
    stop = next(c for c in full[3:] if c.isascii() and c.isalnum())
    cut = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, stop=[stop, "zzz"])
    assert cut.choices[0].message.content == full[: full.index(stop)].strip()
    assert cut.choices[0].finish_reason == "stop"
    limited = client.chat.completions.create(
        model=MODEL, messages=messages, max_completion_tokens=3, extra_body={"ignore_eos": True}
    )
    assert limited.choices[0].finish_reason == "length" and limited.usage.completion_tokens == 3


# -- errors -------------------------------------------------------------------------------------------

TEXT = [{"role": "user", "content": "hello"}]


def post(server, body, key: str | None = KEY, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, (bytes, str)):
        return httpx.post(f"{server.url}/v1/chat/completions", content=body, headers=headers, **kwargs)
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, **kwargs)


def many_pixels() -> bytes:
    return encode(Image.new("RGB", (500, 500), "red"))


ERRORS = {  # name: (request body, status, code)
    "malformed JSON": (b'{"model": "tiny", "messages": [', 400, "invalid_json"),
    "not an object": (b"[1, 2]", 400, "invalid_value"),
    "no messages": ({"model": MODEL, "messages": []}, 400, "invalid_value"),
    "bad role": ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_value"),
    "bad temperature": ({"model": MODEL, "messages": TEXT, "temperature": 3}, 400, "invalid_value"),
    "seed out of range": ({"model": MODEL, "messages": TEXT, "seed": 2**70}, 400, "invalid_value"),
    "unknown model": ({"model": "gpt-9", "messages": TEXT}, 404, "model_not_found"),
    "not an image": (
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": [image_part(data_url(b"this is not a picture at all"))]}],
        },
        400,
        "invalid_image",
    ),
    "truncated image": (
        {"model": MODEL, "messages": [{"role": "user", "content": [image_part(data_url(encode(RED)[:60]))]}]},
        400,
        "invalid_image",
    ),
    "bad base64": (
        {"model": MODEL, "messages": [{"role": "user", "content": [image_part("data:image/png;base64,@@@")]}]},
        400,
        "invalid_image",
    ),
    "too many pixels": (
        {"model": MODEL, "messages": [{"role": "user", "content": [image_part(data_url(many_pixels()))]}]},
        400,
        "invalid_image",
    ),
    "too many images": (
        {"model": MODEL, "messages": [{"role": "user", "content": [image_part(data_url(encode(BLUE)))] * 4}]},
        400,
        "too_many_images",
    ),
    "image in a system message": (
        {"model": MODEL, "messages": [{"role": "system", "content": [image_part(data_url(encode(BLUE)))]}, *TEXT]},
        400,
        "invalid_input",
    ),
    "context overflow": (
        {"model": MODEL, "messages": [{"role": "user", "content": "the red circle " * 400}], "max_tokens": 8},
        400,
        "context_length_exceeded",
    ),
    "max_tokens over the cap": ({"model": MODEL, "messages": TEXT, "max_tokens": 801}, 400, "max_tokens_exceeded"),
    "n over the cap": ({"model": MODEL, "messages": TEXT, "n": 5}, 400, "n_exceeded"),
    "max_tiles over the cap": ({"model": MODEL, "messages": TEXT, "max_tiles": 40}, 400, "max_tiles_exceeded"),
    "logprobs": ({"model": MODEL, "messages": TEXT, "logprobs": True}, 400, "unsupported_parameter"),
    "body too large": (
        b'{"model": "tiny", "messages": [], "pad": "' + b"x" * 250_000 + b'"}',
        413,
        "request_too_large",
    ),
    "URL fetching off": (
        {"model": MODEL, "messages": [{"role": "user", "content": [image_part("http://127.0.0.1:9/a.png")]}]},
        403,
        "url_fetch_disabled",
    ),
    "file outside the media folder": (
        {"model": MODEL, "messages": [{"role": "user", "content": [image_part("file:///etc/passwd")]}]},
        403,
        "media_not_allowed",
    ),
    # Strict types (issue 16, defect 10): no string for a number, no boolean for a number, no string for a boolean.
    "max_tokens as a string": ({"model": MODEL, "messages": TEXT, "max_tokens": "8"}, 400, "invalid_value"),
    "max_tokens as a boolean": ({"model": MODEL, "messages": TEXT, "max_tokens": True}, 400, "invalid_value"),
    "n as a string": ({"model": MODEL, "messages": TEXT, "n": "2"}, 400, "invalid_value"),
    "stream as a string": ({"model": MODEL, "messages": TEXT, "stream": "yes"}, 400, "invalid_value"),
    # Defects 9 and 5: deep nesting and text that is not Unicode are bad JSON, not a crash.
    "JSON nested too deeply": (
        b'{"model": "tiny", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        400,
        "invalid_json",
    ),
    "a lone surrogate in a message": (
        b'{"model": "tiny", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
        400,
        "invalid_json",
    ),
    "a lone surrogate in stop": (
        b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stop": ["\\udfff"]}',
        400,
        "invalid_json",
    ),
    "non-UTF-8 bytes": (
        b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        400,
        "invalid_json",
    ),
}


def test_file_urls_with_a_nul_byte_or_a_missing_file_name_only_the_clients_path(server, media_dir):
    """Defects 9 and 15: a NUL byte is a 400, and errors never show where a link points or the server's paths."""
    nul = post(
        server,
        {"model": MODEL, "messages": [{"role": "user", "content": [image_part(f"file://{media_dir}/a%00.png")]}]},
    )
    assert nul.status_code == 400 and "NUL" in nul.json()["error"]["message"]
    (media_dir / "link.png").symlink_to("/etc/hostname")
    try:
        link = post(
            server,
            {"model": MODEL, "messages": [{"role": "user", "content": [image_part(f"file://{media_dir}/link.png")]}]},
        )
        assert link.status_code == 403 and "/etc/hostname" not in link.text and "link.png" in link.text
    finally:
        (media_dir / "link.png").unlink()


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_have_the_openai_shape_and_status(server, name):
    body, status, code = ERRORS[name]
    response = post(server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert (
        error["type"]
        == {
            400: "invalid_request_error",
            403: "permission_error",
            404: "not_found_error",
            413: "invalid_request_error",
        }[status]
    )


def test_the_openai_client_raises_the_matching_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=TEXT)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x " * 2000}], max_tokens=8)
    assert caught.value.code == "context_length_exceeded"


def test_api_key_is_required(server):
    for key in (None, "sk-wrong"):
        response = post(server, {"model": MODEL, "messages": TEXT}, key=key)
        assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-wrong", max_retries=0).models.list()
    assert httpx.get(f"{server.url}/nowhere").json()["error"]["type"] == "not_found_error"


def test_a_crash_in_one_request_is_reported_to_it_alone(client, server):
    messages = [{"role": "user", "content": "what colour is it?"}]
    expected = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12).choices[0].message.content
    results: dict[str, object] = {}

    def neighbour() -> None:
        results["neighbour"] = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12)

    thread = threading.Thread(target=neighbour)
    thread.start()
    crash = [{"role": "user", "content": f"{CRASH} please"}]
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=MODEL, messages=crash, max_tokens=20, extra_body={"ignore_eos": True})
    assert "injected failure" in caught.value.message
    with pytest.raises(openai.APIError, match="injected failure"):
        for _ in client.chat.completions.create(
            model=MODEL, messages=crash, max_tokens=20, stream=True, extra_body={"ignore_eos": True}
        ):
            pass
    thread.join()
    assert results["neighbour"].choices[0].message.content == expected
    assert wait_until_idle(server)["free_rows"] == MAX_BATCH


def test_a_client_that_leaves_frees_its_row(client, server):
    """800 tokens are asked for; the rows are freed by cancellation (counted), not by finishing."""
    messages = [{"role": "user", "content": "tell me everything"}]
    cancelled = health(server)["cancelled_requests"]
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=800, stream=True, extra_body={"ignore_eos": True}
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    assert health(server)["running_rows"] == 1
    stream.close()
    state = wait_until_idle(server)
    assert state["running_rows"] == 0 and state["cancelled_requests"] == cancelled + 1
    # a non-streamed request whose client gives up: 800 tokens of the tiny model take a few tenths of a second
    # (once the greedy pick got faster, a 0.3 s client timeout was sometimes not reached), so it leaves at 0.1 s
    with pytest.raises(httpx.ReadTimeout):
        post(server, {"model": MODEL, "messages": messages, "max_tokens": 800, "ignore_eos": True}, timeout=0.1)
    state = wait_until_idle(server)
    assert state["free_rows"] == MAX_BATCH and state["cancelled_requests"] == cancelled + 2


# -- load -------------------------------------------------------------------------------------------------


def test_load_32_clients_4_requests_each(server, chat):
    """Every client sends 4 requests with an image: plain, streamed, streamed and abandoned after the
    first piece, two choices. No failure, every finished answer complete and correct, no row leaked."""
    images = [RED, BLUE, Image.new("RGB", (64, 160), "white"), Image.new("RGB", (200, 200), "black")]
    questions = ["what colour is it?", "how many?", "is it left or right?", "which shape?"]
    conversations = [
        [{"role": "user", "content": [image_part(data_url(encode(img))), {"type": "text", "text": q}]}]
        for img, q in zip(images, questions)
    ]
    expected = [
        chat.ask_messages([{"role": "user", "content": [{"type": "image", "image": img}, q]}], max_new_tokens=8)
        for img, q in zip(images, questions)
    ]
    outcomes: list[str] = []

    async def one_client(api: openai.AsyncOpenAI, i: int) -> None:
        for j in range(4):
            k = (i + j) % 4
            kind = ["plain", "stream", "leave", "two"][(i + 2 * j) % 4]
            args = {"model": MODEL, "messages": conversations[k], "max_tokens": 8}
            if kind == "plain" or kind == "two":
                response = await api.chat.completions.create(**args, n=2 if kind == "two" else 1)
                assert [c.message.content for c in response.choices] == [expected[k]] * len(response.choices)
                assert all(c.finish_reason in ("stop", "length") for c in response.choices)
            else:
                stream = await api.chat.completions.create(**args, stream=True)
                text, reason = "", None
                async for chunk in stream:
                    text += chunk.choices[0].delta.content or ""
                    reason = chunk.choices[0].finish_reason or reason
                    if kind == "leave" and text:
                        break
                await stream.close()
                if kind == "stream":
                    assert text == expected[k] and reason in ("stop", "length")
            outcomes.append(kind)

    peak_rows = [0]

    async def watch() -> None:
        async with httpx.AsyncClient() as http:
            while True:
                state = (await http.get(f"{server.url}/health")).json()
                peak_rows[0] = max(peak_rows[0], state["running_rows"])
                await asyncio.sleep(0.005)

    async def main() -> None:
        api = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)
        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(one_client(api, i) for i in range(32)))
        watcher.cancel()
        await api.close()

    asyncio.run(main())
    assert len(outcomes) == 128
    assert peak_rows[0] > 1  # the requests really were decoded together
    state = wait_until_idle(server)
    assert (state["running_rows"], state["free_rows"], state["waiting"]) == (0, MAX_BATCH, 0)


# -- media rules without a server ---------------------------------------------------------------------------


def test_url_fetching_when_allowed(tmp_path):
    png = encode(BLUE)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/blue.png" else 404)
            self.end_headers()
            self.wfile.write(png if self.path == "/blue.png" else b"")

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{http.server_address[1]}"
    try:
        allowed = ServeSettings(allow_url_fetch=True)
        assert load_image_url(f"{url}/blue.png", allowed, "image").size == (90, 90)
        with pytest.raises(APIError) as caught:
            load_image_url(f"{url}/missing.png", allowed, "image")
        assert caught.value.status == 400 and caught.value.code == "fetch_failed"
        with pytest.raises(APIError) as caught:
            load_image_url(f"{url}/blue.png", ServeSettings(allow_url_fetch=True, max_media_bytes=100), "image")
        assert caught.value.status == 413
        with pytest.raises(APIError) as caught:
            load_image_url(f"{url}/blue.png", ServeSettings(), "image")
        assert caught.value.status == 403
    finally:
        http.shutdown()
    outside = tmp_path / "link.png"
    outside.symlink_to("/etc/hostname")
    with pytest.raises(APIError) as caught:  # a link inside the folder that points out of it
        load_image_url(outside.as_uri(), ServeSettings(allowed_media_dir=tmp_path), "image")
    assert caught.value.status == 403


def test_a_prompt_that_cannot_fit_is_refused_before_pixels_are_decoded(chat, monkeypatch):
    """Issue 16, defect 2: image tokens come from the tile grid of each header; no pixel is decoded, no
    tile made, when the request cannot fit."""
    from internvl.serve import prepare
    from internvl.serve.protocol import APIError, ChatCompletionRequest

    def never(*args, **kwargs):
        raise AssertionError("decoded or tokenised a request that cannot fit")

    monkeypatch.setattr(prepare, "decode_image", never)
    monkeypatch.setattr(type(chat.processor), "__call__", never)
    settings = ServeSettings(model_name=MODEL, max_images=16, max_image_pixels=4096 * 4096)
    preparer = prepare.Preparer(chat, settings, max_seq_len=1024, max_n=1)
    big = data_url(encode(Image.new("RGB", (4000, 3000), "red")))  # 12 tiles + thumbnail each
    request = ChatCompletionRequest.model_validate(
        {"model": MODEL, "max_tiles": 12, "messages": [{"role": "user", "content": [image_part(big)] * 6}]}
    )
    with pytest.raises(APIError) as info:
        preparer(request)
    assert info.value.code == "context_length_exceeded" and "78 image tiles" in str(info.value)


def test_a_huge_text_is_refused_before_it_is_tokenised(server, chat, monkeypatch):
    """Defect 3: a cheap lower bound (bytes / the longest token) refuses it without tokenising it."""

    def never(*args, **kwargs):
        raise AssertionError("tokenised a text that cannot fit")

    monkeypatch.setattr(type(chat.processor), "__call__", never)
    response = post(server, {"model": MODEL, "messages": [{"role": "user", "content": "word " * 35_000}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"


def _partial_body(server, declared: int, sent: bytes, wait_s: float = 0.0) -> bytes:
    """Send headers announcing `declared` bytes, then only `sent`; return what the server answers (if anything)."""
    import socket
    import time

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Length: {declared}\r\n\r\n"
        )
        sock.sendall(head.encode() + sent)
        if not wait_s:
            return b""
        time.sleep(wait_s)
        return sock.recv(65536)


def test_a_client_that_leaves_mid_body_is_one_debug_line_and_a_slow_one_gets_408(server, monkeypatch, caplog):
    """Issue 16, defect 4."""
    import logging
    import time

    from internvl.serve import app as serve_app

    with caplog.at_level(logging.DEBUG, logger="internvl.serve"):
        for _ in range(20):
            _partial_body(server, 1000, b'{"model": "tiny", ')
        time.sleep(0.5)
    assert "unhandled error" not in caplog.text and "Traceback" not in caplog.text
    assert httpx.get(f"{server.url}/health").status_code == 200
    monkeypatch.setattr(serve_app, "BODY_TIMEOUT_S", 0.3)
    answer = _partial_body(server, 1000, b'{"model": "tiny", ', wait_s=1.0)
    assert b" 408 " in answer.split(b"\r\n")[0] and b"request_timeout" in answer


def test_a_bad_video_is_named_by_its_place_in_the_request_not_by_a_server_path(server):
    """Issue 16, defect 15: the temporary file a video is decoded from never shows in an error."""
    pytest.importorskip("av", reason="videos need the [video] extra")
    part = {"type": "video_url", "video_url": {"url": data_url(b"not a video at all" * 10, "video/mp4")}}
    response = post(
        server,
        {"model": MODEL, "messages": [{"role": "user", "content": [part, {"type": "text", "text": "what happens?"}]}]},
    )
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "internvl-serve-" not in message and "/tmp" not in message and "messages[0].content[0]" in message, message


def test_info_tells_a_client_what_it_needs_without_a_key(server):
    info = httpx.get(f"{server.url}/info").json()
    assert info["api_key_required"] is True
    assert info["limits"]["max_image_pixels"] == 400 * 400 and info["limits"]["max_tokens"] == 800
    assert "<think>" in info["thinking_system_prompt"]
    assert "internvl" not in str(info["limits"])  # no model id without the key: /v1/models needs it


def test_chat_page_is_served_with_a_strict_content_policy(server):
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text
    script = httpx.get(f"{server.url}/static/app.js")
    assert script.status_code == 200 and "/v1/chat/completions" in script.text
    assert "innerHTML" not in script.text  # model output goes into the page as text nodes only
    assert httpx.get(f"{server.url}/static/style.css").headers["content-type"].startswith("text/css")


def test_no_web_turns_the_page_off(chat):
    with BackgroundServer(chat, ServeSettings(web=False)) as running:
        assert httpx.get(f"{running.url}/").status_code == 404
        assert httpx.get(f"{running.url}/static/app.js").status_code == 404
        assert httpx.get(f"{running.url}/health").status_code == 200
