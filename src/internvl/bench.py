"""`internvl bench`: inference and training speed, ours vs transformers, on the same random weights.

For each model shape (the InternVL3-1B shape and the nano shape) and dtype (fp32, bf16), one random
checkpoint is written in the hf layout and loaded by both stacks; then, side by side in one process:

    decode tok/s at batch 1 and 8        (32 new tokens after a 20-token prompt; the prefill is
                                          subtracted: time(32 new) - time(1 new) over 31 steps)
    time to first token                  (1 tile + 20 text tokens, 7 tiles + 20 text tokens)
    vision encoder tiles/s               (7 tiles through ViT + pixel shuffle + projector)
    SFT step tokens/s                    (forward + backward of one 1-tile sample of 512 tokens with
                                          labels, fp32; the optimiser step is the same for both and left out)
    our int8 and int4 language models    (decode and time to first token; `load(quantize="int8")`, "int4")
    (every fp32 projection of ours, the vision encoder's too, runs on `fast_fp32_linears`, as `internvl.load` does)
    the memory-bandwidth limit           (read bandwidth measured right before and after each batch-1
                                          decode, the higher of the two / bytes of the language model's
                                          weights read per token) and each batch-1 decode's share of it.

Both stacks run greedy decoding with no stop token. Our bf16 model keeps its vision side in fp32 on a
CPU without native bf16, as `internvl.load` does. transformers' bf16 time to first token for 7 tiles is
left out on such CPUs (`--slow-hf` runs it): its emulated bf16 vision encoder takes minutes.
Loading (time, peak RSS) needs fresh processes: `benchmarks/bench_load.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from internvl.config import InternVLConfig
from internvl.generate import GenerationConfig, generate
from internvl.model.internvl import InternVL
from internvl.model.linear import (
    CPU_HAS_NATIVE_BF16,
    Int8Linear,
    choose_cpu_kernels,
    fast_fp32_linears,
    quantize_int4,
    quantize_int8,
)
from internvl.presets import internvl3_1b, nano
from internvl.weights import load_model, save_model

PROMPT_TOKENS = 20
NEW_TOKENS = 32
TRAIN_TOKENS = 512
SHAPES: dict[str, Callable[[], InternVLConfig]] = {
    "1b": internvl3_1b,
    "nano": lambda: dataclasses.replace(nano(2048), image_token_id=2047),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Row:
    """One measured quantity for one model shape and dtype."""

    shape: str
    dtype: str
    measure: str
    ours: float | None
    theirs: float | None
    int8: float | None = None
    int4: float | None = None
    higher_is_better: bool = True

    def ratio(self) -> str:
        if self.ours is None or self.theirs is None:
            return ""
        ratio = self.ours / self.theirs if self.higher_is_better else self.theirs / self.ours
        return f"{ratio:.2f}x"


@dataclass(frozen=True)
class Decode:
    """A decode rate and the read bandwidth it is held against (`bracketed_decode`): the higher of the two
    readings around it, the lower one kept to tell whether the machine changed speed in between."""

    tok_s: float
    bandwidth_gb_s: float
    lower_reading_gb_s: float | None = None

    @property
    def steady(self) -> bool:
        """The two readings agree within 15%. Where they do not, the machine switched between its slow and
        fast phases around the decode, and the share is held against a bandwidth the decode may not have had
        (docs/cpu-speed.md): one such round read 140%."""
        return self.lower_reading_gb_s is None or self.bandwidth_gb_s <= 1.15 * self.lower_reading_gb_s

    def limit_tok_s(self, bytes_per_token: int) -> float:
        """The batch-1 limit: bandwidth / bytes read per token."""
        return self.bandwidth_gb_s * 1e9 / bytes_per_token

    def share(self, bytes_per_token: int) -> float:
        """tok/s as a fraction of the limit."""
        return self.tok_s / self.limit_tok_s(bytes_per_token)


def read_bandwidth_gb_s() -> float:
    """Bytes read per second summing a 1 GiB buffer, best of 3: the rate at which this machine streams memory
    into the cores, which is what a decode step does with the weights (it writes next to nothing). A copy
    (read + write counted) measured the same on quiet minutes and as low as 0.7 of it on fast ones here
    (docs/cpu-speed.md), so it overstated a decode's share."""
    buffer = torch.ones(2**28, dtype=torch.float32)
    buffer.sum()  # first touch
    best = min(_seconds(buffer.sum) for _ in range(3))
    return buffer.numel() * 4 / best / 1e9


def compute_pace_gflops() -> float:
    """fp32 GFLOP/s of 256 x 256 matrix products held in cache, best of 3: how fast the cores compute this
    minute. On the development machines it moved by up to 2x within a minute, apart from the read bandwidth,
    and int4 decoding, the most arithmetic per weight byte, moved with it (docs/cpu-speed.md)."""
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    a @ b  # warm-up
    best = min(_seconds(lambda: [a @ b for _ in range(20)]) for _ in range(3))
    return 20 * 2 * 256**3 / best / 1e9


def bracketed_decode(run: Callable[[torch.Tensor, torch.Tensor | None, int], None], ids: torch.Tensor) -> Decode:
    """`_decode_tok_s(run, ids)` with the read bandwidth measured right before and right after it. The limit is
    the higher of the two: this machine's speed drifts by tens of percent over minutes (docs/cpu-speed.md),
    so a bandwidth measured apart from the decode makes its share move as much; the higher bracket is the
    stricter limit."""
    before = read_bandwidth_gb_s()
    rate = _decode_tok_s(run, ids)
    after = read_bandwidth_gb_s()
    return Decode(rate, max(before, after), min(before, after))


def weight_bytes(module: nn.Module) -> int:
    """Bytes of the weights below `module`, whatever form they take: parameters and buffers (plain, oneDNN-
    packed, int4) and the int8 kernel's packed weights, which are no buffers."""
    held = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    return held + sum(m.packed_bytes for m in module.modules() if isinstance(m, Int8Linear))


def decoder_bytes_per_token(model: InternVL) -> int:
    """Bytes of the language model read to decode one token: every weight but the embedding table."""
    embed = model.language.embed.weight
    return weight_bytes(model.language) - embed.numel() * embed.element_size()


def _seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _best(work: Callable[[], object], repeats: int) -> float:
    return min(_seconds(work) for _ in range(repeats))


@contextlib.contextmanager
def _checkpoint_pair(config: InternVLConfig, dtype: torch.dtype, seed: int = 0) -> Iterator[tuple[InternVL, Any]]:
    """Our model and transformers' InternVLForConditionalGeneration with the same random weights."""
    from transformers import InternVLForConditionalGeneration

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        model = InternVL(config)
        with torch.no_grad():  # small weights keep the random model's activations finite in bf16
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.02)
        save_model(model, folder, layout="hf")
        del model
        ours = load_model(folder, dtype=dtype).eval()
        choose_cpu_kernels(ours)  # as `internvl.load` does
        theirs = InternVLForConditionalGeneration.from_pretrained(folder, dtype=dtype).eval()
    yield ours, theirs


def _prompt(config: InternVLConfig, batch: int, tiles: int, generator: torch.Generator) -> torch.Tensor:
    text = torch.randint(10, config.text.vocab_size - 100, (batch, PROMPT_TOKENS), generator=generator)
    assert config.image_token_id is not None, "the benchmark's config sets image_token_id"
    image = torch.full((batch, tiles * config.num_image_token), config.image_token_id)
    return torch.cat([image, text], dim=1)


def _ours_generate(model: InternVL, ids: torch.Tensor, pixels: torch.Tensor | None, new: int) -> None:
    generate(model, ids, None, pixels, GenerationConfig(max_new_tokens=new))


def _theirs_generate(model, ids: torch.Tensor, pixels: torch.Tensor | None, new: int) -> None:  # type: ignore[no-untyped-def]
    images = {} if pixels is None else {"pixel_values": pixels.to(model.dtype)}
    with torch.no_grad():
        model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            **images,
            do_sample=False,
            max_new_tokens=new,
            min_new_tokens=new,
            eos_token_id=None,
            pad_token_id=0,
        )


def _decode_tok_s(run: Callable[[torch.Tensor, torch.Tensor | None, int], None], ids: torch.Tensor) -> float:
    run(ids, None, 2)  # warm-up
    first = statistics.median(_seconds(lambda: run(ids, None, 1)) for _ in range(3))
    full = _seconds(lambda: run(ids, None, NEW_TOKENS))
    return ids.shape[0] * (NEW_TOKENS - 1) / max(full - first, 1e-9)


def _ttft_s(
    run: Callable[[torch.Tensor, torch.Tensor | None, int], None], ids: torch.Tensor, pixels: torch.Tensor
) -> float:
    return _best(lambda: run(ids, pixels, 1), repeats=2)


def _vision_tiles_s(encode: Callable[[torch.Tensor], object], pixels: torch.Tensor) -> float:
    with torch.no_grad():
        encode(pixels[:1])
        return pixels.shape[0] / _best(lambda: encode(pixels), repeats=2)


def _train_tok_s(step: Callable[[], None], tokens: int) -> float:
    step()
    return tokens / _best(step, repeats=2)


def measure(shape: str, dtype_name: str, slow_hf: bool, train: bool) -> list[Row]:
    config = SHAPES[shape]()
    dtype = DTYPES[dtype_name]
    g = torch.Generator().manual_seed(1)
    pixels7 = torch.randn(7, 3, 448, 448, generator=g)
    rows: list[Row] = []

    def row(
        measure_name: str,
        ours: float | None,
        theirs: float | None,
        int8: float | None = None,
        int4: float | None = None,
        higher: bool = True,
    ) -> None:
        rows.append(Row(shape, dtype_name, measure_name, ours, theirs, int8, int4, higher))
        print(
            f"  {shape} {dtype_name} {measure_name}: ours {_fmt(ours)} transformers {_fmt(theirs)} "
            f"int8 {_fmt(int8)} int4 {_fmt(int4)}",
            flush=True,
        )

    with _checkpoint_pair(config, dtype) as (ours, theirs):
        if train and dtype == torch.float32:  # first: the packed weights below are for inference only
            row(
                f"SFT forward+backward, 1 tile + text, {TRAIN_TOKENS} tokens (tok/s)",
                *_train_rates(config, ours, theirs, pixels7[:1], g),
            )
        int8, int4 = copy.deepcopy(ours), copy.deepcopy(ours)
        quantize_int8(int8.language)
        quantize_int4(int4.language)
        weight_bytes = {name: decoder_bytes_per_token(m) for name, m in (("", ours), ("int8 ", int8), ("int4 ", int4))}
        for model in (ours, int8, int4):  # as `internvl.load` does on a CPU: every fp32 projection left
            fast_fp32_linears(model)
        ours_run = lambda ids, px, new: _ours_generate(ours, ids, px, new)  # noqa: E731
        theirs_run = lambda ids, px, new: _theirs_generate(theirs, ids, px, new)  # noqa: E731
        int8_run = lambda ids, px, new: _ours_generate(int8, ids, px, new)  # noqa: E731
        int4_run = lambda ids, px, new: _ours_generate(int4, ids, px, new)  # noqa: E731

        # batch 1: each decode between two read-bandwidth measurements, its limit (bracketed_decode)
        ids = _prompt(config, 1, 0, g)
        ours1, theirs1, int8_1, int4_1 = (
            bracketed_decode(run, ids) for run in (ours_run, theirs_run, int8_run, int4_run)
        )
        row("decode batch 1 (tok/s)", ours1.tok_s, theirs1.tok_s, int8_1.tok_s, int4_1.tok_s)
        ids = _prompt(config, 8, 0, g)
        row(
            "decode batch 8 (tok/s)",
            _decode_tok_s(ours_run, ids),
            _decode_tok_s(theirs_run, ids),
            _decode_tok_s(int8_run, ids),
            _decode_tok_s(int4_run, ids),
        )
        for tiles in (1, 7):
            ids = _prompt(config, 1, tiles, g)
            px = pixels7[:tiles]
            hf_ttft = (
                None
                if (dtype == torch.bfloat16 and tiles > 1 and not CPU_HAS_NATIVE_BF16 and not slow_hf)
                else _ttft_s(theirs_run, ids, px)
            )
            row(
                f"time to first token, {tiles} tile(s) + {PROMPT_TOKENS} text (s)",
                _ttft_s(ours_run, ids, px),
                hf_ttft,
                _ttft_s(int8_run, ids, px),
                _ttft_s(int4_run, ids, px),
                higher=False,
            )
        if dtype == torch.float32 or slow_hf or CPU_HAS_NATIVE_BF16:
            theirs_vision = _vision_tiles_s(
                lambda px: theirs.model.get_image_features(pixel_values=px.to(dtype)), pixels7
            )
        else:
            theirs_vision = None
        row("vision encoder (tiles/s)", _vision_tiles_s(ours.encode_images, pixels7), theirs_vision)
        for (name, size), decoded in zip(weight_bytes.items(), (ours1, int8_1, int4_1), strict=True):
            switched = "" if decoded.steady else f" (and {decoded.lower_reading_gb_s:.1f}: the machine changed phase)"
            gb = f"{decoded.bandwidth_gb_s:.1f} GB/s read around its decode{switched} / {size / 1e9:.3f} GB per token"
            rows.append(Row(shape, dtype_name, f"{name}batch-1 limit: {gb} (tok/s)", decoded.limit_tok_s(size), None))
        rows.append(
            Row(
                shape,
                dtype_name,
                "batch-1 decode as a share of its limit",
                100 * ours1.share(weight_bytes[""]),
                100 * theirs1.share(weight_bytes[""]),
                100 * int8_1.share(weight_bytes["int8 "]),
                100 * int4_1.share(weight_bytes["int4 "]),
            )
        )
    return rows


def _train_rates(
    config: InternVLConfig,
    ours: InternVL,
    theirs,
    pixels: torch.Tensor,  # type: ignore[no-untyped-def]
    g: torch.Generator,
) -> tuple[float, float]:
    ids = _prompt(config, 1, 1, g)
    filler = torch.randint(10, config.text.vocab_size - 100, (1, TRAIN_TOKENS - ids.shape[1]), generator=g)
    ids = torch.cat([ids, filler], dim=1)
    labels = ids.clone()
    labels[ids == config.image_token_id] = -100

    def ours_step() -> None:
        logits = ours(ids, pixel_values=pixels)
        loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), labels[0, 1:], ignore_index=-100)
        loss.backward()
        ours.zero_grad(set_to_none=True)

    def theirs_step() -> None:
        out = theirs(input_ids=ids, pixel_values=pixels, labels=labels)
        out.loss.backward()
        theirs.zero_grad(set_to_none=True)

    ours.train(), theirs.train()
    try:
        return _train_tok_s(ours_step, TRAIN_TOKENS), _train_tok_s(theirs_step, TRAIN_TOKENS)
    finally:
        ours.eval(), theirs.eval()


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}" if value < 1 else f"{value:.1f}"


def report(rows: list[Row], header: str) -> list[str]:
    lines = [
        header,
        "",
        "| model | dtype | measure | internvl | transformers | ours / theirs | internvl int8 | internvl int4 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.shape} | {r.dtype} | {r.measure} | {_fmt(r.ours)} | {_fmt(r.theirs)} | {r.ratio()} "
            f"| {_fmt(r.int8)} | {_fmt(r.int4)} |"
        )
    return lines


def main(argv: list[str] | None = None, machine: str = "", append: Callable[[str], None] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="internvl bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv), machine, append)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", default="nano,1b", help="comma list of: " + ", ".join(SHAPES))
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma list of: " + ", ".join(DTYPES))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-train", action="store_true", help="skip the SFT forward+backward measure")
    parser.add_argument(
        "--slow-hf",
        action="store_true",
        help="also time transformers' emulated-bf16 vision encoder (minutes on such a CPU)",
    )


def run(args: argparse.Namespace, machine: str = "", append: Callable[[str], None] | None = None) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[Row] = []
    for shape in args.shapes.split(","):
        for dtype_name in args.dtypes.split(","):
            print(f"measuring {shape} {dtype_name} ...", flush=True)
            rows.extend(measure(shape, dtype_name, args.slow_hf, not args.no_train))
    header = (
        "### Speed, ours vs transformers, same random weights (`internvl bench`)\n\n"
        f"{machine or _machine()}; torch threads {torch.get_num_threads()}; "
        f"native bf16 on this CPU: {CPU_HAS_NATIVE_BF16}"
    )
    lines = report(rows, header)
    text = "\n".join(lines) + "\n"
    print(text)
    if append is not None:
        append(text)
    return 0


def _machine() -> str:
    import os
    import platform

    import transformers

    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d')}; "
        f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"
    )
