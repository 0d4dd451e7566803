"""`internvl bench`'s bookkeeping: bytes per decoded token, ratios, the report table, the command line."""

from __future__ import annotations

import copy

import torch

import internvl.bench
from internvl.bench import Decode, Row, bracketed_decode, decoder_bytes_per_token, report
from internvl.cli import build_parser
from internvl.model.internvl import InternVL
from internvl.model.linear import quantize_int4, quantize_int8
from tests.test_train_support import tiny_config


def test_decoder_bytes_exclude_the_embedding_and_shrink_about_4x_with_int8_and_more_with_int4():
    model = InternVL(tiny_config("qwen2"))
    text = model.config.text
    fp32 = decoder_bytes_per_token(model)
    embed = text.vocab_size * text.hidden_size * 4
    everything = sum(p.numel() * 4 for p in model.language.parameters())
    assert fp32 == everything - embed
    quantized = copy.deepcopy(model)
    quantize_int8(quantized.language)
    assert 3.0 < fp32 / decoder_bytes_per_token(quantized) < 4.0  # int8 weights + fp32 scales, biases, norms
    int4 = copy.deepcopy(model)
    quantize_int4(int4.language)
    assert decoder_bytes_per_token(int4) < 0.8 * decoder_bytes_per_token(quantized)


def test_ratios_read_as_speedups_and_the_report_has_one_line_per_row():
    faster = Row("nano", "fp32", "decode batch 1 (tok/s)", 30.0, 10.0)
    quicker = Row("nano", "fp32", "time to first token (s)", 1.0, 2.0, higher_is_better=False)
    missing = Row("nano", "bf16", "vision encoder (tiles/s)", 5.0, None)
    assert faster.ratio() == "3.00x" and quicker.ratio() == "2.00x" and missing.ratio() == ""
    lines = report([faster, quicker, missing], "### header")
    assert lines[0] == "### header" and len(lines) == 4 + 3
    assert lines[-1].startswith("| nano | bf16 | vision encoder (tiles/s) | 5.0 | - |")


def test_bench_command_is_registered():
    args = build_parser().parse_args(["bench", "--shapes", "nano", "--dtypes", "fp32", "--no-train"])
    assert args.shapes == "nano" and args.no_train and callable(args.func)


def test_a_decode_is_held_against_the_higher_of_the_bandwidths_read_around_it(monkeypatch):
    readings = iter([30.0, 40.0])
    calls: list[int] = []
    monkeypatch.setattr(internvl.bench, "read_bandwidth_gb_s", lambda: next(readings))
    monkeypatch.setattr(internvl.bench, "_decode_tok_s", lambda run, ids: calls.append(1) or 20.0)
    decoded = bracketed_decode(lambda ids, pixels, new: None, torch.zeros(1, 4, dtype=torch.long))
    assert decoded == Decode(20.0, 40.0, 30.0) and calls == [1]
    assert not decoded.steady  # 40 against 30: the machine changed phase around the decode
    assert Decode(20.0, 40.0, 35.0).steady and Decode(20.0, 40.0).steady
    # 2 GB per token against 40 GB/s: a limit of 20 tok/s, all of which the decode reaches
    assert decoded.share(2_000_000_000) == 1.0
    assert Decode(10.0, 40.0).share(2_000_000_000) == 0.5


def test_the_cpu_pace_counts_the_flops_of_twenty_256_square_products(monkeypatch):
    timed = []
    monkeypatch.setattr(internvl.bench, "_seconds", lambda work: timed.append(work()) or 0.01)
    pace = internvl.bench.compute_pace_gflops()
    assert len(timed) == 3 and all(len(products) == 20 for products in timed)  # best of 3, 20 products each
    assert timed[0][0].shape == (256, 256)
    assert abs(pace - 20 * 2 * 256**3 / 0.01 / 1e9) < 1e-9
