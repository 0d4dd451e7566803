"""The model's matrix-product paths: `Linear` (bf16 weights, fp32 products on CPUs without native bf16)
and the weight-only int8 mode, checked against fp32 references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from internvl.model import linear as linear_module
from internvl.model.internvl import InternVL
from internvl.model.linear import Int8Linear, Linear, quantize_int8
from internvl.weights import save_model
from tests.test_train_support import tiny_config


def test_linear_bf16_big_products_round_like_an_fp32_product_of_bf16_weights():
    torch.manual_seed(0)
    layer = Linear(64, 32).to(torch.bfloat16)
    x = torch.randn(64, 64, dtype=torch.bfloat16)
    reference = F.linear(x.float(), layer.weight.float(), layer.bias.float())  # exact products of the stored numbers
    out = layer(x)
    assert out.dtype == torch.bfloat16
    # one rounding of the fp32 result to bf16: relative error <= 2^-8
    assert torch.allclose(out.float(), reference, rtol=2**-8, atol=1e-6)
    if not linear_module.CPU_HAS_NATIVE_BF16:  # the fp32 branch really ran: it equals the reference rounded once
        assert torch.equal(out, reference.to(torch.bfloat16))


def test_linear_is_nn_linear_for_fp32_weights():
    torch.manual_seed(0)
    layer = Linear(8, 4)
    x = torch.randn(3, 5, 8)
    assert isinstance(layer, nn.Linear)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


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
    # per weight the rounding error is at most half a step (scale/2); activations and outputs pass through bf16
    step = dense.weight.abs().amax(dim=1) / 127
    bound = x.abs().sum(dim=1, keepdim=True) * step[None, :] / 2
    bound = bound + 2**-8 * (x.abs() @ dense.weight.abs().T) + 2**-7 * expected.abs() + 1e-3
    assert torch.all((got - expected).abs() <= bound)
    assert quantized.weight_int8.dtype == torch.int8 and quantized.weight_int8.abs().max() <= 127


def test_quantize_int8_swaps_every_language_projection_but_the_router():
    torch.manual_seed(0)
    model = InternVL(tiny_config("qwen3_moe")).eval()
    quantize_int8(model.language)
    dense = [name for name, module in model.language.named_modules() if isinstance(module, nn.Linear)]
    int8 = [name for name, module in model.language.named_modules() if isinstance(module, Int8Linear)]
    assert dense and all(name.endswith("router") for name in dense)
    assert "lm_head" in int8 and any(name.endswith("attn.qkv") for name in int8)
    assert any(name.endswith("experts.0.gate_up") for name in int8)
    assert all(isinstance(m, Linear) for m in model.vision.modules() if isinstance(m, nn.Linear))


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
    from internvl.model.linear import PackedLinear, pack_linear_weights

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
    pack_linear_weights(model.language)
    assert isinstance(model.language.lm_head, PackedLinear)
    assert all(isinstance(m, nn.Linear) for n, m in model.language.named_modules() if n.endswith("router"))
    with torch.no_grad():
        assert torch.allclose(model(ids), logits, rtol=1e-4, atol=1e-4)
    assert generate(model, ids, None, None, GenerationConfig(max_new_tokens=12)) == expected


@pytest.mark.skipif(not linear_module.can_pack(), reason="this PyTorch build has no oneDNN")
def test_a_model_with_packed_weights_refuses_to_be_saved(tmp_path):
    from internvl.errors import CheckpointError
    from internvl.model.linear import pack_linear_weights

    model = InternVL(tiny_config("qwen2")).eval()
    pack_linear_weights(model.language)
    with pytest.raises(CheckpointError, match="pre-packed weights"):
        save_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
