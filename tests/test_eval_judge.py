"""The LLM judge against a tiny fake OpenAI-compatible server on 127.0.0.1 (a free port, this process only)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from internvl.eval.judge import (
    JUDGE_PROMPT,
    Judge,
    JudgeCache,
    JudgeError,
    JudgeSettings,
    build_judge_prompt,
    parse_judge_reply,
)


class FakeChat(BaseHTTPRequestHandler):
    """POST /v1/chat/completions: replies with the server's scripted texts in order ("0.0" when out)."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        if self.server.status != 200:
            self._send(self.server.status, {"error": {"message": "boom", "type": "server_error"}})
            return
        reply = self.server.replies.pop(0) if self.server.replies else "0.0"
        self._send(
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeChat)
    server.replies, server.requests, server.status = [], [], 200
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


def make_judge(server, **kwargs):
    return Judge(JudgeSettings(model="fake-judge", base_url=server.base_url, api_key="k", max_retries=0, **kwargs))


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("0.7", 0.7),
        ("1.0", 1.0),
        ("1", 1.0),
        ("0", 0.0),
        (" 0.5.", 0.5),
        ("| 0.3 |", 0.3),
        ("0.4 because ...", 0.4),
        (".9", 0.9),
        ("1.5", None),
        ("-0.2", None),
        ("The score is 0.6", None),
        ("", None),
        ("abc", None),
    ],
)
def test_parse_judge_reply(reply, expected):
    assert parse_judge_reply(reply) == expected


def test_prompt_is_one_constant_ending_with_the_blank_row():
    prompt = build_judge_prompt("What is | this?", "a <OR> b", "line one\nline two")
    assert prompt.startswith(JUDGE_PROMPT.split("{question}")[0])
    assert prompt.endswith("| What is / this? | a <OR> b | line one line two | ")


def test_grade_parses_the_score(fake_server):
    fake_server.replies = ["0.8"]
    judgement = make_judge(fake_server).grade("What colour?", ["red"], "It is red.")
    assert (judgement.score, judgement.attempts, judgement.parsed) == (0.8, 1, True)
    request = fake_server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer k"
    assert request["model"] == "fake-judge" and request["temperature"] == 0.0
    assert request["messages"][0]["content"].endswith("| What colour? | red | It is red. | ")


def test_grade_retries_with_rising_temperature(fake_server):
    fake_server.replies = ["I think it is good", "score: high", "0.6"]
    judgement = make_judge(fake_server, temperature_step=0.25).grade("Q", ["a", "b"], "a")
    assert (judgement.score, judgement.attempts) == (0.6, 3)
    assert [r["temperature"] for r in fake_server.requests] == [0.0, 0.25, 0.5]
    assert "| a <OR> b |" in fake_server.requests[0]["messages"][0]["content"]


def test_grade_gives_up_after_max_attempts(fake_server):
    fake_server.replies = ["nope"] * 10
    judgement = make_judge(fake_server, max_attempts=3, temperature_step=0.5).grade("Q", ["a"], "b")
    assert (judgement.score, judgement.parsed, judgement.reply, judgement.attempts) == (0.0, False, "nope", 3)
    assert [r["temperature"] for r in fake_server.requests] == [0.0, 0.5, 1.0]


def test_endpoint_errors_are_judge_errors(fake_server):
    fake_server.status = 500
    with pytest.raises(JudgeError, match="failed"):
        make_judge(fake_server).grade("Q", ["a"], "b")


def test_judge_needs_an_endpoint_or_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(JudgeError, match="no judge endpoint"):
        Judge(JudgeSettings(model="m"))


def test_cache_survives_a_torn_last_line(tmp_path):
    from internvl.eval.judge import Judgement

    cache = JudgeCache(tmp_path / "judge.jsonl")
    key = JudgeCache.key("1", "m", ["a"], "b")
    cache.put(key, Judgement(0.5, "0.5", 1, True))
    with open(tmp_path / "judge.jsonl", "a", encoding="utf-8") as file:
        file.write('{"key": "half a li')
    reloaded = JudgeCache(tmp_path / "judge.jsonl")
    assert reloaded.get(key) == Judgement(0.5, "0.5", 1, True)
    reloaded.put(JudgeCache.key("2", "m", ["a"], "c"), Judgement(1.0, "1.0", 1, True))
    assert len(JudgeCache(tmp_path / "judge.jsonl")._done) == 2


def test_judged_items_in_a_run_are_cached_and_unscored_without_a_judge(fake_server, tmp_path, capsys):
    from internvl.eval.formats import EvalItem
    from internvl.eval.runner import rescore, run_eval

    items = [
        EvalItem(id=str(i), question=f"Explain {i}.", answers=("because",), metric="judge", category="gen")
        for i in range(3)
    ]
    answerer = lambda batch: [f"answer {item.id}" for item in batch]  # noqa: E731
    summary = run_eval(items, answerer, tmp_path / "run", progress=False)
    assert (summary["n"], summary["n_scored"], summary["overall"]) == (3, 0, None)
    assert "3 of 3 items not scored" in capsys.readouterr().out
    assert fake_server.requests == []

    fake_server.replies = ["0.5", "1.0", "not a score", "0.2"]
    judge = make_judge(fake_server)
    summary = rescore(tmp_path / "run" / "predictions.jsonl", judge=judge, print_table=False)
    assert summary["overall"] == round(100 * (0.5 + 1.0 + 0.2) / 3, 2)
    assert summary["scoring"]["judge_model"] == "fake-judge" and len(fake_server.requests) == 4
    again = rescore(tmp_path / "run" / "predictions.jsonl", judge=judge, print_table=False)
    assert again["overall"] == summary["overall"] and len(fake_server.requests) == 4  # all from judge.jsonl
