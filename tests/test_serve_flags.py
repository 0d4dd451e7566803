"""`internvl serve` checks its flags before the model loads (issue 16, defects 13 and 18): each bad value is
one line naming the flag and exit status 2, never a traceback nor a server that refuses everything."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="needs the [serve] extra")

from internvl.cli import main  # noqa: E402

BAD_FLAGS = [
    (["--port", "99999"], "--port must be between 1 and 65535"),
    (["--port", "0"], "--port must be between 1 and 65535"),
    (["--max-batch", "0"], "--max-batch must be at least 1"),
    (["--max-queue", "-1"], "--max-queue must be at least 0"),
    (["--max-tokens", "0"], "--max-tokens must be at least 1"),
    (["--max-images", "-1"], "--max-images must be 0"),
    (["--max-request-bytes", "-5"], "--max-request-bytes must be at least 1"),
    (["--max-tiles", "0"], "--max-tiles must be at least 1"),
    (["--max-tiles-cap", "0"], "--max-tiles-cap must be at least 1"),
    (["--max-seq-len", "0"], "--max-seq-len must be at least 1"),
    (["--allowed-media-dir", "/no/such/folder"], "--allowed-media-dir /no/such/folder: no such folder"),
    (["--api-key", ""], "the API key is empty"),
    (["--shutdown-timeout", "0"], "shutdown timeout must be positive"),
]


@pytest.mark.parametrize("flags,message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_a_bad_serve_flag_is_one_line(flags, message, capsys, monkeypatch):
    monkeypatch.delenv("INTERNVL_API_KEY", raising=False)
    assert main(["serve", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("internvl: error: ") and message in err and "\n" not in err, err


def test_an_empty_api_key_in_the_environment_is_refused(capsys, monkeypatch):
    monkeypatch.setenv("INTERNVL_API_KEY", "  ")
    assert main(["serve"]) == 2
    assert "the API key is empty" in capsys.readouterr().err


@pytest.mark.parametrize("flags,web", [([], True), (["--no-web"], False)])
def test_no_web_turns_the_page_off(flags, web, monkeypatch):
    seen = {}
    monkeypatch.setattr(
        "internvl.serve.server.run_server", lambda chat, settings, engine, reward: seen.update(s=settings)
    )
    assert main(["serve", *flags]) == 0
    assert seen["s"].web is web
