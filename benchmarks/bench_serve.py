"""Throughput of `internvl serve` (continuous batching) with 1, 4, 8, 16 concurrent clients.

The server runs as a subprocess (`python -m internvl.cli serve`), so the load generator does not share
its interpreter. Each client sends `--requests` requests one after the other, each with one 448 px image
(1 tile; `--text-only`: none), greedy, `ignore_eos` so every answer is exactly `--max-tokens` tokens. Reported per model and
client count: completion tokens per second over the whole run, the speedup over one client, and the
p50 / p99 request latency.

Models: `nano` (the embedded default) and `1b` (InternVL3-1B dimensions, random weights, fp32, a small
trained tokenizer as in bench_answer.py).

Run: `.venv/bin/python benchmarks/bench_serve.py [--models nano,1b] [--clients 1,4,8,16] [--requests 4]
[--max-tokens 64] [--threads N] [--quantize int8] [--text-only] [--append]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, machine_line, publish, start_server_process


def image_url() -> str:
    image = Image.new("RGB", (448, 448), "white")
    ImageDraw.Draw(image).ellipse((100, 100, 300, 300), fill="red")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def build_1b_folder(folder: Path) -> Path:
    """InternVL3-1B dimensions with random weights, saved in bf16 (half the disk) and served in fp32."""
    import torch

    from internvl.model.internvl import InternVL
    from internvl.nano.tokenizer import save_tokenizer, train_tokenizer
    from internvl.presets import internvl3_1b
    from internvl.weights import save_model

    save_tokenizer(train_tokenizer(["what colour is it red blue"] * 10, vocab_size=300), folder)
    torch.manual_seed(0)
    save_model(InternVL(internvl3_1b()).to(torch.bfloat16), folder)
    return folder


def start_server(model: Path | None, port: int, args: argparse.Namespace) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "internvl.cli",
        "serve",
        "--port",
        str(port),
        "--served-model-name",
        "bench",
        "--max-batch",
        str(max(args.clients)),
        "--max-seq-len",
        str(args.max_seq_len),
        "--max-tiles",
        "1",
        "--dtype",
        "float32",
    ]
    if model is not None:
        command += ["--model", str(model)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.quantize:
        command += ["--quantize", args.quantize]
    return start_server_process(command, port, timeout_s=900)


async def run_clients(url: str, clients: int, requests: int, body: dict) -> tuple[float, int, list[float], int]:
    """(wall seconds, completion tokens, request latencies, failures) of `clients` concurrent loops."""
    latencies: list[float] = []
    tokens = failures = 0

    async def one_client(http: httpx.AsyncClient) -> None:
        nonlocal tokens, failures
        for _ in range(requests):
            start = time.perf_counter()
            response = await http.post(f"{url}/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                failures += 1
                print(f"request failed: {response.status_code} {response.text[:200]}", file=sys.stderr)
                continue
            tokens += response.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=None, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(one_client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    return wall, tokens, latencies, failures


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(label: str, model: Path | None, args: argparse.Namespace) -> list[str]:
    port = free_port()
    server = start_server(model, port, args)
    url = f"http://127.0.0.1:{port}"
    content = [] if args.text_only else [{"type": "image_url", "image_url": {"url": image_url()}}]
    content.append({"type": "text", "text": "Describe the picture in detail."})
    body = {
        "model": "bench",
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "max_tiles": 1,
        "messages": [{"role": "user", "content": content}],
    }
    rows = []
    try:
        asyncio.run(run_clients(url, 1, 1, body))  # warm-up
        base = None
        for clients in args.clients:
            wall, tokens, latencies, failures = asyncio.run(run_clients(url, clients, args.requests, body))
            rate = tokens / wall
            base = base or rate
            rows.append(
                f"| {label} | {clients} | {clients * args.requests} | {failures} | {rate:.1f} | "
                f"{rate / base:.2f}x | {percentile(latencies, 0.5):.2f} | {percentile(latencies, 0.99):.2f} |"
            )
            print(rows[-1], file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="nano,1b", help="comma-separated: nano, 1b")
    parser.add_argument("--clients", default="1,4,8,16", help="comma-separated client counts (the first is the base)")
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per answer (ignore_eos)")
    parser.add_argument("--max-seq-len", type=int, default=1024, help="server --max-seq-len")
    parser.add_argument("--threads", type=int, default=None, help="server torch threads")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="server --quantize")
    parser.add_argument("--text-only", action="store_true", help="no image: measures decoding, not image prefill")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]

    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name == "nano":
                rows += measure("nano", None, args)
            elif name == "1b":
                rows += measure("InternVL3-1B shape (random, fp32)", build_1b_folder(Path(tmp) / "1b"), args)
            else:
                raise SystemExit(f"unknown model {name!r}: use nano or 1b")
    lines = [
        "### `internvl serve`: continuous batching throughput (`python benchmarks/bench_serve.py`)",
        "",
        machine_line()
        + f"; server threads: {args.threads or 'torch default'} of {os.cpu_count()} cores"
        + (f"; language model {args.quantize}." if args.quantize else "."),
        (
            f"Each client sends {args.requests} requests in a row: "
            f"{'a question (no image)' if args.text_only else 'one 448 px image (1 tile) + a question'}, greedy, "
            f"{args.max_tokens} completion tokens each (`ignore_eos`); the server decodes up to {max(args.clients)} "
            "answers together. Tokens/s = all completion tokens / wall time."
        ),
        "",
        "| model | clients | requests | failures | completion tok/s | vs 1 client | p50 latency s | p99 latency s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    publish(lines, args.append)


if __name__ == "__main__":
    main()
