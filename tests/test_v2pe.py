"""V2PE (docs/architecture.md#v2pe): the position rule, delta = 1 equal to today's path on every backbone,
and float positions through prefill, cached decoding, left-padded batches and packed rows."""

from __future__ import annotations

import pytest
import torch

from internvl.config import ConfigError, InternVLConfig
from internvl.generate import GenerationConfig, generate
from internvl.model.internvl import InternVL
from internvl.model.v2pe import DELTAS, random_deltas, v2pe_positions
from internvl.weights import load_model, save_model
from tests.test_train_support import IMAGE_TOKEN_ID, tiny_config

C = IMAGE_TOKEN_ID  # <IMG_CONTEXT>
START, END = 3, 4  # stand-ins for <img> and </img>: any other tokens


def test_positions_follow_the_reference_rule():
    """Text +1 through <img>; context tokens +delta; </img> at ceil(last) + 1 (V2PE's get_rope_pos_id)."""
    ids = torch.tensor([[1, 2, START, C, C, C, C, END, 5, START, C, C, END, 6]])
    assert v2pe_positions(ids, C, 0.25).tolist() == [[0, 1, 2, 2.25, 2.5, 2.75, 3, 4, 5, 6, 6.25, 6.5, 8, 9]]
    assert v2pe_positions(ids, C, [0.5, 0.25]).tolist() == [[0, 1, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 7.25, 7.5, 9, 10]]
    assert v2pe_positions(ids, C, 1.0).tolist() == [list(range(14))]
    # left padding is skipped; packed sub-samples restart at 0
    padded = torch.tensor([[0, 0, START, C, C, END, 7]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1]])
    assert v2pe_positions(padded, C, 0.5, attention_mask=mask).tolist() == [[0, 0, 0, 0.5, 1, 2, 3]]
    packed = torch.tensor([[1, START, C, C, END, 2, START, C, END]])
    documents = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 1]])
    assert v2pe_positions(packed, C, 0.25, document_ids=documents).tolist() == [[0, 1, 1.25, 1.5, 3, 4, 0, 0.25, 2]]


def test_random_deltas_come_from_the_papers_set():
    drawn = random_deltas(200, torch.Generator().manual_seed(0))
    assert set(drawn) <= set(DELTAS) and len(set(drawn)) > 5


def prompt(batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    text = lambda n: torch.randint(5, 100, (n,), generator=g).tolist()  # noqa: E731
    row = text(4) + [START] + [C] * 4 + [END] + text(3) + [START] + [C] * 4 + [END] + text(5)
    return torch.tensor([row] * batch)


def tiny_model(family: str, delta: float | None) -> InternVL:
    torch.manual_seed(0)
    config = tiny_config(family)
    config.v2pe_delta = delta
    model = InternVL(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2 if p.dim() > 1 else 0.05).add_(1 if p.dim() == 1 else 0)
    return model


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "qwen3_moe", "llama", "internlm2"])
def test_delta_one_reproduces_todays_logits_exactly(family):
    ids = prompt(2)
    pixels = torch.randn(4, 3, 56, 56)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    plain, unit = tiny_model(family, None), tiny_model(family, 1.0)
    with torch.no_grad():
        today = plain(ids, pixels, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        same = unit(ids, pixels, attention_mask=mask, position_ids=unit.positions(ids, mask, delta=1.0))
        default = plain(ids, pixels)
        default_unit = unit(ids, pixels)
    assert torch.equal(today, same) and torch.equal(default, default_unit)
    shifted = tiny_model(family, 0.25)
    with torch.no_grad():
        assert not torch.allclose(shifted(ids, pixels), default)  # delta < 1 does change the answer


def test_cached_decoding_and_left_padded_batches_match_full_forwards():
    model = tiny_model("qwen2", 0.25)
    ids = prompt()
    pixels = torch.randn(2, 3, 56, 56)
    config = GenerationConfig(max_new_tokens=6)
    tokens = generate(model, ids, None, pixels, config)[0]
    # every generated token is the argmax of a full (uncached) forward over prompt + tokens so far
    for k in range(len(tokens)):
        full = torch.cat([ids, torch.tensor([tokens[:k]], dtype=torch.long)], dim=1)
        with torch.no_grad():
            logits = model(full, pixels, position_ids=model.positions(full))
        assert int(logits[0, -1].argmax()) == tokens[k]
    # the same prompt left-padded next to a longer one answers the same
    longer = torch.cat([torch.tensor([[7, 8, 9]]), ids], dim=1)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1), longer])
    mask = torch.ones_like(batch)
    mask[0, :3] = 0
    rows = generate(model, batch, mask, torch.cat([pixels, pixels]), config)
    assert rows[0] == tokens


def test_delta_is_stored_in_both_layouts_and_checked(tmp_path):
    model = tiny_model("qwen2", 0.125)
    for layout in ("original", "hf"):
        save_model(model, tmp_path / layout, layout=layout)
        assert load_model(tmp_path / layout).config.v2pe_delta == 0.125
    with pytest.raises(ConfigError, match=r"v2pe_delta must be a number in \(0, 1\]"):
        InternVLConfig(v2pe_delta=2.0)


@pytest.mark.parametrize("delta", [0.5, 0.0625])
def test_the_servers_batched_answers_equal_each_prompt_alone(tmp_path, delta):
    """The slot cache continues each row from its last V2PE position (a float offset from its cache index),
    so requests with different images, joining at different steps, answer as `chat` answers them alone."""
    pytest.importorskip("fastapi")
    from PIL import Image

    import internvl
    from internvl.serve.engine import Engine, EngineSettings
    from tests.test_serve_engine import conversations, make_job, run
    from tests.tiny import build_chat_model_folder

    chat = internvl.load(build_chat_model_folder(tmp_path / "model"), max_tiles=4)
    chat.model.config.v2pe_delta = delta
    images = [Image.new("RGB", (300, 120), "red"), Image.new("RGB", (90, 90), "blue")]
    engine = Engine(chat, EngineSettings(max_batch=4, max_seq_len=1024))
    jobs = [make_job(chat, c, max_new_tokens=12) for c in conversations(images)]
    run(engine, [(0, jobs[0][0]), (0, jobs[1][0]), (2, jobs[2][0]), (5, jobs[3][0])])
    answers = [recorder.texts()[0] for _, recorder in jobs]
    assert answers == [chat.ask_messages(c, max_new_tokens=12) for c in conversations(images)]
    chat.model.config.v2pe_delta = None
    assert answers[1:] != [chat.ask_messages(c, max_new_tokens=12) for c in conversations(images)[1:]]


def test_the_delta_can_be_set_at_load_and_on_the_command_line(tmp_path, capsys):
    import internvl
    from internvl.cli import main
    from tests.tiny import build_chat_model_folder

    folder = build_chat_model_folder(tmp_path / "model")
    assert internvl.load(folder, v2pe_delta=0.25).model.config.v2pe_delta == 0.25
    with pytest.raises(ConfigError, match="v2pe_delta must be a number in"):
        internvl.load(folder, v2pe_delta=0)
    assert main(["chat", "--model", str(folder), "--v2pe-delta", "0.5", "--max-new-tokens", "3", "hi"]) == 0
    assert main(["chat", "--model", str(folder), "--v2pe-delta", "3", "hi"]) == 2
    assert "v2pe_delta must be a number in (0, 1]" in capsys.readouterr().err


# -- training (v2pe.mode in the SFT recipe) ---------------------------------------------------------------


def test_training_with_a_fixed_step_of_one_is_ordinary_training(tmp_path):
    from tests.test_train_support import losses, tiny_model_folder, tiny_recipe

    model = tiny_model_folder(tmp_path / "model")
    from internvl.train.sft import run

    run(tiny_recipe(model, tmp_path / "plain", steps=3))
    run(tiny_recipe(model, tmp_path / "fixed-1", "v2pe.mode=fixed", "v2pe.delta=1.0", steps=3))
    run(tiny_recipe(model, tmp_path / "fixed-quarter", "v2pe.mode=fixed", "v2pe.delta=0.25", steps=3))
    assert losses(tmp_path / "plain") == pytest.approx(losses(tmp_path / "fixed-1"), abs=1e-6)
    assert losses(tmp_path / "plain")[1:] != pytest.approx(losses(tmp_path / "fixed-quarter")[1:], abs=1e-4)


def test_random_steps_resume_exactly_and_the_model_keeps_its_inference_step(tmp_path):
    from internvl.train.sft import export_model, run
    from tests.test_train_support import losses, tiny_model_folder, tiny_recipe

    model = tiny_model_folder(tmp_path / "model")
    overrides = ("v2pe.mode=random", "v2pe.delta=0.125")
    run(tiny_recipe(model, tmp_path / "whole", *overrides, steps=4))
    run(tiny_recipe(model, tmp_path / "cut", *overrides, "train.stop_at_step=2", steps=4))
    run(tiny_recipe(model, tmp_path / "cut", *overrides, steps=4))
    assert losses(tmp_path / "whole") == losses(tmp_path / "cut")
    exported = export_model(tmp_path / "whole", tmp_path / "exported")
    assert load_model(exported).config.v2pe_delta == 0.125


def test_the_training_positions_are_fractional_per_image(tmp_path):
    from internvl.train.distributed import Distributed
    from internvl.train.sft import SFTSteps
    from tests.test_train_support import tiny_model_folder, tiny_recipe

    folder = tiny_model_folder(tmp_path / "model")
    config = tiny_recipe(folder, tmp_path / "run", "v2pe.mode=random")
    model = load_model(folder)
    steps = SFTSteps(model, config, Distributed())
    ids = torch.tensor([[1, 2, IMAGE_TOKEN_ID, IMAGE_TOKEN_ID, IMAGE_TOKEN_ID, 3, IMAGE_TOKEN_ID, IMAGE_TOKEN_ID, 4]])
    draws = [steps.v2pe_positions({"input_ids": ids}) for _ in range(8)]
    assert steps.v2pe_draws == 8
    assert any(bool((d != d.round()).any()) for d in draws)  # some image got a step below 1
    assert all(float(d[0, 5]) == float(d[0, 4]).__ceil__() + 1 for d in draws)  # the token after an image
    with pytest.raises(ConfigError, match="v2pe.delta must be a number in"):
        from internvl.train.sft import validate

        validate(tiny_recipe(folder, tmp_path / "run", "v2pe.mode=fixed", "v2pe.delta=0"))


def test_the_context_check_counts_positions_under_v2pe(tmp_path):
    """A prompt with more tokens than the context fits when its V2PE positions do (many images)."""
    from PIL import Image

    import internvl
    from internvl.errors import InputError
    from tests.tiny import build_chat_model_folder

    chat = internvl.load(build_chat_model_folder(tmp_path / "model"), max_tiles=1)
    images = [Image.new("RGB", (112, 112), c) for c in ("red", "blue", "green", "white", "black", "gray") * 4]
    tokens = chat.processor([{"role": "user", "content": "Which one is red?"}], images=images).input_ids.shape[0]
    chat.model.config.text.max_position_embeddings = tokens - 1
    with pytest.raises(InputError, match=f"{tokens} tokens long and the model's context is {tokens - 1}"):
        chat.ask("Which one is red?", images=images, max_new_tokens=2)
    chat.model.config.v2pe_delta = 1 / 16
    assert isinstance(chat.ask("Which one is red?", images=images, max_new_tokens=2), str)
