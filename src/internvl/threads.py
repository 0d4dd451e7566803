"""CPU threads of a command: `--threads N` on `chat`, `serve`, `eval run` and `train sft`.

torch uses one intra-op thread per core by default. That is fastest on an idle machine; on a busy one
(another job on the same cores) fewer threads than cores wait less for each other. README, "Threads",
has the measurements.
"""

from __future__ import annotations

import argparse

HELP = "torch CPU threads (default: one per core; on a machine busy with another job, try 1)"


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, help=HELP)


def apply(threads: int | None) -> None:
    """Set torch's intra-op threads for this process (None: leave torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise SystemExit(f"internvl: error: --threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
