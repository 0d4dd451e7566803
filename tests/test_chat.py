"""The chat API and `internvl chat`: answers, batches, streaming, sessions, and input errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from internvl import InputError
from internvl.chat import Chat, load
from internvl.cli import main as cli_main
from tests.tiny import build_chat_model_folder


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return build_chat_model_folder(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="module")
def chat(model_folder) -> Chat:
    return load(model_folder, max_tiles=4, generation=None)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, (size, colour) in enumerate([((300, 120), "red"), ((90, 90), "blue")]):
        path = folder / f"{i}.png"
        Image.new("RGB", size, colour).save(path)
        paths.append(path)
    return paths


def test_ask_returns_the_decoded_greedy_answer(chat, images):
    answer = chat.ask("What colour is the circle?", images=[images[0]], max_new_tokens=12)
    inputs = chat.processor([{"role": "user", "content": "What colour is the circle?"}], images=[images[0]])
    from internvl.generate import GenerationConfig, generate

    tokens = generate(
        chat.model,
        inputs.input_ids[None],
        None,
        inputs.pixel_values,
        GenerationConfig(max_new_tokens=12, stop_token_ids=(chat.processor.stop_token_id,)),
    )[0]
    assert (
        answer
        == chat.tokenizer.decode(
            [t for t in tokens if t != chat.processor.stop_token_id], skip_special_tokens=True
        ).strip()
    )
    assert isinstance(answer, str) and answer


def test_prompt_follows_the_official_chat_recipe(chat, images):
    inputs = chat.processor([{"role": "user", "content": "How many?"}], images=[images[1]])
    system = chat.processor.template.system_message
    block = "<img>" + "<IMG_CONTEXT>" * (chat.model.config.num_image_token * inputs.tiles_per_image[0]) + "</img>"
    expected = (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{block}\nHow many?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert inputs.prompt == expected


def test_batch_equals_one_by_one(chat, images):
    questions = ["What colour is it?", "how many circles are there in the picture?", "is there a square?"]
    per_row_images = [[images[0]], [], [images[1], images[0]]]
    batched = chat.ask_batch(questions, per_row_images, max_new_tokens=10)
    alone = [chat.ask(q, images=imgs, max_new_tokens=10) for q, imgs in zip(questions, per_row_images)]
    assert batched == alone


def test_stream_joins_to_the_answer(chat, images):
    pieces = list(chat.stream("What colour is the circle?", images=[images[0]], max_new_tokens=12))
    assert "".join(pieces) == chat.ask("What colour is the circle?", images=[images[0]], max_new_tokens=12)


def test_session_keeps_history(chat, images):
    session = chat.session()
    first = session.ask("What colour?", images=[images[0]], max_new_tokens=6)
    second = session.ask("And how many?", max_new_tokens=6)
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    assert second == chat.ask("And how many?", images=[images[0]], history=[("What colour?", first)], max_new_tokens=6)


def test_seeded_sampling_is_reproducible(chat):
    a = chat.ask("what colour", temperature=1.0, top_p=0.9, seed=3, max_new_tokens=8)
    b = chat.ask("what colour", temperature=1.0, top_p=0.9, seed=3, max_new_tokens=8)
    assert a == b


def test_placeholder_count_mismatch_is_refused(chat, images):
    with pytest.raises(InputError, match="placeholder"):
        chat.ask("<image>\n<image>\nCompare.", images=[images[0]])


def test_prompt_longer_than_the_context_is_refused_before_the_model_runs(chat, images, monkeypatch):
    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the model ran")

    monkeypatch.setattr(chat.model, "forward", fail)
    with pytest.raises(InputError, match="model's context is 2048"):
        chat.ask("red " * 3000)


def test_cli_prints_only_the_answer(model_folder, images, capsys):
    code = cli_main(
        [
            "chat",
            "--model",
            str(model_folder),
            "--image",
            str(images[0]),
            "--max-new-tokens",
            "8",
            "--max-tiles",
            "4",
            "What colour is the circle?",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    expected = load(model_folder, max_tiles=4).ask("What colour is the circle?", images=[images[0]], max_new_tokens=8)
    assert out == expected + "\n"


def test_cli_stream_and_errors(model_folder, images, capsys, tmp_path):
    code = cli_main(["chat", "--model", str(model_folder), "--stream", "--max-new-tokens", "8", "how many"])
    out, _ = capsys.readouterr()
    assert code == 0 and out.endswith("\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    code = cli_main(["chat", "--model", str(model_folder), "--image", str(empty), "what"])
    _, err = capsys.readouterr()
    assert code == 2 and "empty.png" in err


def test_cli_interactive(model_folder, images, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(f"/image {images[1]}\nwhat colour\n/reset\nhow many\n/exit\n"))
    code = cli_main(["chat", "--model", str(model_folder), "--max-new-tokens", "5"])
    out, _ = capsys.readouterr()
    assert code == 0 and out.count("\n") == 2  # two questions, two answers; prompts and notes go to stderr


def test_cli_interactive_refuses_a_bad_image_alone_and_survives_bad_bytes(
    model_folder, images, tmp_path, capsys, monkeypatch
):
    """Issue 16, defects 17 and 5: a bad /image is refused when attached (the others stay), and a line
    that is not UTF-8 is an error message, not the end of the session."""

    seen = []
    from internvl.chat import Session

    real_ask = Session.ask

    def spy(self, question, images=(), **kwargs):
        seen.append(list(images))
        return real_ask(self, question, images=images, **kwargs)

    monkeypatch.setattr(Session, "ask", spy)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")

    class Terminal:
        """Lines typed one at a time, decoded as they come (bytes that are not UTF-8 fail on their line)."""

        def __init__(self, lines: list[bytes]) -> None:
            self.lines = lines

        def readline(self) -> str:
            return self.lines.pop(0).decode("utf-8") if self.lines else ""

        def isatty(self) -> bool:
            return False

    lines = [f"/image {images[0]}\n".encode(), f"/image {bad}\n".encode(), b"\xff\xfe\n", b"what colour\n", b"/exit\n"]
    stdin = Terminal(lines)
    monkeypatch.setattr("sys.stdin", stdin)
    code = cli_main(["chat", "--model", str(model_folder), "--max-new-tokens", "3"])
    _, err = capsys.readouterr()
    assert code == 0
    assert "bad.png" in err and "1 image(s) still attached" in err and "not valid text" in err
    assert seen == [[str(images[0])]]


def test_bf16_on_cpu_keeps_the_vision_side_in_fp32_where_bf16_is_emulated(model_folder, images):
    from internvl.model.linear import CPU_HAS_NATIVE_BF16

    chat_bf16 = load(model_folder, dtype=torch.bfloat16, device="cpu", max_tiles=4)
    assert chat_bf16.model.language.embed.weight.dtype == torch.bfloat16
    expected_vision = torch.bfloat16 if CPU_HAS_NATIVE_BF16 else torch.float32
    assert chat_bf16.model.vision.embed.patch.weight.dtype == expected_vision
    assert chat_bf16.model.projector.fc1.weight.dtype == expected_vision
    assert chat_bf16.ask("What colour is the circle?", images=[images[0]], max_new_tokens=4)


def test_int8_mode_quantizes_the_language_model_and_answers(model_folder, images):
    from internvl.errors import ConfigError
    from internvl.model.linear import BlockQuantLinear, Int8Linear

    chat_int8 = load(model_folder, quantize="int8", max_tiles=4)
    assert isinstance(chat_int8.model.language.lm_head, (Int8Linear, BlockQuantLinear))
    assert isinstance(chat_int8.model.language.layers[0].mlp.gate_up, (Int8Linear, BlockQuantLinear))
    assert chat_int8.ask("What colour is the circle?", images=[images[0]], max_new_tokens=4)
    with pytest.raises(ConfigError, match="quantize"):
        load(model_folder, quantize="int2")


def test_int4_mode_quantizes_the_language_model_and_answers(model_folder, images):
    from internvl.errors import ConfigError
    from internvl.model.linear import BlockQuantLinear, Int4Linear

    chat_int4 = load(model_folder, quantize="int4", max_tiles=4, device="cpu")
    assert isinstance(chat_int4.model.language.layers[0].mlp.gate_up, (Int4Linear, BlockQuantLinear))
    assert chat_int4.ask("What colour is the circle?", images=[images[0]], max_new_tokens=4)
    with pytest.raises(ConfigError, match="CPU kernels only"):
        load(model_folder, quantize="int4", device="cuda")


def test_ask_cuts_the_answer_at_a_stop_string_as_stream_does(chat, images):
    free = chat.ask("What colour is the circle?", images=[images[0]], max_new_tokens=12)
    words = free.split()
    assert len(words) >= 2, free
    stop = " " + words[1]
    cut = chat.ask("What colour is the circle?", images=[images[0]], max_new_tokens=12, stop_strings=[stop])
    streamed = "".join(
        chat.stream("What colour is the circle?", images=[images[0]], max_new_tokens=12, stop_strings=[stop])
    )
    assert stop not in cut and free.startswith(cut) and cut == streamed
