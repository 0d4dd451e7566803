"""The chat page of `internvl serve`, end to end in a real headless Chromium (Playwright's Python API
driving the Debian `chromium` package). One `internvl serve` process with the shipped nano model and
an API key serves every test on a free loopback port.

Without a browser these tests are skipped, with the reason, except where INTERNVL_REQUIRE_BROWSER or
CI is set (`.ci/run` installs the browser): there a missing browser fails. With INTERNVL_SCREENSHOT=PATH
the first test saves the page's screenshot there (README's picture comes from it)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

KEY = "page-test-key"
MAX_PIXELS = 600 * 600  # a 448 px world picture fits; the 800 px picture of the error test does not


def _browser_or_reason() -> tuple[str | None, str]:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "the playwright package is missing (pip install 'internvl[dev]')"
    path = os.environ.get("INTERNVL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        return None, "no chromium on PATH (apt-get install chromium, or set INTERNVL_CHROMIUM)"
    return path, ""


CHROMIUM, WHY_NOT = _browser_or_reason()
if CHROMIUM is None:
    if os.environ.get("INTERNVL_REQUIRE_BROWSER") or os.environ.get("CI"):
        raise RuntimeError(f"the browser tests must run here, but {WHY_NOT}")
    pytest.skip(WHY_NOT, allow_module_level=True)

from playwright.sync_api import Browser, Page, Route, expect, sync_playwright  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`internvl serve` with the nano model, as a user would start it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [str(Path(sys.executable).parent / "internvl"), "serve", "--port", str(port), "--api-key", KEY]
    command += ["--max-image-pixels", str(MAX_PIXELS), "--max-batch", "4", "--threads", "1"]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get_json(url + "/health")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("internvl serve did not start:\n" + log.read_text()) from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, server_url: str) -> Iterator[Page]:
    """The page, opened and given the API key, its settings panel open."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.goto(server_url)
    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#key", KEY)
    page.press("#key", "Enter")
    expect(page.locator("#facts")).to_contain_text("internvl-nano")
    yield page
    context.close()


@pytest.fixture(scope="module")
def world_picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from internvl.data.world import generate_sample

    sample = generate_sample("recognition", "test", 0)
    path = tmp_path_factory.mktemp("media") / "world.png"
    sample.images[0].save(path)
    return path


def _requests_to_chat(page: Page) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda request: (
            bodies.append(json.loads(request.post_data or "{}"))
            if request.url.endswith("/v1/chat/completions")
            else None
        ),
    )
    return bodies


def _wait_for_answer(page: Page, k: int) -> str:
    """The k-th answer (0-based), once its stream has ended."""
    answer = page.locator(".message.assistant").nth(k)
    expect(answer).not_to_have_class("message assistant streaming", timeout=60_000)
    expect(page.locator("#send")).to_be_visible()
    return answer.inner_text()


def test_upload_ask_stream_and_follow_up(page: Page, world_picture: Path) -> None:
    sent = _requests_to_chat(page)
    page.set_input_files("#files", str(world_picture))
    expect(page.locator("#attachments img")).to_have_count(1)
    page.fill("#prompt", "Describe what the picture shows.")  # a long answer, to see it stream
    page.press("#prompt", "Enter")
    expect(page.locator(".message.user img.thumb")).to_have_count(1)  # the picture in the conversation
    first = _wait_for_answer(page, 0)
    assert first.strip(), "the answer is empty"
    chunks = int(page.locator(".message.assistant .body").first.get_attribute("data-chunks") or 0)
    assert chunks >= 2, f"the answer came in {chunks} chunk(s), not streamed"
    if os.environ.get("INTERNVL_SCREENSHOT"):
        page.screenshot(path=os.environ["INTERNVL_SCREENSHOT"])

    page.fill("#prompt", "What colour is shown in the image?")
    page.keyboard.press("Enter")
    _wait_for_answer(page, 1)
    follow_up = sent[-1]["messages"]
    assert [m["role"] for m in follow_up] == ["user", "assistant", "user"]
    assert follow_up[0]["content"][0]["type"] == "image_url"
    assert follow_up[0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert follow_up[1]["content"] == first.strip()
    assert sent[-1]["stream"] is True and sent[-1]["model"] == "internvl-nano"


DROP_AND_PASTE = """async ([kind, bytes]) => {
    const file = new File([new Uint8Array(bytes)], kind + ".png", {type: "image/png"});
    const data = new DataTransfer();
    data.items.add(file);
    if (kind === "dropped") {
        document.body.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
    } else {
        const paste = new ClipboardEvent("paste", {clipboardData: data, bubbles: true, cancelable: true});
        document.getElementById("prompt").dispatchEvent(paste);
    }
}"""


def test_images_arrive_by_drop_and_by_paste(page: Page, world_picture: Path) -> None:
    data = list(world_picture.read_bytes())
    page.evaluate(DROP_AND_PASTE, ["dropped", data])
    expect(page.locator("#attachments img")).to_have_count(1)
    page.evaluate(DROP_AND_PASTE, ["pasted", data])
    expect(page.locator("#attachments img")).to_have_count(2)
    assert page.locator("#attachments img").nth(1).get_attribute("alt") == "pasted.png"
    page.locator("#attachments button").first.click()  # a thumbnail can be taken back before sending
    expect(page.locator("#attachments img")).to_have_count(1)


def test_video_attachment(page: Page, tmp_path: Path) -> None:
    pytest.importorskip("av")
    from internvl.data.world import generate_sample
    from internvl.data.world.media import write_mp4

    sample = generate_sample("video", "test", 0)
    path = tmp_path / "moving.mp4"
    write_mp4(sample.frames, path)
    sent = _requests_to_chat(page)
    page.set_input_files("#files", str(path))
    expect(page.locator("#attachments video")).to_have_count(1)
    page.fill("#prompt", sample.question)
    page.press("#prompt", "Enter")
    expect(page.locator(".message.user video.thumb")).to_have_count(1)
    assert _wait_for_answer(page, 0).strip()
    assert sent[-1]["messages"][0]["content"][0]["type"] == "video_url"
    expect(page.locator(".message.error")).to_have_count(0)


def test_shift_enter_is_a_new_line_and_new_chat_clears(page: Page) -> None:
    page.fill("#prompt", "first line")
    page.press("#prompt", "Shift+Enter")
    page.keyboard.type("second line")
    assert page.input_value("#prompt") == "first line\nsecond line"
    expect(page.locator(".message")).to_have_count(0)  # nothing was sent
    page.press("#prompt", "Enter")
    _wait_for_answer(page, 0)
    page.click("#new-chat")
    expect(page.locator(".message")).to_have_count(0)


def test_stop_cancels_the_answer_and_frees_the_row(page: Page, server_url: str) -> None:
    def endless(route: Route) -> None:  # the real server, asked never to stop at the end-of-answer token
        body = json.loads(route.request.post_data or "{}")
        route.continue_(post_data=json.dumps({**body, "ignore_eos": True, "max_tokens": 2000}))

    page.route("**/v1/chat/completions", endless)
    cancelled_before = _get_json(server_url + "/health")["cancelled_requests"]
    page.fill("#prompt", "Describe what the picture shows.")
    page.press("#prompt", "Enter")
    body = page.locator(".message.assistant .body").first
    expect(body).not_to_have_attribute("data-chunks", "0", timeout=30_000)
    expect(page.locator("#stop")).to_be_visible()
    page.click("#stop")
    expect(page.locator(".message.assistant.stopped")).to_have_count(1)
    expect(page.locator("#send")).to_be_visible()
    deadline = time.monotonic() + 30
    while True:
        health = _get_json(server_url + "/health")
        if health["running_rows"] == 0 and health["cancelled_requests"] > cancelled_before:
            break
        assert time.monotonic() < deadline, f"the server still runs the stopped answer: {health}"
        time.sleep(0.2)


def test_refused_image_shows_the_servers_message(page: Page, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("RGB", (800, 800), (200, 30, 30)).save(path)
    page.set_input_files("#files", str(path))
    page.fill("#prompt", "What colour is this?")
    page.press("#prompt", "Enter")
    error = page.locator(".message.error")
    expect(error).to_contain_text("800x800 pixels is over this server's cap of 360000")  # the server's words
    expect(error).to_contain_text("messages[0].content[0]")
    expect(page.locator(".message.assistant")).to_have_count(0)
    assert page.input_value("#prompt") == "What colour is this?"  # the question is not lost
    expect(page.locator("#attachments img")).to_have_count(1)  # nor its picture


def _answer_with(page: Page, text: str) -> None:
    """Make the page receive `text` as a streamed answer, in pieces, in the server's wire format."""
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    events = "".join(
        "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}) + "\n\n"
        for piece in pieces
    )
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=events + "data: [DONE]\n\n"),
    )


def test_model_output_is_text_never_html(page: Page) -> None:
    _answer_with(page, 'Look: <script>window.pwned = 1</script> <img src=x onerror="window.pwned = 2">\n\n**bold**')
    page.fill("#prompt", "hello")
    page.press("#prompt", "Enter")
    answer = page.locator(".message.assistant .body").first
    expect(answer).to_contain_text("<script>window.pwned = 1</script>")
    expect(answer).to_contain_text('<img src=x onerror="window.pwned = 2">')
    assert answer.locator("script, img").count() == 0
    assert answer.locator("strong").inner_text() == "bold"  # markdown still renders
    assert page.evaluate("window.pwned") is None


def test_thinking_mode_sends_the_prompt_and_folds_the_thinking(page: Page) -> None:
    sent = _requests_to_chat(page)
    _answer_with(page, "<think>\nFirst I look at the picture.\n</think>\n\nIt is red.")
    page.click("#toggle-settings")
    page.check("#thinking")
    page.fill("#max-tiles", "2")
    page.fill("#prompt", "What colour is it?")
    page.press("#prompt", "Enter")
    thinking = page.locator(".message.assistant details.thinking")
    expect(thinking).to_have_count(1)
    assert thinking.get_attribute("open") is None  # folded
    expect(page.locator(".message.assistant .body").first).to_contain_text("It is red.")
    assert not page.locator(".message.assistant .body > p").first.inner_text().startswith("First")
    system = sent[-1]["messages"][0]
    assert system["role"] == "system" and "<think>" in system["content"]
    assert sent[-1]["max_tiles"] == 2


def test_wrong_key_is_asked_again(browser: Browser, server_url: str) -> None:
    page = browser.new_page()
    page.goto(server_url)
    page.fill("#key", "not-the-key")
    page.press("#key", "Enter")
    expect(page.locator("#key-error")).to_contain_text("invalid API key")
    expect(page.locator("#key-dialog")).to_be_visible()
    page.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_narrow_screen_and_colour_schemes(browser: Browser, server_url: str, scheme: str) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 720}, color_scheme=scheme)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(server_url)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a 360 px screen"
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == ("rgb(255, 255, 255)" if scheme == "light" else "rgb(21, 23, 26)")
    context.close()
