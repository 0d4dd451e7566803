"""The model's matrix-product paths, chosen at load time: `EmulatedBf16Linear` (bf16 weights, fp32
products on CPUs without native bf16) and PyTorch's int8 and int4 kernels (`Int8Linear`, `Int4Linear`, the
fallback where our own are not built: tests/test_cpu_kernels.py), checked against fp32 references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from internvl.model import linear as linear_module
from internvl.model.internvl import InternVL
from internvl.model.linear import (
    BlockQuantLinear,
    EmulatedBf16Linear,
    Int4Linear,
    Int8Linear,
    choose_cpu_kernels,
    quantize_int4,
    quantize_int8,
)
from internvl.weights import save_model
from tests.test_train_support import tiny_config


def test_emulated_bf16_linear_computes_big_products_in_fp32_and_small_ones_in_bf16():
    torch.manual_seed(0)
    dense = nn.Linear(64, 32).to(torch.bfloat16)
    layer = EmulatedBf16Linear.from_linear(dense)
    assert layer.weight is dense.weight and isinstance(layer, nn.Linear)  # shared, so saving is unchanged
    big = torch.randn(64, 64, dtype=torch.bfloat16)
    reference = F.linear(big.float(), dense.weight.float(), dense.bias.float())  # exact products of the stored numbers
    assert torch.equal(layer(big), reference.to(torch.bfloat16))  # one rounding of the fp32 result
    small = big[:2]
    assert torch.equal(layer(small), F.linear(small, dense.weight, dense.bias))  # the bf16 kernel, as nn.Linear


def test_choose_cpu_kernels_swaps_only_where_bf16_is_emulated(monkeypatch):
    for native in (False, True):
        monkeypatch.setattr(linear_module, "CPU_HAS_NATIVE_BF16", native)
        model = InternVL(tiny_config("qwen2")).to(torch.bfloat16)
        choose_cpu_kernels(model)
        swapped = type(model.language.layers[0].attn.qkv) is EmulatedBf16Linear
        assert swapped == (not native)
        assert model.vision.embed.patch.weight.dtype == (torch.bfloat16 if native else torch.float32)
    fp32 = InternVL(tiny_config("qwen2"))
    choose_cpu_kernels(fp32)
    assert type(fp32.language.layers[0].attn.qkv) is nn.Linear


@pytest.mark.parametrize("rows", [1, 8, 100])
def test_int8_linear_error_within_the_quantization_bound(rows):
    torch.manual_seed(0)
    dense = nn.Linear(96, 40)
    quantized = Int8Linear(dense.weight, dense.bias)
    x = torch.randn(rows, 96)
    with torch.no_grad():
        expected = dense(x)
        got = quantized(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    # weights: per output channel, half a step (max |w| / 127 / 2) at most; activations: one affine 7-bit
    # scale over the call's rows, half a step (range including 0, / 127 / 2) at most
    weight_step = dense.weight.abs().amax(dim=1) / 127
    activation_step = (x.max().clamp(min=0) - x.min().clamp(max=0)) / 127
    bound = x.abs().sum(dim=1, keepdim=True) * weight_step[None, :] / 2
    bound = bound + activation_step / 2 * dense.weight.abs().sum(dim=1)[None, :]
    bound = bound + 96 * activation_step * weight_step[None, :] / 4 + 1e-4
    assert torch.all((got - expected).abs() <= bound)
    assert quantized.packed_bytes == 40 * (96 + 4 + 4)


def test_quantize_int8_swaps_every_language_projection_but_the_router():
    torch.manual_seed(0)
    model = InternVL(tiny_config("qwen3_moe")).eval()
    quantize_int8(model.language)
    dense = [name for name, module in model.language.named_modules() if isinstance(module, nn.Linear)]
    int8 = [n for n, m in model.language.named_modules() if isinstance(m, (Int8Linear, BlockQuantLinear))]
    assert dense and all(name.endswith("router") for name in dense)
    assert "lm_head" in int8 and any(name.endswith("attn.qkv") for name in int8)
    assert any(name.endswith("experts.0.gate_up") for name in int8)
    assert not any(
        isinstance(m, (Int8Linear, BlockQuantLinear)) for m in model.vision.modules()
    )  # the encoder keeps its dtype


def test_int8_model_logits_stay_close_to_fp32():
    torch.manual_seed(0)
    model = InternVL(tiny_config("qwen2")).eval()
    ids = torch.randint(0, model.config.text.vocab_size - 10, (2, 12))
    with torch.no_grad():
        expected = model(ids)
        quantize_int8(model.language)
        got = model(ids)
    spread = expected.std()
    assert (got - expected).abs().max() < 0.1 * spread


@pytest.mark.parametrize("rows", [1, 8, 100])
@pytest.mark.parametrize("out", [48, 50])  # 50: not a multiple of the kernel's 16-row blocks (padded)
def test_int4_linear_equals_its_dequantized_weights_and_stays_within_the_rounding_bound(rows, out):
    torch.manual_seed(0)
    dense = nn.Linear(128, out)
    quantized = Int4Linear(dense.weight, dense.bias, group_size=32)
    x = torch.randn(rows, 128)
    # the dequantized weights, from the layer's own codes: w = (q - 8) * scale + offset per group of 32
    groups = dense.weight.detach().reshape(-1, 32)
    low, high = groups.amin(1), groups.amax(1)
    scale = ((high - low).clamp(min=1e-6) / 15).to(torch.bfloat16).float()
    q = ((groups - low[:, None]) / ((high - low).clamp(min=1e-6) / 15)[:, None]).round().clamp(0, 15)
    offset = (low + (high - low).clamp(min=1e-6) / 15 * 8).to(torch.bfloat16).float()
    dequantized = ((q - 8) * scale[:, None] + offset[:, None]).reshape(out, 128)
    with torch.no_grad():
        got = quantized(x)
        exact = x @ dequantized.T + dense.bias.to(torch.bfloat16).float()
        expected = dense(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    # bf16 activations and output: relative 2^-8 per product, 2^-7 on the result
    rounding = 2**-7 * (x.abs() @ dequantized.abs().T) + 2**-7 * exact.abs() + 1e-3
    assert torch.all((got - exact).abs() <= rounding)
    step = ((high - low) / 15).reshape(out, 4).repeat_interleave(32, dim=1)  # half a step per weight, at most
    bound = x.abs() @ (step / 2 + (scale - (high - low) / 15).abs().reshape(out, 4).repeat_interleave(32, 1) * 8).T
    assert torch.all((got - expected).abs() <= bound + rounding + 0.05 * expected.abs())


def test_quantize_int4_swaps_the_projections_it_can_group():
    model = InternVL(tiny_config("qwen2")).eval()
    quantize_int4(model.language)
    int4 = [n for n, m in model.language.named_modules() if isinstance(m, (Int4Linear, BlockQuantLinear))]
    assert "lm_head" in int4 and any(name.endswith("attn.qkv") for name in int4)
    with pytest.raises(ValueError, match="group size"):
        Int4Linear(torch.randn(8, 40), None, group_size=32)


def test_an_int8_model_refuses_to_be_saved(tmp_path):
    from internvl.errors import CheckpointError

    model = InternVL(tiny_config("qwen2")).eval()
    quantize_int8(model.language)
    with pytest.raises(CheckpointError, match="int8"):
        save_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not linear_module.can_pack(), reason="this PyTorch build has no oneDNN")
def test_packed_linear_equals_nn_linear_and_the_model_keeps_its_greedy_tokens():
    from internvl.generate import GenerationConfig, generate
    from internvl.model.linear import PackedLinear, replace_linears

    torch.manual_seed(0)
    dense = nn.Linear(96, 40)
    packed = PackedLinear(dense.weight, dense.bias)
    x = torch.randn(2, 7, 96)
    with torch.no_grad():
        assert torch.allclose(packed(x), dense(x), rtol=1e-5, atol=1e-5)
    model = InternVL(tiny_config("qwen3_moe")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3 if p.dim() > 1 else 0.05)
    ids = torch.randint(0, model.config.text.vocab_size - 10, (2, 9))
    expected = generate(model, ids, None, None, GenerationConfig(max_new_tokens=12))
    with torch.no_grad():
        logits = model(ids)
    replace_linears(model.language, lambda layer: PackedLinear(layer.weight, layer.bias))
    assert isinstance(model.language.lm_head, PackedLinear)
    assert all(isinstance(m, nn.Linear) for n, m in model.language.named_modules() if n.endswith("router"))
    with torch.no_grad():
        assert torch.allclose(model(ids), logits, rtol=1e-4, atol=1e-4)
    assert generate(model, ids, None, None, GenerationConfig(max_new_tokens=12)) == expected


@pytest.mark.skipif(not linear_module.can_pack(), reason="this PyTorch build has no oneDNN")
def test_a_model_with_packed_weights_refuses_to_be_saved(tmp_path):
    from internvl.errors import CheckpointError
    from internvl.model.linear import PackedLinear, replace_linears

    model = InternVL(tiny_config("qwen2")).eval()
    replace_linears(model.language, lambda layer: PackedLinear(layer.weight, layer.bias))
    with pytest.raises(CheckpointError, match="pre-packed weights"):
        save_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
