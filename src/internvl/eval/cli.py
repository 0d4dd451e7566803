"""`internvl eval run | score | compare`: argparse wiring and handlers.

The top-level CLI calls `add_eval_commands(subparsers, answerer_factory=...)`; each subcommand
sets `func`, a handler taking the parsed arguments and returning an exit code. `run` needs a
model: `answerer_factory(settings) -> Answerer` builds one from `RunSettings` (settings.model is
the --model folder). Until the model exists the hook is None and `run` says so; `score` and
`compare` work without a model. `python -m internvl.eval ...` runs the same commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from internvl import threads
from internvl.config import check_v2pe_delta
from internvl.errors import InputError, InternVLError
from internvl.eval.formats import KINDS, load_items
from internvl.eval.judge import Judge, JudgeSettings
from internvl.eval.report import compare, format_compare_table, write_compare_chart
from internvl.eval.runner import PREDICTIONS_FILE, Answerer, RunSettings, default_generation, rescore, run_eval
from internvl.eval.scoring import METRICS, ScoringSettings
from internvl.model.flash import VISUAL_RESOLUTIONS
from internvl.shipped import SHIPPED

AnswererFactory = Callable[[RunSettings], Answerer]


def add_eval_commands(
    subparsers: argparse._SubParsersAction, answerer_factory: AnswererFactory | None = None
) -> argparse.ArgumentParser:
    """Add `eval` (with run / score / compare) to a top-level CLI's subparsers."""
    parser = subparsers.add_parser("eval", help="evaluate a model on benchmark files; score and compare runs")
    _add_subcommands(parser, answerer_factory)
    return parser


def build_parser(
    answerer_factory: AnswererFactory | None = None, prog: str = "internvl eval"
) -> argparse.ArgumentParser:
    """A stand-alone parser for the eval commands (used by `python -m internvl.eval`)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Evaluate a model on benchmark files; score and compare runs."
    )
    _add_subcommands(parser, answerer_factory)
    return parser


def _add_subcommands(parser: argparse.ArgumentParser, answerer_factory: AnswererFactory | None) -> None:
    commands = parser.add_subparsers(dest="eval_command", metavar="{run,score,compare}", required=True)

    run = commands.add_parser("run", help="answer a benchmark file with a model, score and report (restartable)")
    run.add_argument(
        "--data",
        required=True,
        type=Path,
        help="benchmark file: VLMEvalKit .tsv, internvl .jsonl, or SFT data (meta .json or .jsonl of conversations)",
    )
    run.add_argument("--out", required=True, type=Path, help="run folder (created; rerun the same command to resume)")
    run.add_argument("--model", default=None, help="model folder, or nano (the shipped model; the default)")
    _add_data_arguments(run)
    run.add_argument("--limit", type=int, default=None, help="answer only the first N items")
    threads.add_option(run)
    run.add_argument("--batch-size", type=int, default=1, help="items per answerer call (default 1)")
    run.add_argument(
        "--max-tiles", type=int, default=6, help="dynamic-tiling limit per image (default 6; 1 = no tiling)"
    )
    run.add_argument("--template", default=None, help="conversation template (default: the model's)")
    run.add_argument("--system-prompt", default=None, help="system prompt (default: the template's)")
    run.add_argument("--cot", action="store_true", help="ask for step-by-step reasoning and a 'Final answer:' line")
    run.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="model dtype (default: float32 on CPU, the checkpoint's on CUDA)",
    )
    run.add_argument(
        "--quantize", choices=["int8", "int4"], default=None, help="weight-only int8 or int4 language model"
    )
    run.add_argument(
        "--visual-resolution",
        choices=VISUAL_RESOLUTIONS,
        default=None,
        help="Flash models: tiles full, compressed or as the router decides (default: router on Flash models)",
    )
    run.add_argument(
        "--v2pe-delta",
        type=float,
        default=None,
        help="V2PE step of image tokens, in (0, 1] (default: the model config's; docs/v2pe.md)",
    )
    generation = default_generation()
    run.add_argument("--max-new-tokens", type=int, default=generation["max_new_tokens"])
    run.add_argument("--temperature", type=float, default=generation["temperature"], help="0 = greedy (default)")
    run.add_argument("--top-p", type=float, default=generation["top_p"])
    run.add_argument(
        "--best-of-n", type=int, default=1, help="sample N candidates per item and keep the critic's best (docs/prm.md)"
    )
    run.add_argument(
        "--critic",
        default=None,
        help="with --best-of-n: prm:DIR, orm:DIR or self-consistency (majority vote; the default)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_scoring_arguments(run)
    run.set_defaults(func=partial(handle_run, answerer_factory=answerer_factory))

    score = commands.add_parser("score", help="score an existing predictions file again")
    score.add_argument("predictions", type=Path, help=f"a run folder or a {PREDICTIONS_FILE} file")
    score.add_argument(
        "--data", type=Path, default=None, help="take answers, metrics and categories from this data file instead"
    )
    _add_data_arguments(score)
    score.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write scores, summary and chart (default: next to the predictions)",
    )
    _add_scoring_arguments(score)
    score.set_defaults(func=handle_score)

    comparison = commands.add_parser("compare", help="put several scored runs side by side")
    comparison.add_argument("runs", nargs="+", type=Path, help="run folders (each with summary.json)")
    comparison.add_argument(
        "--out", type=Path, default=Path("."), help="folder for compare.json and compare.png (default: .)"
    )
    comparison.set_defaults(func=handle_compare)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind", choices=KINDS, default=None, help="question kind of the whole file (default: inferred per item)"
    )
    parser.add_argument(
        "--metric", choices=METRICS, default=None, help="metric for every item (default: the item's or inferred)"
    )


def _add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ScoringSettings()
    group = parser.add_argument_group("scoring")
    group.add_argument(
        "--tolerance",
        type=float,
        default=defaults.numeric_rel_tol,
        help="relative tolerance of 'numeric' answers (e.g. 0.05)",
    )
    group.add_argument("--anls-threshold", type=float, default=defaults.anls_threshold)
    group.add_argument("--iou-threshold", type=float, default=defaults.iou_threshold)
    group.add_argument(
        "--judge-model", default=None, help="chat model grading 'judge' items (without it they stay unscored)"
    )
    group.add_argument(
        "--judge-base-url", default=None, help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL or OpenAI)"
    )
    group.add_argument("--judge-api-key", default=None, help="API key (default: $OPENAI_API_KEY)")


def _scoring(args: argparse.Namespace) -> tuple[ScoringSettings, Judge | None]:
    config = ScoringSettings(
        numeric_rel_tol=args.tolerance, anls_threshold=args.anls_threshold, iou_threshold=args.iou_threshold
    )
    judge = None
    if args.judge_model:
        judge = Judge(JudgeSettings(model=args.judge_model, base_url=args.judge_base_url, api_key=args.judge_api_key))
    return config, judge


def recorded_model(model: str | None) -> str | None:
    """The model as settings.json records it: a shipped model's name as is, a folder as an absolute path
    (so that the record still says which model answered when read from elsewhere)."""
    if model is None or model in SHIPPED:
        return model
    return str(Path(model).resolve())


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The RunSettings a `run` command line asks for."""
    check_v2pe_delta(args.v2pe_delta, "--v2pe-delta")  # before any model work
    generation = {
        "max_new_tokens": args.max_new_tokens,
        "do_sample": args.temperature > 0,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "num_beams": 1,
    }
    return RunSettings(
        model=recorded_model(args.model),
        max_tiles=args.max_tiles,
        template=args.template,
        system_prompt=args.system_prompt,
        chain_of_thought=args.cot,
        generation=generation,
        extra={
            k: v
            for k, v in best_of_n_settings(args)
            + (("dtype", args.dtype), ("quantize", args.quantize), ("visual_resolution", args.visual_resolution))
            + (("v2pe_delta", args.v2pe_delta),)
            if v is not None
        },
    )


def best_of_n_settings(args: argparse.Namespace) -> tuple[tuple[str, Any], ...]:
    """("best_of_n", N), ("critic", spec) for RunSettings.extra, checked; nothing for a plain run."""
    if args.best_of_n < 1:
        raise InputError(f"--best-of-n must be at least 1, got {args.best_of_n}")
    if args.best_of_n == 1:
        if args.critic is not None:
            raise InputError("--critic needs --best-of-n N with N of 2 or more")
        return ()
    from internvl.eval.best_of_n import parse_critic

    critic = args.critic or "self-consistency"
    kind, folder = parse_critic(critic)
    if folder:
        critic = f"{kind}:{recorded_model(folder)}"
    return (("best_of_n", args.best_of_n), ("critic", critic))


def handle_run(args: argparse.Namespace, answerer_factory: AnswererFactory | None = None) -> int:
    if answerer_factory is None:
        print(
            "error: `internvl eval run` needs the model-backed answerer, which is not wired in yet; "
            "`internvl eval score` and `compare` work on existing predictions",
            file=sys.stderr,
        )
        return 2
    config, judge = _scoring(args)
    items = load_items(args.data, kind=args.kind, metric=args.metric)
    settings = settings_from_args(args)
    answerer = answerer_factory(settings)
    run_eval(
        items,
        answerer,
        args.out,
        settings,
        batch_size=args.batch_size,
        limit=args.limit,
        scoring=config,
        judge=judge,
        data_path=str(args.data.resolve()),
        progress=not args.no_progress,
    )
    return 0


def handle_score(args: argparse.Namespace) -> int:
    if args.data is None and (args.kind or args.metric):
        print("error: --kind/--metric apply to a --data file", file=sys.stderr)
        return 2
    config, judge = _scoring(args)
    path = args.predictions / PREDICTIONS_FILE if args.predictions.is_dir() else args.predictions
    items = load_items(args.data, kind=args.kind, metric=args.metric) if args.data is not None else None
    rescore(path, args.out, items, config, judge)
    return 0


def handle_compare(args: argparse.Namespace) -> int:
    comparison = compare(args.runs)
    print(format_compare_table(comparison))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(comparison, indent=2) + "\n", encoding="utf-8")
    try:
        write_compare_chart(comparison, args.out / "compare.png")
        print(f"wrote {args.out / 'compare.json'} and {args.out / 'compare.png'}", file=sys.stderr)
    except ImportError:
        print(f"wrote {args.out / 'compare.json'} (matplotlib is not installed: no compare.png)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None, answerer_factory: AnswererFactory | None = None) -> int:
    """Parse and dispatch; library errors become a one-line message and exit code 1."""
    args = build_parser(answerer_factory).parse_args(argv)
    threads.apply(getattr(args, "threads", None))
    try:
        return args.func(args)
    except InternVLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
