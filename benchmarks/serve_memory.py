"""Memory of `internvl serve` under image-heavy requests: resident memory before, at the peak and after.

The server (the nano model) runs as a subprocess; its resident set (VmRSS) and peak (VmHWM) are read
from /proc. Two loads, each `--clients` concurrent clients sending `--rounds` requests one after the other:

- **too big**: 16 plain 4096x4096 PNGs with max_tiles 12 (the issue's hostile request): they cannot fit
  the context, so they should be refused from the image headers in milliseconds, nothing decoded;
- **fits**: 3 gradient PNGs of 2048x1536 with max_tiles 6 and 8 answer tokens: decoded, tiled, answered.

After each load the server idles 2 s and its memory is read again. Pass `--no-trim` to run the server
with freed heap pages kept (the script patches `release_memory` out in the subprocess; it is not a
setting of the package) and see what returning them saves.

Run: `.venv/bin/python benchmarks/serve_memory.py [--clients 4] [--rounds 3] [--append]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, machine_line, publish, start_server_process

SERVER = """
import sys
from internvl.cli import main
if sys.argv.pop(1) == "no-trim":
    import internvl.serve.prepare as prepare
    prepare.release_memory = lambda: None
sys.exit(main(sys.argv[1:]))
"""


def png_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def gradient(width: int, height: int) -> Image.Image:
    ramp = Image.linear_gradient("L").resize((width, height))
    return Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ramp))


def memory_mib(pid: int) -> dict[str, float]:
    values = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def start_server(port: int, trim: bool) -> subprocess.Popen:
    command = [sys.executable, "-c", SERVER, "trim" if trim else "no-trim", "serve", "--port", str(port)]
    command += ["--served-model-name", "bench", "--max-request-bytes", str(256 * 2**20), "--max-batch", "4"]
    return start_server_process(command, port, timeout_s=300)


async def load(url: str, body: dict, clients: int, rounds: int) -> tuple[list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def client(http: httpx.AsyncClient) -> None:
        for _ in range(rounds):
            start = time.perf_counter()
            response = await http.post(f"{url}/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - start)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    async with httpx.AsyncClient(timeout=None) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return latencies, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-trim", action="store_true", help="keep freed heap pages (the behaviour before)")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()

    big = png_url(Image.new("RGB", (4096, 4096), "white"))
    photo = png_url(gradient(2048, 1536))
    loads = {
        "too big: 16 x 4096x4096 PNG, max_tiles 12": {
            "max_tiles": 12,
            "content": [{"type": "image_url", "image_url": {"url": big}}] * 16,
        },
        "fits: 3 x 2048x1536 PNG, max_tiles 6": {
            "max_tiles": 6,
            "content": [{"type": "image_url", "image_url": {"url": photo}}] * 3,
        },
    }
    port = free_port()
    server = start_server(port, trim=not args.no_trim)
    url = f"http://127.0.0.1:{port}"
    try:
        start = memory_mib(server.pid)
        lines = [
            f"### `internvl serve` memory under image-heavy requests ({'heap kept' if args.no_trim else 'freed pages returned'})",
            "",
            machine_line() + f"; nano model, {args.clients} concurrent clients x {args.rounds} requests",
            "",
            f"Server resident memory at start: {start['VmRSS']:.0f} MiB.",
            "",
            "| load | statuses | median latency | max latency | peak RSS | RSS 2 s after |",
            "|---|---|---|---|---|---|",
        ]
        for label, spec in loads.items():
            body = {
                "model": "bench",
                "max_tokens": 8,
                "max_tiles": spec["max_tiles"],
                "messages": [{"role": "user", "content": [*spec["content"], {"type": "text", "text": "What is it?"}]}],
            }
            latencies, statuses = asyncio.run(load(url, body, args.clients, args.rounds))
            time.sleep(2)
            after = memory_mib(server.pid)
            ordered = sorted(latencies)
            lines.append(
                f"| {label} | {statuses} | {ordered[len(ordered) // 2]:.2f} s | {ordered[-1]:.2f} s | "
                f"{after['VmHWM']:.0f} MiB | {after['VmRSS']:.0f} MiB |"
            )
        publish(lines, args.append)
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
