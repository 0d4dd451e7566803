"""InternVL3.5-Flash: the second connector, the Visual Resolution Router, per-tile resolutions in the model,
the chat and the server, checkpoints in both layouts (docs/flash.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from internvl.chat import Chat, load
from internvl.errors import InputError
from internvl.model.flash import RouterPooling, choose_compressed, compress_prompt
from internvl.model.internvl import InternVL
from internvl.serve.engine import Engine, EngineSettings
from internvl.weights import load_model, save_model
from tests.test_serve_engine import make_job, run
from tests.test_train_support import tiny_config
from tests.tiny import build_chat_model_folder

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# The official modules, written from the remote code of the InternVL3_5-*-Flash releases
# (modeling_internvl_chat.py: mlp2, CrossAttentionPooling, Gating, pixel_shuffle), as the reference.


def official_pixel_shuffle(x: torch.Tensor, scale_factor: float) -> torch.Tensor:
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
    return x.permute(0, 2, 1, 3).contiguous()  # ps_version v2


class OfficialPooling(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query_token = nn.Parameter(torch.randn(1, dim))
        for i in range(1, 5):
            setattr(self, f"attn{i}", nn.MultiheadAttention(embed_dim=dim, num_heads=16, batch_first=True))
            setattr(self, f"norm{i}", nn.LayerNorm(dim))

    def forward(self, batched_tokens: list[torch.Tensor]) -> torch.Tensor:
        padded = torch.stack(batched_tokens)
        mask = torch.zeros(padded.shape[:2], dtype=torch.bool)
        query = self.query_token.unsqueeze(0).expand(len(batched_tokens), -1, -1)
        out = self.norm1(self.attn1(query, padded, padded, key_padding_mask=mask)[0])
        out = self.norm2(self.attn2(out, padded, padded, key_padding_mask=mask)[0])
        out = self.norm2(self.attn2(out, padded, padded, key_padding_mask=mask)[0])  # attn2 again, as released
        out = self.norm2(self.attn2(out, padded, padded, key_padding_mask=mask)[0])
        return out.squeeze(1)


class OfficialGating(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        mid = hidden_size * 4

        def block() -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(hidden_size, mid), nn.GELU(), nn.Dropout(0.1), nn.Linear(mid, hidden_size), nn.Dropout(0.1),
                nn.LayerNorm(hidden_size),
            )  # fmt: skip

        self.block1, self.block2, self.block3, self.block4 = block(), block(), block(), block()
        self.gate = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in (self.block1, self.block2, self.block3, self.block4):
            x = x + block(x)
        return torch.softmax(self.gate(x), dim=-1)


class OfficialFlashParts(nn.Module):
    def __init__(self, d_vit: int, d_llm: int, ratio: float) -> None:
        super().__init__()
        d_in = d_vit * int(1 / ratio) ** 4
        self.mlp2 = nn.Sequential(
            nn.LayerNorm(d_in), nn.Linear(d_in, d_llm * 2), nn.GELU(), nn.Dropout(0.1),
            nn.Linear(d_llm * 2, d_llm * 2), nn.GELU(), nn.Dropout(0.1), nn.Linear(d_llm * 2, d_llm),
        )  # fmt: skip
        self.pooling_before_gating = OfficialPooling(d_vit)
        self.gating = OfficialGating(d_vit)


def flash_model(seed: int = 0) -> InternVL:
    torch.manual_seed(seed)
    model = InternVL(dataclasses.replace(tiny_config(), flash=True))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.2 if param.dim() > 1 else 0.05).add_(1 if param.dim() == 1 else 0)
    model.image_token_id = model.config.image_token_id
    return model.eval()


def test_connector_and_router_match_the_official_modules_on_their_checkpoint(tmp_path):
    ours = flash_model()
    save_model(ours, tmp_path / "m", layout="original")
    stored = load_file(str(tmp_path / "m" / "model.safetensors"))
    config = ours.config
    official = OfficialFlashParts(config.vision.hidden_size, config.text.hidden_size, config.downsample_ratio)
    wanted = {k: v for k, v in stored.items() if k.startswith(("mlp2.", "pooling_before_gating.", "gating."))}
    assert set(wanted) == set(official.state_dict())  # the official names, no more, no less
    official.load_state_dict(wanted)
    official.eval()

    grid = torch.randn(3, 4, 4, config.vision.hidden_size)  # (tiles, rows, cols, d_vit) ViT patches
    with torch.no_grad():
        shuffled = official_pixel_shuffle(grid, config.downsample_ratio**2)
        expected_small = official.mlp2(shuffled.reshape(3, -1, shuffled.shape[-1]))
        expected_probs = official.gating(official.pooling_before_gating(list(grid.reshape(3, -1, grid.shape[-1]))))
        small = ours.connect(grid, torch.ones(3, dtype=torch.bool))
        probability = ours.compress_probability(grid)
    torch.testing.assert_close(small, expected_small.reshape(-1, config.text.hidden_size), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(probability, expected_probs[:, 0], rtol=1e-5, atol=1e-6)  # column 0: compress


def test_both_layouts_round_trip_with_the_conversion_script_names(tmp_path):
    model = flash_model()
    save_model(model, tmp_path / "hf", layout="hf")
    keys = set(load_file(str(tmp_path / "hf" / "model.safetensors")))
    for name in (
        "mlp2.norm.weight",
        "mlp2.dense3.bias",
        "pooling_before_gating.query_token",
        "pooling_before_gating.attn4.value.weight",
        "pooling_before_gating.attn1.out_proj.bias",
        "gating.block2.dense_in.weight",
        "gating.block4.norm.bias",
        "gating.gate_proj.weight",
        "gating.gate_norm.weight",
    ):
        assert name in keys
    for layout in ("hf", "original"):
        save_model(model, tmp_path / layout, layout=layout, overwrite=True)
        loaded = load_model(tmp_path / layout)
        assert loaded.config.flash
        assert loaded.config.flash_absolute_threshold == model.config.flash_absolute_threshold
        for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), name


def test_choices_follow_the_official_rule_per_prompt():
    p = torch.tensor([0.2, 0.6, 0.9, 0.7, 0.4])
    assert not choose_compressed(p, "full", [3, 2], 0.5, None).any()
    assert choose_compressed(p, "compressed", [3, 2], 0.5, None).all()
    assert choose_compressed(p, "router", [3, 2], 0.5, None).tolist() == [False, True, True, True, False]
    # relative 0.5: above the median of its own prompt's tiles (strictly), as the official quantile rule
    assert choose_compressed(p, "router", [3, 2], 0.5, 0.5).tolist() == [False, False, True, True, False]
    assert choose_compressed(p, "router", [3, 2], 0.0, 0.0).tolist() == [False, True, True, True, False]


def test_a_compressed_tile_keeps_the_first_of_its_context_tokens():
    ctx = 9
    ids = torch.tensor([1, 7, ctx, ctx, ctx, ctx, ctx, ctx, ctx, ctx, 8, 2])  # two tiles of 4 tokens
    cut = compress_prompt(ids, ctx, torch.tensor([False, True]), full_tokens=4, small_tokens=1)
    assert cut.tolist() == [1, 7, ctx, ctx, ctx, ctx, ctx, 8, 2]
    with pytest.raises(InputError, match="3 tiles of 4"):
        compress_prompt(ids, ctx, torch.tensor([False, True, True]), 4, 1)


def test_forward_reads_each_tile_at_its_resolution():
    model = flash_model()
    config, ctx = model.config, model.image_token_id
    full, small = config.num_image_token, config.num_compressed_image_token
    pixels = torch.randn(2, 3, 56, 56)
    ids = torch.tensor([[3] + [ctx] * (2 * full) + [4, 5]])
    compressed = torch.tensor([True, False])
    cut = compress_prompt(ids[0], ctx, compressed, full, small)[None]
    with torch.no_grad():
        grid = model.vision_grid(pixels)
        manual = torch.cat([model.compressed_projector(official_pixel_shuffle(grid[:1], 0.25).reshape(1, -1, 512))[0],
                            model.projector(official_pixel_shuffle(grid[1:], 0.5).reshape(1, -1, 128))[0]])  # fmt: skip
        logits = model(cut, pixels, compressed=compressed)
        expected = model(cut, image_features=manual)
        at_full = model(ids, pixels, compressed=torch.tensor([False, False]))
        plain = model(ids, pixels)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(at_full, plain)


@pytest.fixture(scope="module")
def flash_chat(tmp_path_factory) -> Chat:
    return load(build_chat_model_folder(tmp_path_factory.mktemp("tiny-flash"), flash=True), max_tiles=4)


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    return [Image.new("RGB", (300, 120), "red"), Image.new("RGB", (90, 90), "blue")]


def test_a_flash_model_answers_with_the_router_by_default(flash_chat):
    assert flash_chat.visual_resolution == "router"


def test_router_thresholds_at_the_extremes_equal_the_forced_modes(flash_chat, pictures):
    chat, config = flash_chat, flash_chat.model.config
    questions, images = ["what is it?", "which is red?"], [[pictures[0]], [pictures[1], pictures[0]]]
    answers = {}
    for mode in ("full", "compressed"):
        chat.visual_resolution = mode
        answers[mode] = chat.ask_batch(questions, images, max_new_tokens=12)
    assert answers["full"] != answers["compressed"]  # the two connectors differ (random weights)
    chat.visual_resolution = "router"
    try:
        for threshold, mode in ((0.0, "compressed"), (1.0, "full")):  # P(compress) >= 0 always, >= 1 never
            config.flash_absolute_threshold = threshold
            assert chat.ask_batch(questions, images, max_new_tokens=12) == answers[mode]
            assert [chat.ask(q, images=i, max_new_tokens=12) for q, i in zip(questions, images)] == answers[mode]
    finally:
        config.flash_absolute_threshold = 0.5


def test_the_server_engine_answers_compressed_tiles_as_the_chat_does(flash_chat, pictures):
    chat = flash_chat
    chat.visual_resolution = "compressed"
    try:
        messages = [{"role": "user", "content": [{"type": "image", "image": pictures[0]}, "what is it?"]}]
        job, recorder = make_job(chat, messages, max_new_tokens=10)
        run(Engine(chat, EngineSettings(max_batch=2, max_seq_len=1024)), [(0, job)])
        assert recorder.texts() == [chat.ask_messages(messages, max_new_tokens=10)]
    finally:
        chat.visual_resolution = "router"


def test_a_plain_model_refuses_compressed_tiles(tmp_path):
    folder = build_chat_model_folder(tmp_path / "plain")
    with pytest.raises(InputError, match="needs a Flash model"):
        load(folder, visual_resolution="compressed")
    assert load(folder).visual_resolution == "full"


def test_cli_flags_reach_the_chat(tmp_path, capsys):
    from internvl.cli import main

    folder = build_chat_model_folder(tmp_path / "plain")
    assert (
        main(["chat", "hello", "--model", str(folder), "--visual-resolution", "router", "--max-new-tokens", "2"]) == 2
    )
    assert "needs a Flash model" in capsys.readouterr().err


def test_flash_config_keys_in_both_layouts(tmp_path):
    import json

    model = flash_model()
    model.config.flash_relative_threshold = 0.25
    save_model(model, tmp_path / "o", layout="original")
    raw = json.loads(Path(tmp_path / "o" / "config.json").read_text())
    assert raw["flash_mode"] is True and raw["flash_relative_threshold"] == 0.25
    save_model(model, tmp_path / "h", layout="hf")
    raw = json.loads(Path(tmp_path / "h" / "config.json").read_text())
    assert raw["architectures"] == ["InternVLFlashForConditionalGeneration"]
    assert load_model(tmp_path / "h").config.flash_relative_threshold == 0.25


def test_the_router_pooling_projects_attn2s_keys_and_values_once_with_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    pooling = RouterPooling(64)
    patches = torch.randn(3, 20, 64)

    def with_module_calls(pool: RouterPooling) -> torch.Tensor:  # the official forward: attn2 called 3 times
        out = pool.norm1(pool.attn1(pool.query.expand(3, 1, -1), patches, patches, need_weights=False)[0])
        for _ in range(3):
            out = pool.norm2(pool.attn2(out, patches, patches, need_weights=False)[0])
        return out[:, 0]

    expected = with_module_calls(pooling)
    expected.square().sum().backward()
    expected_grads = {name: p.grad.clone() for name, p in pooling.named_parameters() if p.grad is not None}
    pooling.zero_grad()
    got = pooling(patches)
    got.square().sum().backward()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    grads = {name: p.grad for name, p in pooling.named_parameters() if p.grad is not None}
    assert grads.keys() == expected_grads.keys() and any(name.startswith("attn2") for name in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-6, msg=name)
