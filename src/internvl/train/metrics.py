"""Training metrics: one JSON line per logged step in `RUN/metrics.jsonl`, and a PNG of the curves.

A line holds: step, loss, lr (the base learning rate after the schedule), lr_<part> per model part,
grad_norm (before clipping), tokens_per_s (real tokens of all ranks per second of this step),
padding_share (padding tokens / all tokens of the step), samples, tokens (cumulative), aux_loss when the
model has experts, elapsed_s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"


class MetricsLog:
    """Appends lines to RUN/metrics.jsonl; on resume, drops lines after the resumed step first."""

    def __init__(self, run_dir: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        elif self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl (or of RUN/metrics.jsonl given the run folder); a torn last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return records


# What MPO and GSPO log beside the loss, one panel per group present in a run's metrics.
OBJECTIVE_PANELS = (
    ("rewards", ("reward_mean", "reward_std", "rewards_chosen", "rewards_rejected", "rewards_margin")),
    ("shares", ("rewards_accuracy", "clipped_share", "zero_variance_share")),
    ("policy", ("entropy", "ratio_mean")),
    ("answer tokens", ("response_length",)),
)


def plot_metrics(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Loss, the objective's own metrics (MPO rewards, GSPO rewards, clipping, entropy, answer length) and
    the learning rate against step, as RUN/metrics.png (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from internvl.errors import InputError

    run_dir = Path(run_dir)
    source = run_dir / METRICS_FILE
    if not source.is_file():
        raise InputError(f"{run_dir}: no {METRICS_FILE} (is this a training run folder?)")
    records = read_metrics(source)
    out = Path(out) if out is not None else run_dir / PLOT_FILE
    steps = [r["step"] for r in records]
    panels = [(title, [k for k in keys if any(k in r for r in records)]) for title, keys in OBJECTIVE_PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    fig, axes = plt.subplots(2 + len(panels), 1, figsize=(8, 6 + 2.5 * len(panels)), sharex=True)
    loss_ax, lr_ax = axes[0], axes[-1]
    loss_ax.plot(steps, [r["loss"] for r in records], lw=1.2, label="loss")
    if any("aux_loss" in r for r in records):
        loss_ax.plot(steps, [r.get("aux_loss", float("nan")) for r in records], lw=1.0, label="MoE aux loss")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(loc="upper right")
    loss_ax.grid(alpha=0.3)
    for ax, (title, keys) in zip(axes[1:-1], panels):
        for key in keys:
            ax.plot(steps, [r.get(key, float("nan")) for r in records], lw=1.0, label=key)
        ax.set_ylabel(title)
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    lr_ax.plot(steps, [r["lr"] for r in records], lw=1.2, color="tab:orange")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("step")
    lr_ax.grid(alpha=0.3)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
