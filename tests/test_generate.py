"""Generation (internvl.generate) on tiny random models, CPU, fp32.

Proof against transformers: greedy tokens equal `InternVLForConditionalGeneration.generate` for every
backbone, as loaded and as prepared for a CPU with our kernels (fused decode steps), (InternLM2 through its fused original-layout checkpoint vs the equivalent Llama), on one
left-padded batch whose rows have 2 tiles, no image and 1 tile. Then our own properties: batched ==
alone, KV-cached == full recompute, sampling rules (logit processors compared with transformers'
processors on the same tensors), stop rules, streaming, and the text streamer on multi-byte text.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from internvl.errors import ConfigError, InputError
from internvl.generate import (
    GenerationConfig,
    TextStream,
    apply_repetition_penalty,
    generate,
    pick_tokens,
    present_tokens,
    stream,
    stream_text,
    top_k_filter,
    top_p_filter,
)
from internvl.model.cache import KVCache
from internvl.model.cpu_kernels import block_kernels
from internvl.model.internvl import InternVL
from internvl.model.kernel_layer import KernelDecoderLayer
from internvl.model.linear import choose_cpu_kernels, fast_fp32_linears
from internvl.model.llm import MoEMLP
from internvl.weights import load_model
from tests.test_hf_parity import write_internlm2_original
from tests.tiny import IMAGE_TOKEN_ID, IMG_END, IMG_START, TOKENS_PER_TILE, build_generation_model

NEW_TOKENS = 64


# ----------------------------------------------------------------------------------------------
# Fixtures


def prompt_rows(seed: int = 0) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Three conversations: a 2-tile image, text only, a 1-tile image; different lengths.
    Returns the token rows and, per row, its tiles (3, 448, 448) stacked (or an empty (0, ...) tensor)."""
    g = torch.Generator().manual_seed(seed)

    def text(n: int) -> list[int]:
        return torch.randint(0, IMG_START, (n,), generator=g).tolist()

    def image(tiles: int) -> list[int]:
        return [IMG_START] + [IMAGE_TOKEN_ID] * (TOKENS_PER_TILE * tiles) + [IMG_END]

    rows = [text(4) + image(2) + text(5), text(9), text(3) + image(1) + text(6)]
    tiles = [torch.randn(n, 3, 448, 448, generator=g) for n in (2, 0, 1)]
    return rows, tiles


def left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row)
        mask[i, length - len(row) :] = 1
    return ids, mask


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch():
    rows, tiles = prompt_rows()
    ids, mask = left_pad(rows)
    return ids, mask, torch.cat(tiles), rows, tiles


def reference_and_ours(tmp_path_factory, family: str, seed: int):
    hf_model = build_generation_model(family, seed=seed)
    hf_model.generation_config.eos_token_id = None  # all NEW_TOKENS come out
    folder = tmp_path_factory.mktemp(family)
    hf_model.save_pretrained(folder)
    return hf_model, load_model(folder).eval()


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    """(transformers model, our model) for the Qwen2 backbone, shared by the tests of our own properties."""
    return reference_and_ours(tmp_path_factory, "qwen2", seed=11)


def transformers_greedy(hf_model, ids, mask, pixels, **kwargs) -> list[list[int]]:
    with torch.no_grad():
        out = hf_model.generate(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=pixels,
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            pad_token_id=0,
            **kwargs,
        )
    assert out.shape[1] == ids.shape[1] + NEW_TOKENS
    return out[:, ids.shape[1] :].tolist()


def assert_not_trivial(rows: list[list[int]]) -> None:
    """The comparison means something only if the continuations do not collapse into a loop of 1-2 tokens."""
    for row in rows:
        assert len(set(row)) >= 10, f"degenerate continuation {row}"


# ----------------------------------------------------------------------------------------------
# Parity with transformers' generate


@pytest.mark.parametrize("family,seed", [("qwen2", 1), ("qwen3", 1), ("qwen3_moe", 1), ("llama", 1)])
@pytest.mark.parametrize("cpu_kernels", [False, True], ids=["pytorch", "cpu-kernels"])
def test_greedy_matches_transformers(tmp_path_factory, batch, family, seed, cpu_kernels):
    """cpu-kernels: the model as `internvl.load` prepares it on a CPU where our kernels build: each decode
    step of a layer one call of `decoder_layer_step` (MoE layers excepted), the projections on our kernel."""
    ids, mask, pixels, _, _ = batch
    hf_model, model = reference_and_ours(tmp_path_factory, family, seed)
    if cpu_kernels:
        if shutil.which("c++") is None:
            pytest.skip("no C++ compiler on this machine: our CPU kernels cannot build")
        assert block_kernels() is not None, "a C++ compiler is here, yet our CPU kernels did not build (see the log)"
        choose_cpu_kernels(model)
        fast_fp32_linears(model.language)
        fused = [layer for layer in model.language.layers if not isinstance(layer.mlp, MoEMLP)]
        assert fused and all(isinstance(layer, KernelDecoderLayer) for layer in fused)
        step = torch.zeros(1, 1, model.config.text.hidden_size)
        with torch.inference_mode():
            assert all(layer.step_operands(step, KVCache.for_model(model, 1, 4)) is not None for layer in fused)
    expected = transformers_greedy(hf_model, ids, mask, pixels)
    assert_not_trivial(expected)
    assert generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=NEW_TOKENS)) == expected


def test_internlm2_greedy_matches_equivalent_llama(tmp_path, batch):
    ids, mask, pixels, _, _ = batch
    hf_model = build_generation_model("llama", seed=2)
    hf_model.generation_config.eos_token_id = None
    hf_model.save_pretrained(tmp_path / "hf")
    write_internlm2_original(tmp_path / "hf", tmp_path / "internlm2")
    model = load_model(tmp_path / "internlm2").eval()
    assert model.config.text.family == "internlm2"
    model.image_token_id = IMAGE_TOKEN_ID
    expected = transformers_greedy(hf_model, ids, mask, pixels)
    assert_not_trivial(expected)
    assert generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=NEW_TOKENS)) == expected


def test_repetition_penalty_generation_matches_transformers(qwen2, batch):
    """One unpadded row (transformers also penalises padding ids, we do not; without padding they agree)."""
    hf_model, model = qwen2
    _, _, _, rows, tiles = batch
    ids = torch.tensor([rows[0]])
    mask = torch.ones_like(ids)
    expected = transformers_greedy(hf_model, ids, mask, tiles[0], repetition_penalty=1.5)
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, repetition_penalty=1.5)
    assert generate(model, ids, mask, tiles[0], config) == expected


def test_logit_processors_match_transformers():
    from transformers import RepetitionPenaltyLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=g) * 3  # positive and negative
    ids = torch.randint(0, 50, (4, 30), generator=g)  # with repeats
    expected = RepetitionPenaltyLogitsProcessor(1.3)(ids, logits.clone())
    ours = apply_repetition_penalty(logits, present_tokens(ids, None, 50), 1.3)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    for k in (1, 5, 50):
        torch.testing.assert_close(top_k_filter(logits, k), TopKLogitsWarper(k)(ids, logits.clone()), rtol=0, atol=0)
    for p in (0.05, 0.5, 0.9):
        # transformers removes `cumsum(ascending) <= 1 - p`; we remove `mass of more likely tokens >= p`:
        # the same sets up to float rounding at the boundary, which random logits do not hit
        kept_ours = torch.isfinite(top_p_filter(logits, p))
        kept_theirs = torch.isfinite(TopPLogitsWarper(p)(ids, logits.clone()))
        assert torch.equal(kept_ours, kept_theirs), p


def test_repetition_penalty_ignores_padding():
    ids = torch.tensor([[7, 7, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1]])
    present = present_tokens(ids, mask, 10)
    assert present[0].nonzero().flatten().tolist() == [3, 4]


# ----------------------------------------------------------------------------------------------
# Our own properties: batching, cache, stopping, streaming


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_batched_equals_alone(qwen2, batch, penalty):
    """Rows with 2 tiles, no image and 1 tile; row 1 hits a stop token early and leaves the batch."""
    _, model = qwen2
    ids, mask, pixels, rows, tiles = batch
    free = generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=NEW_TOKENS, repetition_penalty=penalty))
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, repetition_penalty=penalty, stop_token_ids=[free[1][5]])
    together = generate(model, ids, mask, pixels, config)
    assert len(together[1]) <= 6 and max(len(r) for r in together) > 6
    for row, row_tiles, got in zip(rows, tiles, together):
        alone_pixels = row_tiles if len(row_tiles) else None
        assert generate(model, torch.tensor([row]), None, alone_pixels, config) == [got]


def test_precomputed_image_features(qwen2, batch):
    _, model = qwen2
    ids, mask, pixels, _, _ = batch
    config = GenerationConfig(max_new_tokens=16)
    with torch.no_grad():
        features = model.encode_images(pixels)
    expected = generate(model, ids, mask, pixels, config)
    assert generate(model, ids, mask, None, config, image_features=features) == expected


def greedy_uncached(model: InternVL, ids, mask, pixels, steps: int) -> list[list[int]]:
    """The definition: a full forward over the whole sequence for every new token, no cache.
    (Generated ids are embedded as plain tokens: a tiny random model may well emit <IMG_CONTEXT>.)"""
    new = torch.zeros(ids.shape[0], 0, dtype=torch.long)
    with torch.no_grad():
        prompt_embeds = model.embed(ids, pixels)  # (batch, prompt, d)
        for _ in range(steps):
            embeds = torch.cat([prompt_embeds, model.language.embed(new)], dim=1)
            full_mask = torch.cat([mask, torch.ones_like(new)], dim=1)
            positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
            hidden = model.language(embeds, positions, full_mask)  # (batch, seq, d)
            token = model.language.lm_head(hidden[:, -1]).argmax(-1, keepdim=True)
            new = torch.cat([new, token], dim=1)
    return new.tolist()


def test_cached_equals_uncached(qwen2, batch):
    _, model = qwen2
    ids, mask, pixels, _, _ = batch
    cached = generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=32))
    assert cached == greedy_uncached(model, ids, mask, pixels, 32)


def test_stop_tokens_end_each_row_at_its_first_stop(qwen2, batch):
    _, model = qwen2
    ids, mask, pixels, _, _ = batch
    free = generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=NEW_TOKENS))
    stop = free[1][5]  # row 1 stops at its 6th token at the latest; others wherever `stop` first occurs
    stopped = generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=NEW_TOKENS, stop_token_ids=[stop]))
    for row_free, row_stopped in zip(free, stopped):
        end = row_free.index(stop) + 1 if stop in row_free else len(row_free)
        assert row_stopped == row_free[:end]  # the stop token is included
    assert len(stopped[1]) <= 6


def tiny_decode(ids: list[int]) -> str:
    """A fake tokenizer: token i is two letters, so a stop string can start inside a token."""
    return "".join(chr(97 + i % 26) + chr(97 + i // 26 % 26) for i in ids)


def test_stop_strings_end_generation(qwen2, batch):
    _, model = qwen2
    ids, mask, pixels, _, _ = batch
    free = generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=NEW_TOKENS))
    # a stop string straddling tokens 10 and 11 of row 0 (last letter of one, first of the next)
    stop_string = tiny_decode(free[0][10:12])[1:3]
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, stop_strings=[stop_string])
    stopped = generate(model, ids, mask, pixels, config, decode=tiny_decode)
    for row_free, row_stopped in zip(free, stopped):
        end = next((n for n in range(1, len(row_free) + 1) if stop_string in tiny_decode(row_free[:n])), len(row_free))
        assert row_stopped == row_free[:end]
    assert len(stopped[0]) <= 12
    with pytest.raises(InputError):
        generate(model, ids, mask, pixels, config)  # stop strings need decode


def test_stream_yields_the_same_tokens(qwen2, batch):
    _, model = qwen2
    ids, mask, pixels, _, _ = batch
    free = generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=20))
    config = GenerationConfig(max_new_tokens=20, stop_token_ids=[free[2][3]])
    expected = generate(model, ids, mask, pixels, config)
    steps = list(stream(model, ids, mask, pixels, config))
    assert all(len(step) == 3 for step in steps)
    for row in range(3):
        column = [step[row] for step in steps]
        produced = [t for t in column if t is not None]
        assert produced == expected[row]
        assert all(t is None for t in column[len(produced) :])  # a finished row stays finished


def test_max_new_tokens_zero_and_bad_inputs(qwen2, batch):
    _, model = qwen2
    ids, mask, pixels, _, _ = batch
    assert generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=0)) == [[], [], []]
    right_padded = torch.flip(mask, dims=[1])
    with pytest.raises(InputError, match="LEFT-padded"):
        generate(model, ids, right_padded, pixels)
    for bad in (
        dict(temperature=-1),
        dict(top_k=-1),
        dict(top_p=0),
        dict(top_p=1.5),
        dict(repetition_penalty=0),
        dict(max_new_tokens=-1),
        dict(stop_strings=[""]),
    ):
        with pytest.raises(ConfigError):
            GenerationConfig(**bad)


# ----------------------------------------------------------------------------------------------
# Sampling


def test_sampling_is_seeded(qwen2, batch):
    _, model = qwen2
    ids, mask, pixels, _, _ = batch
    config = GenerationConfig(max_new_tokens=24, temperature=1.0, seed=123)
    first = generate(model, ids, mask, pixels, config)
    torch.manual_seed(0)  # global RNG state must not matter
    assert generate(model, ids, mask, pixels, config) == first
    other = generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=24, temperature=1.0, seed=124))
    assert other != first


def test_degenerate_sampling_equals_greedy(qwen2, batch):
    _, model = qwen2
    ids, mask, pixels, _, _ = batch
    greedy = generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=24))
    for kwargs in (dict(temperature=1.0, top_k=1), dict(temperature=1.0, top_p=1e-6), dict(temperature=1e-4)):
        sampled = generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=24, seed=5, **kwargs))
        assert sampled == greedy, kwargs


def test_high_temperature_spreads(qwen2, batch):
    _, model = qwen2
    ids, mask, pixels, _, _ = batch
    rows = generate(model, ids, mask, pixels, GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=1e3, seed=1))
    tokens = [t for row in rows for t in row]
    # near-uniform over 320 tokens: 192 draws give ~150 distinct tokens; greedy gives far fewer
    assert len(set(tokens)) > 100


def test_sampling_frequencies_follow_the_distribution():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 8, generator=g).expand(4000, 8)  # 4000 draws of one distribution
    generator = torch.Generator().manual_seed(1)

    def frequencies(config: GenerationConfig) -> torch.Tensor:
        draws = torch.cat([pick_tokens(logits, config, generator=generator) for _ in range(5)])
        return torch.bincount(draws, minlength=8).float() / draws.numel()

    for temperature in (0.5, 1.0, 2.0):
        expected = (logits[0] / temperature).softmax(-1)
        got = frequencies(GenerationConfig(temperature=temperature))
        assert (got - expected).abs().max() < 0.02, temperature  # 20000 draws: sd of a frequency <= 0.0036
    top3 = set(logits[0].topk(3).indices.tolist())
    got = frequencies(GenerationConfig(temperature=1.0, top_k=3))
    assert set(got.nonzero().flatten().tolist()) == top3
    probs = logits[0].softmax(-1)
    order = probs.argsort(descending=True)
    nucleus = int((probs[order].cumsum(0) < 0.7).sum()) + 1  # smallest prefix reaching 0.7
    got = frequencies(GenerationConfig(temperature=1.0, top_p=0.7))
    assert set(got.nonzero().flatten().tolist()) == set(order[:nucleus].tolist())


# ----------------------------------------------------------------------------------------------
# Text streaming


def byte_decode(ids: list[int]) -> str:
    """A fake byte-level tokenizer: token i < 256 is byte i."""
    return bytes(ids).decode("utf-8", errors="replace")


TEXT = "héllo wörld — 你好, 😀 ok"


def as_steps(tokens: list[int]) -> list[list[int | None]]:
    return [[t] for t in tokens]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_text_stream_never_splits_a_character(chunk):
    data = list(TEXT.encode("utf-8"))

    # tokens of `chunk` bytes each, cutting across multi-byte characters; the decode of a token list
    # joins their bytes
    vocabulary = [bytes(data[i : i + chunk]) for i in range(0, len(data), chunk)]

    def decode(ids: list[int]) -> str:
        return b"".join(vocabulary[i] for i in ids).decode("utf-8", errors="replace")

    pieces = [piece for _, piece in stream_text(as_steps(list(range(len(vocabulary)))), decode)]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == TEXT
    if chunk == 1:
        assert len(pieces) == len(TEXT)  # released as soon as each character is complete


def test_text_stream_with_leading_space_tokenizer():
    """A sentencepiece-like decode drops the leading space of the first token; pieces must still join right."""
    words = ["▁Hello", ",", "▁wor", "ld", "▁again"]

    def decode(ids: list[int]) -> str:
        return "".join(words[i] for i in ids).replace("▁", " ").lstrip(" ")

    pieces = [piece for _, piece in stream_text(as_steps(list(range(len(words)))), decode)]
    assert "".join(pieces) == decode(list(range(len(words)))) == "Hello, world again"


def test_text_stream_stop_strings_and_stop_tokens():
    data = list("abc STOP def".encode()) + [300]  # 300: a stop token id, never decoded

    def decode(ids: list[int]) -> str:
        assert 300 not in ids
        return bytes(ids).decode()

    pieces = [piece for _, piece in stream_text(as_steps(data), decode, stop_strings=["STOP"], stop_token_ids=[300])]
    assert "".join(pieces) == "abc "
    assert all("S" not in piece for piece in pieces)  # the possible start of "STOP" was held back

    # a held-back tail that turns out not to be a stop string is released
    text = TextStream(byte_decode, stop_strings=["STOP"])
    released = "".join(text.push(b) for b in b"a ST") + text.push(ord("x")) + text.finish()
    assert released == "a STx" and not text.stopped


def test_text_stream_rows_are_independent():
    steps = [[ord("a"), 0xC3], [ord("b"), 0xA9], [None, ord("!")]]  # row 1: "é" split over two steps
    got = list(stream_text(steps, byte_decode))
    assert got == [(0, "a"), (0, "b"), (1, "é"), (1, "!")]


def test_stream_text_over_generation(qwen2, batch):
    """The end-to-end use: stream_text(stream(...)) gives, per row, the decode of generate's tokens."""
    _, model = qwen2
    ids, mask, pixels, _, _ = batch
    config = GenerationConfig(max_new_tokens=16)
    tokens = generate(model, ids, mask, pixels, config)
    texts = ["", "", ""]
    for row, piece in stream_text(stream(model, ids, mask, pixels, config), tiny_decode):
        texts[row] += piece
    assert texts == [tiny_decode(row) for row in tokens]


def test_extreme_sampling_numbers_sample_or_are_refused():
    """Hostile but legal numbers sample without nan (issue: a 500 from the server); non-finite ones are refused."""
    from internvl.errors import ConfigError
    from internvl.generate import GenerationConfig, pick_tokens

    logits = torch.randn(3, 64) * 5
    present = torch.zeros(3, 64, dtype=torch.bool)
    present[:, :20] = True
    generator = torch.Generator().manual_seed(0)
    tiny = pick_tokens(logits, GenerationConfig(temperature=1e-300), present, generator)
    assert torch.equal(tiny, logits.argmax(-1))  # a vanishing temperature is greedy, not nan
    for config in (
        GenerationConfig(temperature=0.7, repetition_penalty=1e-300),
        GenerationConfig(temperature=1e300, top_k=3, top_p=0.5),
        GenerationConfig(temperature=1.0, repetition_penalty=1e300),
    ):
        picked = pick_tokens(logits, config, present, generator)
        assert picked.shape == (3,) and bool(((picked >= 0) & (picked < 64)).all())
    for bad in ({"temperature": float("nan")}, {"top_p": float("nan")}, {"repetition_penalty": float("inf")}):
        with pytest.raises(ConfigError, match="must be a finite number"):
            GenerationConfig(**bad)


def test_an_unavailable_device_is_one_line():
    from internvl.chat import check_device
    from internvl.errors import ConfigError

    check_device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            check_device("cuda")
