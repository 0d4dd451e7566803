"""The continuous-batching engine without HTTP: requests that join the running batch at different
steps get exactly the answers they get alone; failures and cancellations stay with their request."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from internvl.chat import Chat, load
from internvl.serve.engine import Engine, EngineSettings, Event, Job, QueueFull
from tests.tiny import build_chat_model_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def chat(tmp_path_factory) -> Chat:
    return load(build_chat_model_folder(tmp_path_factory.mktemp("tiny-serve-engine")), max_tiles=4)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [Image.new("RGB", (300, 120), "red"), Image.new("RGB", (90, 90), "blue")]


def conversations(images: list[Image.Image]) -> list[list[dict]]:
    image = lambda k: {"type": "image", "image": images[k]}
    return [
        [{"role": "user", "content": "what colour is it?"}],
        [{"role": "user", "content": [image(0), "how many circles are there in the picture?"]}],
        [{"role": "user", "content": [image(1), image(0), {"type": "text", "text": "which is red?"}]}],
        [
            {"role": "user", "content": [image(1), "what is it?"]},
            {"role": "assistant", "content": "a blue square"},
            {"role": "user", "content": "and the colour?"},
        ],
    ]


class Recorder:
    """The events of one job, gathered on the stepping thread."""

    def __init__(self, n: int = 1) -> None:
        self.events: list[Event] = []
        self.n = n

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def texts(self) -> list[str]:
        return ["".join(e.text for e in self.events if e.choice == c) for c in range(self.n)]

    def reasons(self) -> list[str | None]:
        return [
            next((e.finish_reason for e in self.events if e.choice == c and e.finish_reason), None)
            for c in range(self.n)
        ]

    @property
    def error(self) -> str | None:
        return next((e.error for e in self.events if e.error), None)

    @property
    def done(self) -> bool:
        return self.error is not None or all(self.reasons())


def make_job(chat: Chat, messages, n: int = 1, **generation) -> tuple[Job, Recorder]:  # type: ignore[no-untyped-def]
    inputs, config = chat._prepare(messages, (), (), None, generation)
    recorder = Recorder(n)
    return Job(inputs, config, recorder, n=n), recorder


def run(engine: Engine, schedule: list[tuple[int, Job]], max_steps: int = 200) -> None:
    """Submit each job at its step, step until every submitted job's rows are gone."""
    for step in range(max_steps):
        for at, job in schedule:
            if at == step:
                engine.submit(job)
        engine.step()
        if (
            step >= max(at for at, _ in schedule)
            and engine.stats()["running_rows"] == 0
            and engine.stats()["waiting"] == 0
        ):
            return
    raise AssertionError("the engine did not finish")


def test_greedy_answers_in_the_batch_equal_each_prompt_alone(chat, images):
    engine = Engine(chat, EngineSettings(max_batch=4, max_seq_len=1024))
    limits = [14, 20, 9, 17]
    jobs = [make_job(chat, c, max_new_tokens=k) for c, k in zip(conversations(images), limits)]
    run(engine, [(0, jobs[0][0]), (0, jobs[1][0]), (3, jobs[2][0]), (7, jobs[3][0])])
    for messages, limit, (_, recorder) in zip(conversations(images), limits, jobs):
        assert recorder.texts() == [chat.ask_messages(messages, max_new_tokens=limit)]
        assert recorder.reasons()[0] in ("stop", "length")
    assert engine.stats() == {"running_rows": 0, "free_rows": 4, "waiting": 0, "cancelled_requests": 0}


def test_more_requests_than_rows_wait_their_turn(chat, images):
    engine = Engine(chat, EngineSettings(max_batch=2, max_seq_len=1024, prefill_tokens_per_step=1))
    jobs = [make_job(chat, c, max_new_tokens=8) for c in conversations(images)]
    run(engine, [(0, job) for job, _ in jobs])
    for messages, (_, recorder) in zip(conversations(images), jobs):
        assert recorder.texts() == [chat.ask_messages(messages, max_new_tokens=8)]


def test_n_seeded_choices_each_equal_generate_with_their_seed(chat, images):
    engine = Engine(chat, EngineSettings(max_batch=4, max_seq_len=1024))
    messages = conversations(images)[1]
    sampled, recorder = make_job(chat, messages, n=3, temperature=1.0, top_p=0.9, seed=11, max_new_tokens=10)
    greedy, greedy_recorder = make_job(chat, conversations(images)[0], max_new_tokens=10)
    run(engine, [(0, sampled), (1, greedy)])
    assert recorder.texts() == [
        chat.ask_messages(messages, temperature=1.0, top_p=0.9, seed=11 + i, max_new_tokens=10) for i in range(3)
    ]
    assert greedy_recorder.texts() == [chat.ask_messages(conversations(images)[0], max_new_tokens=10)]
    assert sum(e.completion_tokens for e in recorder.events if e.finish_reason) <= 30


def test_stop_strings_cut_the_answer_and_finish_it(chat, images):
    messages = conversations(images)[0]
    full = chat.ask_messages(messages, max_new_tokens=20)
    stop = next(c for c in full[3:] if c.isascii() and c.isalnum())  # a character from the middle
    job, recorder = make_job(chat, messages, max_new_tokens=20, stop_strings=[stop])
    run(Engine(chat, EngineSettings(max_batch=2, max_seq_len=1024)), [(0, job)])
    # the answer ends before the stop string, as OpenAI's do and as `Chat.stream` gives it
    assert recorder.texts() == [full[: full.index(stop)].strip()]
    assert recorder.texts() == ["".join(chat.stream(messages[0]["content"], max_new_tokens=20, stop_strings=[stop]))]
    assert recorder.reasons() == ["stop"]


def test_cancelled_rows_leave_at_the_next_step(chat, images):
    engine = Engine(chat, EngineSettings(max_batch=4, max_seq_len=1024))
    (a, _), (b, b_recorder) = (
        make_job(chat, conversations(images)[1], max_new_tokens=30),
        make_job(chat, conversations(images)[0], max_new_tokens=12),
    )
    engine.submit(a)
    engine.submit(b)
    engine.step()
    assert engine.stats()["running_rows"] == 2
    a.cancel()
    engine.step()
    assert engine.stats()["running_rows"] == 1 and engine.stats()["cancelled_requests"] == 1
    run(engine, [(0, make_job(chat, conversations(images)[2], max_new_tokens=3)[0])])
    assert b_recorder.texts() == [chat.ask_messages(conversations(images)[0], max_new_tokens=12)]


class FaultyEngine(Engine):
    """Fails the prefill or the sampling of chosen jobs, as a bug or a bad input might."""

    bad_prefill: Job | None = None
    bad_sampling: Job | None = None

    def _prefill(self, job):  # type: ignore[no-untyped-def]
        if job is self.bad_prefill:
            raise RuntimeError("prefill exploded")
        return super()._prefill(job)

    def _pick(self, row, logits):  # type: ignore[no-untyped-def]
        if row.job is self.bad_sampling and row.tokens >= 3:
            raise RuntimeError("sampling exploded")
        return super()._pick(row, logits)


def test_a_failing_request_is_told_and_the_others_go_on(chat, images):
    engine = FaultyEngine(chat, EngineSettings(max_batch=4, max_seq_len=1024))
    good = [make_job(chat, c, max_new_tokens=12) for c in conversations(images)[:2]]
    engine.bad_prefill, prefill_recorder = make_job(chat, conversations(images)[2], max_new_tokens=12)
    engine.bad_sampling, sampling_recorder = make_job(chat, conversations(images)[3], n=2, max_new_tokens=12)
    run(engine, [(0, good[0][0]), (0, engine.bad_sampling), (1, engine.bad_prefill), (2, good[1][0])])
    assert "prefill exploded" in prefill_recorder.error
    assert "sampling exploded" in sampling_recorder.error
    for messages, (_, recorder) in zip(conversations(images), good):
        assert recorder.texts() == [chat.ask_messages(messages, max_new_tokens=12)]
    assert engine.stats()["free_rows"] == 4


def test_a_full_queue_and_an_oversized_request_are_refused(chat, images):
    from internvl.errors import InputError

    engine = Engine(chat, EngineSettings(max_batch=2, max_queue=1, max_seq_len=256))
    engine.submit(make_job(chat, conversations(images)[0], max_new_tokens=4)[0])
    with pytest.raises(QueueFull):
        engine.submit(make_job(chat, conversations(images)[0], max_new_tokens=4)[0])
    with pytest.raises(InputError, match="positions"):
        engine.submit(make_job(chat, conversations(images)[0], max_new_tokens=250)[0])
    with pytest.raises(InputError, match="n = 3"):
        engine.submit(make_job(chat, conversations(images)[0], n=3, max_new_tokens=4)[0])


def test_slot_cache_decode_matches_a_plain_cache(chat):
    """Two rows of different lengths decoded together give each row's logits alone."""
    from internvl.model.cache import KVCache
    from internvl.serve.slots import SlotCache

    model = chat.model
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 200, (n,), generator=g) for n in (5, 9)]
    slots = SlotCache.for_model(model, 4, 32)
    alone = []
    with torch.no_grad():
        for ids in prompts:
            cache = KVCache.for_model(model, 1, 32)
            model(ids[None], cache=cache)
            slots.add(cache.keys[:, 0, :, : len(ids)], cache.values[:, 0, :, : len(ids)])
            alone.append(model(torch.tensor([[7]]), cache=cache, last_only=True)[0, -1])
        mask, positions = slots.decode_inputs()
        if shutil.which("c++") is not None:  # as `load` prepares a CPU model: each layer's step one kernel call
            step = torch.zeros(2, 1, model.config.text.hidden_size)
            assert model.language.layers[0].step_operands(step, slots) is not None
        together = model(
            torch.tensor([[7], [7]]), attention_mask=mask, position_ids=positions, cache=slots, last_only=True
        )[:, -1]
    assert slots.lengths == [6, 10]
    torch.testing.assert_close(together, torch.stack(alone), atol=1e-5, rtol=1e-5)
