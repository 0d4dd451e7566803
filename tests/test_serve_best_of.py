"""`internvl serve --reward-model DIR`: a request with `best_of` gets the answers the reward model scores
highest among that many sampled ones, each with its `reward_score`; requests it cannot serve get 400."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from internvl.chat import load  # noqa: E402
from internvl.reward import ProcessRewardModel  # noqa: E402
from internvl.serve.server import BackgroundServer  # noqa: E402
from internvl.serve.settings import ServeSettings  # noqa: E402
from tests.tiny import build_chat_model_folder  # noqa: E402

MODEL = "tiny"


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    return load(build_chat_model_folder(tmp_path_factory.mktemp("best-of")), max_tiles=1)


@pytest.fixture(scope="module")
def prm(chat):
    return ProcessRewardModel.around(chat)  # the tiny model judges too: any InternVL with "+" and "-" tokens can


@pytest.fixture(scope="module")
def server(chat, prm):
    with BackgroundServer(chat, ServeSettings(model_name=MODEL), reward_model=prm) as running:
        yield running


def red_picture() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (112, 112), "red").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def ask(server, **fields) -> httpx.Response:
    content = [{"type": "image_url", "image_url": {"url": red_picture()}}, {"type": "text", "text": "What colour?"}]
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **fields}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)


def test_best_of_returns_the_reward_models_favourites(server, prm):
    sampling = {"temperature": 1.0, "seed": 11}
    candidates = [c["message"]["content"] for c in ask(server, n=4, **sampling).json()["choices"]]
    assert len(set(candidates)) > 1
    scores = prm.score("What colour?", [Image.new("RGB", (112, 112), "red")], candidates)
    ranked = sorted(range(4), key=lambda k: -scores[k])

    one = ask(server, n=1, best_of=4, **sampling).json()["choices"]  # the same 4 answers: seeds 11..14
    assert [c["message"]["content"] for c in one] == [candidates[ranked[0]]]
    assert one[0]["reward_score"] == pytest.approx(scores[ranked[0]], abs=1e-5)
    two = ask(server, n=2, best_of=4, **sampling).json()["choices"]
    assert [c["message"]["content"] for c in two] == [candidates[k] for k in ranked[:2]]
    assert [c["index"] for c in two] == [0, 1]
    assert httpx.get(f"{server.url}/info").json()["reward_model"] is True


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"n": 3, "best_of": 2}, "best_of = 2 must be at least n = 3"),
        ({"best_of": 2, "stream": True}, "best_of cannot be streamed"),
        ({"best_of": 99}, "exceeds this server's cap"),
    ],
)
def test_best_of_requests_that_cannot_be_served(server, fields, message):
    response = ask(server, **fields)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_a_server_without_a_reward_model_says_how_to_get_one(chat):
    with BackgroundServer(chat, ServeSettings(model_name=MODEL)) as running:
        response = ask(running, best_of=2)
    assert response.status_code == 400
    assert "this server has none (internvl serve --reward-model DIR)" in response.json()["error"]["message"]


def test_best_of_with_a_video_is_refused_before_the_video_is_read(server):
    content = [{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}, {"type": "text", "text": "?"}]
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "best_of": 2}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    assert "the reward model does not score answers about videos" in response.json()["error"]["message"]
