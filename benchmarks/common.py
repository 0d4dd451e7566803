"""Shared bits of the benchmark scripts: the machine line, evaluation folders and their statistics, and
appending to BENCHMARKS.md."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine_line() -> str:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    today = datetime.date.today().isoformat()
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores; date {today}; python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )


def eval_scores(folder: Path) -> dict[str, float]:
    """{family: accuracy in %, "overall": ...} of an `internvl eval run` folder (its summary.json)."""
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    scores = {name: float(value["score"]) for name, value in summary["categories"].items()}
    scores["overall"] = float(summary["overall"])
    return scores


def noise(accuracy: float, n: int) -> float:
    """One standard error of an accuracy in % over n items."""
    p = accuracy / 100
    return 100 * math.sqrt(max(p * (1 - p), 1e-9) / max(n, 1))


def item_scores(folder: Path) -> dict[str, float]:
    """{item id: score} of an `internvl eval run` folder (its scores.jsonl)."""
    lines = (folder / "scores.jsonl").read_text().splitlines()
    return {record["id"]: float(record["score"] or 0.0) for record in map(json.loads, lines)}


def paired_difference(new: dict[str, float], old: dict[str, float], ids: list[str]) -> tuple[float, float]:
    """(mean of new - old over the items `ids`, in points; one standard error of that paired difference)."""
    differences = [new[i] - old[i] for i in ids]
    n = max(len(ids), 1)
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / max(n - 1, 1)
    return 100 * mean, 100 * math.sqrt(variance / n)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact p-value of `wins` against `losses` when either model is as likely to win an item."""
    n, k = wins + losses, min(wins, losses)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


def random_one_b():  # type: ignore[no-untyped-def]
    """The InternVL3-1B shape with normal(0, 0.02) weights (seed 0): the benchmarks' random 1B model."""
    import torch

    from internvl.bench import SHAPES
    from internvl.model.internvl import InternVL

    torch.manual_seed(0)
    model = InternVL(SHAPES["1b"]()).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
    return model


def append_report(report: str) -> None:
    """Append a table to BENCHMARKS.md (created with a header on first use)."""
    if not BENCHMARKS_MD.exists():
        BENCHMARKS_MD.write_text("# Benchmarks\n\nTables appended by the scripts in `benchmarks/`; newest last.\n\n")
    with BENCHMARKS_MD.open("a") as f:
        f.write(report + "\n")


def publish(lines: list[str], append: bool) -> None:
    """Print a report (a list of markdown lines) and, with `append`, add it to BENCHMARKS.md."""
    report = "\n".join(lines) + "\n"
    print(report)
    if append:
        append_report(report)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server_process(command: list[str], port: int, timeout_s: float = 900):  # type: ignore[no-untyped-def]
    """Start `internvl serve` (`command`) as a subprocess and wait until its /health answers."""
    import subprocess
    import time

    import httpx

    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read() if server.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.kill()
    raise RuntimeError(f"the server did not start in {timeout_s:g} s")


def answer_and_score(chat, items, batch_size: int = 8):  # type: ignore[no-untyped-def]
    """(greedy answers, accuracy in %) of `chat` on eval `items`, asked and scored as `internvl eval run` does
    (64 new tokens at most)."""
    from internvl.eval.answerer import chat_answerer
    from internvl.eval.runner import RunSettings, score_items

    settings = RunSettings(generation={"max_new_tokens": 64, "do_sample": False, "num_beams": 1})
    answer = chat_answerer(chat, settings)
    answers: list[str] = []
    for start in range(0, len(items), batch_size):
        answers += answer(items[start : start + batch_size])
    scored = score_items(items, {item.id: {"prediction": a} for item, a in zip(items, answers)})
    return answers, 100 * sum(s.score or 0.0 for s in scored) / max(len(scored), 1)
