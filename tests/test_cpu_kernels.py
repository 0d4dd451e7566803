"""Our compiled CPU kernels (`internvl.model.cpu_kernels`, csrc/block_quant.cpp): the q8_0 and q4_0 block
formats bit for bit against the `gguf` package (llama.cpp's reference quantizers, in Python), the kernels'
products against the same arithmetic in PyTorch, and the layers built on them."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from internvl.model import cpu_kernels, linear
from internvl.model.cache import KVCache
from internvl.model.cpu_kernels import (
    argmax_rows,
    block_kernels,
    dequantize_q4_0,
    dequantize_q8_0,
    interleave,
    quantize_q4_0,
    quantize_q8_0,
)
from internvl.model.internvl import InternVL
from internvl.model.kernel_layer import KernelDecoderLayer
from internvl.model.linear import (
    KERNEL_MAX_ROWS,
    BlockQuantLinear,
    Int4Linear,
    Int8Linear,
    KernelLinear,
    KernelRMSNorm,
    choose_cpu_kernels,
    fast_fp32_linears,
    quantize_int4,
    quantize_int8,
    replace_linears,
)
from internvl.model.llm import DecoderLayer, MoEMLP, build_attention_mask, rope_cos_sin
from internvl.model.norm import RMSNorm
from tests.test_train_support import tiny_config

QUANTIZERS = {"q8_0": (quantize_q8_0, dequantize_q8_0), "q4_0": (quantize_q4_0, dequantize_q4_0)}

# Where a C++ compiler is at hand the kernels must build: a failed build fails these tests, not skips them.
needs_kernels = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler on this machine")


@pytest.fixture(scope="module")
def kernels():
    built = block_kernels()
    assert built is not None, "a C++ compiler is here, yet internvl's CPU kernels did not build (see the log)"
    return built


def weights(out: int, inputs: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, inputs, generator=generator) * 0.05
    weight[0, :32] = 0.0  # an all-zero block: scale 0
    weight[1, 5] = 0.5  # a block with one outlier
    return weight


@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
def test_quantizers_match_llama_cpp_bit_for_bit(kind):
    gguf = pytest.importorskip("gguf")  # a [dev] dependency
    weight = weights(24, 128)
    values, scales = QUANTIZERS[kind][0](weight)
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[kind]
    reference = gguf.quants.quantize(weight.numpy(), qtype).reshape(24, 4, -1)  # blocks: fp16 scale, then values
    assert np.array_equal(reference[..., :2].copy().view(np.float16)[..., 0], scales.numpy())
    assert np.array_equal(reference[..., 2:].reshape(24, -1), values.view(torch.uint8).numpy())
    dequantized = gguf.quants.dequantize(reference.reshape(24, -1), qtype)
    assert np.array_equal(dequantized, QUANTIZERS[kind][1](values, scales).numpy())


def test_interleave_puts_four_bytes_of_each_of_8_rows_side_by_side_in_halves_of_16_row_groups():
    values = torch.arange(20 * 64, dtype=torch.int32).reshape(20, 64).to(torch.uint8)  # 2 blocks of 32 bytes
    scales = torch.arange(40, dtype=torch.float16).reshape(20, 2)
    grouped, grouped_scales = interleave(values, scales)
    assert grouped.shape == (2, 2, 512) and grouped_scales.shape == (2, 2, 16)
    # group 0, block 1: half 0's 8 runs, then half 1's; run 3 of half 1 holds bytes 12..15 of rows 8..15
    assert grouped[0, 1, 256 + 3 * 32 : 256 + 4 * 32].tolist() == values[8:16, 32 + 12 : 32 + 16].flatten().tolist()
    assert grouped[0, 1, 3 * 32 : 4 * 32].tolist() == values[:8, 32 + 12 : 32 + 16].flatten().tolist()
    assert grouped_scales[0, 1].tolist() == scales[:16, 1].tolist()
    padding = grouped[1].reshape(2, 2, 8, 8, 4)  # block, half, run, row, byte: group 1 holds rows 16..19
    assert (
        padding[:, 0, :, :4].flatten().tolist()
        == values[16:20].reshape(4, 2, 8, 4).permute(1, 2, 0, 3).flatten().tolist()
    )
    assert padding[:, 0, :, 4:].eq(0).all() and padding[:, 1].eq(0).all() and grouped_scales[1, :, 4:].eq(0).all()
    with pytest.raises(ValueError, match="block size 32"):
        quantize_q8_0(torch.randn(4, 40))


def reference_product(x: torch.Tensor, weight: torch.Tensor, kind: str) -> torch.Tensor:
    """The kernels' arithmetic in PyTorch: activations quantized per block of 32 (scale max|x| / levels,
    rounded half to even, as nearbyint; 8-bit against q4_0, 7-bit against q8_0), times the dequantized
    weights, in float64."""
    quantize, dequantize = QUANTIZERS[kind]
    blocks = x.reshape(len(x), -1, 32)
    scale = blocks.abs().amax(dim=2, keepdim=True) / (127 if kind == "q4_0" else 63)
    inverse = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
    activations = (torch.round(blocks * inverse) * scale).reshape(x.shape)
    return activations.double() @ dequantize(*quantize(weight)).double().T


@needs_kernels
@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
@pytest.mark.parametrize("rows", [1, 2, 5, 6, 7, 13])  # every activation-row tile of the kernel, and two passes
# 21 and 27 rows: padded to 32, the second group's second half all padding (21) or partly (27)
@pytest.mark.parametrize("shape", [(8, 32), (21, 96), (27, 64), (40, 256)])
def test_kernels_compute_the_quantized_product(kernels, kind, rows, shape):
    weight = weights(*shape)
    x = torch.randn(rows, shape[1], generator=torch.Generator().manual_seed(1))
    x[0, :32] = 0.0  # an all-zero activation block
    linear = kernels.q8_0x8_linear if kind == "q8_0" else kernels.q4_0x8_linear
    got = linear(x, *interleave(*QUANTIZERS[kind][0](weight)), None, shape[0])
    assert got.shape == (rows, shape[0])
    expected = reference_product(x, weight, kind)
    scale = (x.abs() @ weight.abs().T).double()
    assert torch.all((got.double() - expected).abs() <= 1e-5 * scale + 1e-6)


@needs_kernels
def test_kernels_add_the_bias_and_keep_leading_dimensions(kernels):
    weight, bias = weights(21, 64), torch.randn(21)
    x = torch.randn(2, 3, 64)
    grouped = interleave(*quantize_q4_0(weight))
    got = kernels.q4_0x8_linear(x, *grouped, bias, 21)
    assert got.shape == (2, 3, 21)
    assert torch.allclose(got, kernels.q4_0x8_linear(x.reshape(6, 64), *grouped, None, 21).reshape(2, 3, 21) + bias)


@needs_kernels
def test_kernels_refuse_mismatched_tensors(kernels):
    values, scales = interleave(*quantize_q8_0(weights(8, 64)))
    with pytest.raises(RuntimeError, match="inputs"):
        kernels.q8_0x8_linear(torch.randn(1, 96), values, scales, None, 8)
    with pytest.raises(RuntimeError, match="does not match"):
        kernels.q4_0x8_linear(torch.randn(1, 64), values, scales, None, 8)  # q8_0 bytes given as q4_0
    with pytest.raises(RuntimeError, match="out_features 17"):  # one group holds 16 rows
        kernels.q8_0x8_linear(torch.randn(1, 64), values, scales, None, 17)
    with pytest.raises(RuntimeError, match="bias"):
        kernels.q8_0x8_linear(torch.randn(1, 64), values, scales, torch.randn(7), 8)
    with pytest.raises(RuntimeError, match="x has 96 inputs, the weights 64"):
        kernels.fp32_linear(torch.randn(1, 96), torch.randn(8, 64), None)
    with pytest.raises(RuntimeError, match="takes float32"):
        kernels.fp32_linear(torch.randn(1, 64).double(), torch.randn(8, 64), None)
    with pytest.raises(RuntimeError, match="weight's size 64"):
        kernels.rms_norm(torch.randn(2, 96), torch.ones(64), 1e-6)


@needs_kernels
@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
def test_block_quant_linear_keeps_shapes_bias_and_dtype(kernels, kind):
    dense = nn.Linear(64, 20)
    layer = BlockQuantLinear(dense.weight, dense.bias, kind)
    x = torch.randn(2, 3, 64)
    with torch.no_grad():
        got, exact = layer(x), dense(x)
    assert got.shape == (2, 3, 20) and got.dtype == torch.float32
    bound = {"q8_0": 0.02, "q4_0": 0.15}[kind] * exact.abs().max()
    assert (got - exact).abs().max() < bound
    assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16


@needs_kernels
def test_quantize_int8_and_int4_use_the_block_kernels_and_keep_greedy_logits_close(kernels):
    torch.manual_seed(0)
    model = InternVL(tiny_config("qwen2")).eval()
    ids = torch.randint(0, model.config.text.vocab_size - 10, (2, 12))
    with torch.no_grad():
        expected = model(ids)
    for quantize, kind, tolerance in ((quantize_int8, "q8_0", 0.1), (quantize_int4, "q4_0", 0.5)):
        quantized = InternVL(tiny_config("qwen2")).eval()
        quantized.load_state_dict(model.state_dict())
        quantize(quantized.language)
        assert isinstance(quantized.language.lm_head, BlockQuantLinear) and quantized.language.lm_head.kind == kind
        with torch.no_grad():
            got = quantized(ids)
        assert (got - expected).abs().max() < tolerance * expected.std()


@needs_kernels
@pytest.mark.parametrize("rows", [1, 3, KERNEL_MAX_ROWS, KERNEL_MAX_ROWS + 1])  # the last: PyTorch's product
# in-features: 3 full 32-wide steps; one step, no 8-wide step, then 5 one by one; 7 steps, one 8-wide, none;
# rows longer than 2048 inputs, read 8 side by side in batch-1 (130 outputs: two threads' 65, 8 groups and one)
@pytest.mark.parametrize("shape", [(21, 96), (16, 37), (9, 232), (130, 2053)])
def test_kernel_linear_equals_nn_linear(kernels, rows, shape):
    dense = nn.Linear(shape[1], shape[0])
    layer = KernelLinear.from_linear(dense)
    assert layer.weight is dense.weight and layer.bias is dense.bias  # shared: the model still saves
    x = torch.randn(rows, shape[1])
    with torch.no_grad():
        assert torch.allclose(layer(x), dense(x), rtol=1e-5, atol=1e-5)
        assert torch.allclose(layer(x[:, None]), dense(x[:, None]), rtol=1e-5, atol=1e-5)  # leading dimensions
    assert torch.allclose(kernels.fp32_linear(x, dense.weight.detach(), None), x @ dense.weight.detach().T, atol=1e-5)
    x.requires_grad_(True)
    layer(x).sum().backward()  # with autograd: PyTorch's product, gradients flow
    assert x.grad is not None and dense.weight.grad is not None


@needs_kernels
def test_kernel_rms_norm_equals_rms_norm_and_keeps_autograd(kernels):
    norm = RMSNorm(96, 1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    fast = KernelRMSNorm.from_norm(norm)
    assert fast.weight is norm.weight
    x = torch.randn(2, 5, 96) * 3
    with torch.no_grad():
        assert torch.allclose(fast(x), norm(x), rtol=1e-5, atol=1e-6)
        half = x.to(torch.bfloat16)
        assert torch.equal(fast(half), norm(half))  # other dtypes: RMSNorm's own path
    x.requires_grad_(True)
    fast(x).sum().backward()
    assert x.grad is not None


@needs_kernels
def test_a_cpu_model_gets_the_kernels_and_keeps_its_logits_and_checkpoint(kernels, tmp_path):
    from internvl.weights import load_model, save_model

    torch.manual_seed(0)
    model = InternVL(tiny_config("qwen2")).eval()
    ids = torch.randint(0, model.config.text.vocab_size - 10, (2, 12))
    with torch.no_grad():
        expected = model(ids)
    choose_cpu_kernels(model)
    fast_fp32_linears(model.language)
    assert isinstance(model.language.norm, KernelRMSNorm) and isinstance(model.language.lm_head, KernelLinear)
    with torch.no_grad():
        assert torch.allclose(model(ids), expected, rtol=1e-4, atol=1e-5)
        assert torch.allclose(model(ids[:, :1]), expected[:, :1], rtol=1e-4, atol=1e-5)  # one row each: our kernel
    save_model(model, tmp_path / "saved")  # the same parameters under the same names
    reloaded = load_model(tmp_path / "saved", dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids), expected, rtol=1e-4, atol=1e-5)


def test_without_the_kernels_quantize_falls_back_to_pytorchs(monkeypatch):
    monkeypatch.setattr(linear, "block_kernels", lambda: None)
    model = InternVL(tiny_config("qwen2")).eval()
    quantize_int8(model.language)
    assert isinstance(model.language.lm_head, Int8Linear)
    model = InternVL(tiny_config("qwen2")).eval()
    quantize_int4(model.language)
    assert isinstance(model.language.lm_head, Int4Linear)


def test_the_kernels_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("INTERNVL_CPU_KERNELS", "0")
    cpu_kernels.block_kernels.cache_clear()
    try:
        assert cpu_kernels.block_kernels() is None
    finally:
        monkeypatch.delenv("INTERNVL_CPU_KERNELS")
        cpu_kernels.block_kernels.cache_clear()


def test_a_failed_build_is_reported_and_falls_back(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    monkeypatch.setattr(cpu_kernels.shutil, "which", lambda name: "/bin/false")
    cpu_kernels.block_kernels.cache_clear()
    try:
        with caplog.at_level("WARNING"):
            assert cpu_kernels.block_kernels() is None
        assert "failed to build" in caplog.text
        assert not list(tmp_path.rglob("*.so"))  # no half-written library left behind
    finally:
        cpu_kernels.block_kernels.cache_clear()


# ----------------------------------------------------------------------------------------------
# The fused decode step (KernelDecoderLayer, internvl_cpu::decoder_layer_step)


def decode_step_inputs(config, past: int = 8):
    """One new token for 2 rows over `past` cached positions (random keys and values; row 1 left-padded by
    3): x, cos, sin, the padding mask as LanguageModel builds it, and two equal caches."""
    generator = torch.Generator().manual_seed(1)
    text = config.text
    shape = (text.num_layers, 2, text.num_kv_heads, past + 4, text.head_size)
    keys, values = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    caches = [KVCache(keys.clone(), values.clone()) for _ in range(2)]
    for cache in caches:
        cache.length = past
    padding = torch.ones(2, past + 1, dtype=torch.long)
    padding[1, :3] = 0
    mask = build_attention_mask(padding, 2, 1, past, torch.device("cpu"))
    cos, sin = rope_cos_sin(text, torch.tensor([[past], [past - 3]]), torch.float32)
    x = torch.randn(2, 1, text.hidden_size, generator=generator)
    return x, cos, sin, mask, caches


def random_layer(config, index: int = 0):
    torch.manual_seed(index)
    layer = InternVL(config).eval().language.layers[index]
    with torch.no_grad():
        for parameter in layer.parameters():  # norms away from 1 and biases away from 0, so that they count
            parameter.copy_(torch.randn_like(parameter) * 0.1 + (1.0 if parameter.dim() == 1 else 0.0))
    return layer


@needs_kernels
@pytest.mark.parametrize("mode", ["fp32", "q8_0", "q4_0"])
@pytest.mark.parametrize("family", ["qwen2", "qwen3", "llama"])  # q/k/v bias, per-head q/k norms, neither
def test_a_fused_decode_step_equals_the_decoder_layer(kernels, family, mode):
    config = tiny_config(family)
    if family == "qwen3":
        config.text.qk_norm = True
    layer = random_layer(config)
    make = {"fp32": KernelLinear.from_linear, "q8_0": lambda p: BlockQuantLinear(p.weight, p.bias, "q8_0")}
    make["q4_0"] = lambda p: BlockQuantLinear(p.weight, p.bias, "q4_0")
    replace_linears(layer, make[mode])
    fused = KernelDecoderLayer.from_layer(layer, config.text)
    x, cos, sin, mask, (expected_cache, cache) = decode_step_inputs(config)
    with torch.inference_mode():
        assert fused.step_operands(x, cache) is not None
        expected = layer(x, cos, sin, mask, expected_cache)
        got = fused(x, cos, sin, mask, cache)
        unpadded = fused(x, cos, sin, None, KVCache(cache.keys.clone(), cache.values.clone()))
    # fp32: the same arithmetic in another order; q8_0/q4_0: an activation may round to the next level
    tolerance = 1e-5 if mode == "fp32" else 2e-3
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance * expected.abs().max().item())
    torch.testing.assert_close(cache.keys, expected_cache.keys, rtol=1e-5, atol=1e-5)  # this layer's new k, v
    torch.testing.assert_close(cache.values, expected_cache.values, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unpadded[1], got[1], atol=1e-3)  # the mask counts: row 1 sees 3 positions more


def fp32_fused_layer(config):
    """(a random DecoderLayer of `config` with KernelLinear projections, the KernelDecoderLayer over it)"""
    layer = random_layer(config)
    replace_linears(layer, KernelLinear.from_linear)
    return layer, KernelDecoderLayer.from_layer(layer, config.text)


@needs_kernels
def test_the_fused_step_leaves_other_calls_to_the_decoder_layer(kernels):
    config = tiny_config("qwen2")
    layer, fused = fp32_fused_layer(config)
    x, cos, sin, mask, (cache, _) = decode_step_inputs(config)
    with torch.inference_mode():
        assert fused.step_operands(x, cache) is not None
        assert fused.step_operands(torch.cat([x, x], dim=1), cache) is None  # a prefill
        assert fused.step_operands(x.bfloat16(), cache) is None
        assert fused.step_operands(x, None) is None  # no cache
    assert fused.step_operands(x, cache) is None  # autograd on
    with torch.inference_mode():
        plain_projection = nn.Linear(layer.mlp.down.in_features, layer.mlp.down.out_features)
        fused.mlp.down = plain_projection  # e.g. a LoRA wrapper: no kernel operands
        assert fused.step_operands(x, cache) is None
        got = fused(x, cos, sin, mask, cache)  # runs as DecoderLayer
    assert got.shape == x.shape
    moe = tiny_config("qwen3_moe")
    moe_layer = InternVL(moe).language.layers[0]
    assert isinstance(moe_layer.mlp, MoEMLP)
    with torch.inference_mode():
        assert KernelDecoderLayer.from_layer(moe_layer, moe.text).step_operands(x, cache) is None


@needs_kernels
def test_the_fused_step_gathers_its_weights_once_per_cache(kernels):
    config = tiny_config("qwen2")
    _, fused = fp32_fused_layer(config)
    x, _, _, _, (cache, _) = decode_step_inputs(config)
    _, _, _, _, (next_generation, _) = decode_step_inputs(config)
    with torch.inference_mode():
        weights = fused.kernel_weights(cache)
        assert fused.kernel_weights(cache) is weights  # the next step of the same generation
        assert fused.kernel_weights(next_generation) is not weights
        assert fused.kernel_weights(next_generation) == weights  # the same tensors, gathered anew
        assert fused.step_operands(x, cache)[0] == weights[0]


@needs_kernels
def test_the_fused_step_refuses_a_full_cache(kernels):
    config = tiny_config("qwen2")
    _, fused = fp32_fused_layer(config)
    x, cos, sin, _, (cache, _) = decode_step_inputs(config, past=8)
    cache.length = cache.max_length
    with torch.inference_mode(), pytest.raises(RuntimeError, match="KV cache full"):
        fused(x, cos, sin, None, cache)


@needs_kernels
def test_the_fused_step_refuses_write_indices_it_cannot_honour(kernels):
    config = tiny_config("qwen2")
    _, fused = fp32_fused_layer(config)
    x, cos, sin, mask, (cache, _) = decode_step_inputs(config, past=8)
    with torch.inference_mode():
        weights, widths, (keys, values, _) = fused.step_operands(x, cache)

        def step(write_at, mask):  # type: ignore[no-untyped-def]
            return kernels.decoder_layers_step(x, weights, widths, cos, sin, keys, values, write_at, mask, 4, 1e-6)

        with pytest.raises(RuntimeError, match="write_at holds 3 indices for 2 rows"):
            step([8, 8, 8], mask)
        with pytest.raises(RuntimeError, match="rows that write at different cache indices need a mask"):
            step([8, 5], None)
        with pytest.raises(RuntimeError, match="mask must hold batch x"):
            step([8], mask[..., :-1])
        with pytest.raises(RuntimeError, match=r"keys and values must be \(layers, batch, kv_heads, max_length"):
            kernels.decoder_layers_step(x, weights, widths, cos, sin, keys[0], values[0], [8], mask, 4, 1e-6)
        with pytest.raises(RuntimeError, match="16 weights and 4 widths per layer: 16 and 4 for 2 layers"):
            kernels.decoder_layers_step(
                x, weights, widths, cos, sin, cache.keys[:2], cache.values[:2], [8], mask, 4, 1e-6
            )
        assert step([8], mask).shape == x.shape  # the same call with good operands runs


@needs_kernels
@pytest.mark.parametrize("mode", ["fp32", "q4_0"])
def test_the_decoder_runs_a_decode_step_of_all_its_layers_in_one_call(kernels, mode, monkeypatch):
    config = tiny_config("qwen2")
    config.text.num_layers = 3
    model = InternVL(config).eval()
    make = {"fp32": KernelLinear.from_linear, "q4_0": lambda p: BlockQuantLinear(p.weight, p.bias, "q4_0")}[mode]
    replace_linears(model.language, make)
    language = model.language
    x, cos, sin, mask, (expected_cache, cache) = decode_step_inputs(config)
    calls = []
    step = kernels.decoder_layers_step
    monkeypatch.setattr(torch.ops.internvl_cpu, "decoder_layers_step", lambda *args: calls.append(args) or step(*args))
    with torch.inference_mode():
        expected = DecoderLayer.run_stack(language.layers, x, cos, sin, mask, expected_cache)
        language.use_layer_kind(KernelDecoderLayer)
        got = language.layer_kind.run_stack(language.layers, x, cos, sin, mask, cache)
        assert len(calls) == 1 and calls[0][5].shape[0] == 3  # one call for the three layers
        tolerance = 1e-5 if mode == "fp32" else 2e-3
        torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance * expected.abs().max().item())
        torch.testing.assert_close(cache.keys, expected_cache.keys, rtol=1e-5, atol=1e-5)  # every layer's new k, v
        torch.testing.assert_close(cache.values, expected_cache.values, rtol=1e-5, atol=1e-5)
        # a layer the kernel cannot take (here a plain projection): the others still fuse, one call each
        language.layers[1].mlp.down = nn.Linear(config.text.intermediate_size, config.text.hidden_size)
        calls.clear()
        language.layer_kind.run_stack(language.layers, x, cos, sin, mask, cache)
        assert len(calls) == 2 and all(args[5].shape[0] == 1 for args in calls)


@needs_kernels
@pytest.mark.parametrize("quantize", [quantize_int8, quantize_int4])
def test_quantizing_packs_the_block_weights_into_one_buffer_and_changes_no_output(kernels, quantize):
    model = InternVL(tiny_config("qwen2")).eval()
    linears = {name: copy.deepcopy(m) for name, m in model.language.named_modules() if isinstance(m, nn.Linear)}
    quantize(model.language)
    packed = {name: m for name, m in model.language.named_modules() if isinstance(m, BlockQuantLinear)}
    assert packed.keys() == linears.keys()
    storages = {t.untyped_storage().data_ptr() for m in packed.values() for t in (m.weight_values, m.weight_scales)}
    assert len(storages) == 1
    assert all(t.data_ptr() % 64 == 0 for m in packed.values() for t in (m.weight_values, m.weight_scales))
    x = torch.randn(3, model.config.text.hidden_size)
    for name, layer in packed.items():
        alone = BlockQuantLinear(linears[name].weight, linears[name].bias, layer.kind)  # not packed
        inputs = x if layer.in_features == x.shape[1] else torch.randn(3, layer.in_features)
        assert torch.equal(layer(inputs), alone(inputs)), name


@needs_kernels
def test_choose_cpu_kernels_fuses_the_decoder_layers_and_keeps_the_checkpoint_keys(kernels):
    model = InternVL(tiny_config("qwen2")).eval()
    keys = list(model.state_dict())
    choose_cpu_kernels(model)
    assert all(isinstance(layer, KernelDecoderLayer) for layer in model.language.layers)
    assert list(model.state_dict()) == keys


@needs_kernels
def test_argmax_rows_picks_what_torch_argmax_picks(kernels):
    generator = torch.Generator().manual_seed(0)
    ties = torch.randint(0, 3, (6, 1000), generator=generator).float()  # many equal largest values: the first
    nans = torch.randn(4, 100, generator=generator)
    nans[0, 50] = nans[1, 3] = nans[1, 90] = nans[2, 0] = nans[3, 99] = float("nan")  # a NaN is the largest
    signed_zeros = torch.randn(2, 64, generator=generator).clamp(max=0)
    signed_zeros[:, 5] = -0.0  # equal to the 0.0 values that follow it
    cases = [
        torch.randn(3, 151_936, generator=generator),  # the 1B shape's vocabulary
        torch.randn(5, 7, generator=generator),  # shorter than a vector
        torch.randn(2, 9, generator=generator),  # a vector and a tail
        torch.full((1, 13), float("-inf")),
        ties,
        nans,
        signed_zeros,
    ]
    for logits in cases:
        assert torch.equal(kernels.argmax_rows(logits), logits.argmax(dim=-1))
        assert torch.equal(argmax_rows(logits), logits.argmax(dim=-1))
    assert torch.equal(argmax_rows(ties.double()), ties.double().argmax(dim=-1))  # other dtypes: PyTorch's
    with pytest.raises(RuntimeError, match="argmax_rows takes a float32"):
        kernels.argmax_rows(torch.randn(3))
