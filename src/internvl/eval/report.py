"""Scores -> summary (overall and per category), a text table, a PNG bar chart; several runs side by side.

Scores are shown as percentages (mean item score x 100), weighted by items: the overall number is
the mean over all scored items, not the mean of the category means. Items without a score (no
ground truth, or a judged metric scored without a judge) are counted but left out of the means.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from internvl.errors import InputError

OVERALL = "overall"


@dataclass(frozen=True)
class ScoredItem:
    """One answered item with its score in [0, 1] (None: not scored)."""

    id: str
    category: str
    metric: str
    score: float | None
    extracted: str | None
    prediction: str


def _percent(values: Sequence[float]) -> float | None:
    return round(100.0 * sum(values) / len(values), 2) if values else None


def _group(items: Sequence[ScoredItem]) -> dict[str, Any]:
    values = [item.score for item in items if item.score is not None]
    return {"n": len(items), "n_scored": len(values), "score": _percent(values)}


def summarize(items: Sequence[ScoredItem]) -> dict[str, Any]:
    """{"overall", "n", "n_scored", "categories": {name: {n, n_scored, score}}, "metrics": {...}}."""
    categories: dict[str, list[ScoredItem]] = {}
    metrics: dict[str, list[ScoredItem]] = {}
    for item in items:
        categories.setdefault(item.category, []).append(item)
        metrics.setdefault(item.metric, []).append(item)
    whole = _group(items)
    return {
        OVERALL: whole["score"],
        "n": whole["n"],
        "n_scored": whole["n_scored"],
        "categories": {name: _group(group) for name, group in sorted(categories.items())},
        "metrics": {name: _group(group) for name, group in sorted(metrics.items())},
    }


def _show(score: float | None) -> str:
    return "-" if score is None else f"{score:.2f}"


def _render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, ["-" * w for w in widths], *rows]:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_table(summary: Mapping[str, Any], title: str | None = None) -> str:
    """A plain-text table: one row per category, then the overall row."""
    rows = [[name, str(g["n"]), _show(g["score"])] for name, g in summary["categories"].items()]
    rows.append([OVERALL, str(summary["n"]), _show(summary[OVERALL])])
    table = _render(["category", "n", "score"], rows)
    unscored = summary["n"] - summary["n_scored"]
    if unscored:
        table += f"\n({unscored} of {summary['n']} items not scored: no ground truth, or no judge for 'judge' items)"
    return f"{title}\n{table}" if title else table


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure drawn with the Agg canvas (no pyplot, no display, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def write_chart(summary: Mapping[str, Any], path: str | Path, title: str) -> None:
    """One bar per category and an overall bar, scores in percent."""
    names = [*summary["categories"], OVERALL]
    scores = [g["score"] or 0.0 for g in summary["categories"].values()] + [summary[OVERALL] or 0.0]
    figure = _figure(max(4.0, 0.6 * len(names) + 1.5), 4.0)
    axes = figure.add_subplot()
    colours = ["tab:blue"] * (len(names) - 1) + ["tab:orange"]
    bars = axes.bar(range(len(names)), scores, color=colours)
    axes.bar_label(bars, labels=[f"{s:.1f}" for s in scores], fontsize=8)
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_ylim(0, 105)
    axes.set_ylabel("score (%)")
    axes.set_title(f"{title}: {_show(summary[OVERALL])}")
    figure.savefig(path)


def try_write_chart(summary: Mapping[str, Any], path: str | Path, title: str) -> bool:
    """`write_chart`, or a note on stderr when matplotlib is not installed (the numbers matter more)."""
    try:
        write_chart(summary, path, title)
    except ImportError:
        print(
            f"note: matplotlib is not installed, no chart written to {path} (pip install 'matplotlib>=3.7,<4')",
            file=sys.stderr,
        )
        return False
    return True


# --- several runs ---------------------------------------------------------------------------------------


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    """The summary.json of a run folder."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise InputError(f"{run_dir}: no summary.json (score the run first: internvl eval score {run_dir})")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(summary, dict) or "categories" not in summary or OVERALL not in summary:
        raise InputError(f"{path}: not an internvl eval summary")
    return summary


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Short distinct names for run folders: the folder name, with parents added until distinct."""
    paths = [Path(d).resolve() for d in run_dirs]
    depth = 1
    while True:
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels) or depth >= max(len(p.parts) for p in paths):
            return labels
        depth += 1


def compare(run_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """{"runs": [labels], "rows": {category or "overall": {label: score}}} over the union of categories."""
    labels = run_labels(run_dirs)
    summaries = [load_summary(d) for d in run_dirs]
    names = sorted({name for s in summaries for name in s["categories"]})
    rows = {
        name: {lab: s["categories"].get(name, {}).get("score") for lab, s in zip(labels, summaries)} for name in names
    }
    rows[OVERALL] = {lab: s[OVERALL] for lab, s in zip(labels, summaries)}
    return {"runs": labels, "dirs": [str(d) for d in run_dirs], "rows": rows}


def format_compare_table(comparison: Mapping[str, Any]) -> str:
    """Categories down, runs across."""
    runs = comparison["runs"]
    rows = [[name, *(_show(scores[r]) for r in runs)] for name, scores in comparison["rows"].items()]
    return _render(["category", *runs], rows)


def write_compare_chart(comparison: Mapping[str, Any], path: str | Path) -> None:
    """Grouped bars: one group per category (and overall), one bar per run."""
    runs = comparison["runs"]
    names = list(comparison["rows"])
    width = 0.8 / len(runs)
    figure = _figure(max(5.0, len(names) * (0.35 * len(runs) + 0.4) + 2.0), 4.5)
    axes = figure.add_subplot()
    for k, run in enumerate(runs):
        scores = [comparison["rows"][name][run] or 0.0 for name in names]
        axes.bar([i + (k - (len(runs) - 1) / 2) * width for i in range(len(names))], scores, width, label=run)
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_ylim(0, 105)
    axes.set_ylabel("score (%)")
    axes.legend(fontsize=8)
    axes.set_title("comparison")
    figure.savefig(path)
