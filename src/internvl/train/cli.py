"""Command-line wiring of the training recipes, for `internvl.cli` to register with `add_train_commands`.

    internvl train sft RECIPE.yaml [dotted.key=value ...] [--print-config]
    internvl train mpo RECIPE.yaml [dotted.key=value ...] [--print-config]
    internvl train gspo RECIPE.yaml [dotted.key=value ...] [--print-config]
    internvl train vico RECIPE.yaml [dotted.key=value ...] [--print-config]
    internvl train export RUN_OR_CHECKPOINT OUT [--layout original|hf] [--dtype bf16]
    internvl plot RUN [--out FILE]

Until registered there, the same commands run as `python -m internvl.train.cli train sft ...`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from internvl import threads
from internvl.errors import InternVLError


def _recipe(args: argparse.Namespace) -> int:
    """`train sft`, `mpo`, `gspo` and `vico`: the recipe module has load_config, validate and run."""
    import importlib

    from internvl.settings import dump_yaml

    recipe = importlib.import_module(f"internvl.train.{args.recipe_command}")
    config = recipe.load_config(args.recipe, args.overrides)
    if args.print_config:
        recipe.validate(config)  # a typo in the recipe shows now, not after the model has loaded
        sys.stdout.write(dump_yaml(config))
        return 0
    result = recipe.run(config)
    if result["step"] and os.environ.get("RANK", "0") == "0" and not result.get("already_finished"):
        print(f"step {result['step']}: loss {result['loss']:.4f}; checkpoint {result['checkpoint']}", file=sys.stderr)
    return 0


def _merge_lora(args: argparse.Namespace) -> int:
    from internvl.config import dtype_by_name
    from internvl.train.sft import export_model

    out = export_model(
        args.checkpoint, args.out, layout=args.layout, dtype=dtype_by_name(args.dtype), overwrite=args.overwrite
    )
    print(f"wrote a merged {args.layout} checkpoint to {out}", file=sys.stderr)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from internvl.train.metrics import plot_metrics

    print(plot_metrics(args.run, args.out))
    return 0


RECIPES = (
    (
        "sft",
        "supervised fine-tuning",
        "Supervised fine-tuning configured by a YAML recipe; settings can be overridden as dotted.key=value "
        "(e.g. optim.lr=1e-4 lora.language_rank=16). Under torchrun each process trains one data-parallel rank.",
    ),
    (
        "mpo",
        "Mixed Preference Optimization on chosen / rejected pairs",
        "MPO (0.8 DPO + 0.2 BCO + 1.0 SFT on the chosen answer) on MPO JSONL pairs named by a meta JSON, "
        "configured by a YAML recipe; everything but the loss is the SFT recipe (docs/mpo.md).",
    ),
    (
        "gspo",
        "online RL with GSPO on questions with rule rewards",
        "GSPO (sequence-level clipped importance ratios, group-normalised advantages, no KL) on a JSONL of "
        "questions: the policy samples group_size answers per question, rule rewards score them, and the "
        "updates follow; everything but the objective is the SFT recipe (docs/gspo.md).",
    ),
    (
        "vico",
        "ViCO: train a Flash model's compressed connector (stage 1) or its resolution router (stage 2)",
        "ViCO for InternVL3.5-Flash (docs/flash.md): vico.stage=consistency trains the second connector with "
        "KL(full-resolution reference || policy on randomly compressed tiles); vico.stage=router trains the "
        "Visual Resolution Router on labels from loss ratios. Everything but the objective is the SFT recipe.",
    ),
)


def add_train_commands(subparsers: argparse._SubParsersAction) -> None:
    """`train sft`, `mpo`, `gspo`, `vico`, `train export` (alias `merge-lora`) and `plot`."""
    from internvl.weights import OVERWRITE_HELP

    train = subparsers.add_parser("train", help="fine-tune a model (recipes configured by YAML)")
    recipes = train.add_subparsers(dest="recipe_command", required=True)

    for name, summary, description in RECIPES:
        command = recipes.add_parser(name, help=summary, description=description)
        command.add_argument("recipe", help=f"YAML recipe (see configs/{name if name != 'sft' else 'sft_'}*.yaml)")
        command.add_argument("overrides", nargs="*", help="dotted.key=value settings applied after the recipe")
        command.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
        threads.add_option(command)
        command.set_defaults(func=_recipe)

    merge = recipes.add_parser(
        "export",
        aliases=["merge-lora"],
        help="export a training checkpoint as a model folder (LoRA adapters merged)",
        description="Rebuild the model of a training checkpoint, merge its LoRA adapters (if any) into the base "
        "weights and save a plain checkpoint folder that --model, internvl.load and internvl.weights.load_model "
        "(and transformers, for --layout hf) load. `merge-lora` is the same command's older name.",
    )
    merge.add_argument("checkpoint", help="a checkpoint folder (RUN/checkpoints/step-N) or a run folder (its latest)")
    merge.add_argument("out", help="output folder (its config.json and weight files are replaced; nothing else)")
    merge.add_argument("--layout", choices=["original", "hf"], default="original", help="checkpoint layout to write")
    merge.add_argument("--dtype", default=None, help="cast the merged weights (bfloat16, float16, float32)")
    merge.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    merge.set_defaults(func=_merge_lora)

    plot = subparsers.add_parser("plot", help="plot a training run's loss and learning rate (RUN/metrics.png)")
    plot.add_argument("run", help="training run folder (holds metrics.jsonl)")
    plot.add_argument("--out", default=None, help="PNG path (default RUN/metrics.png)")
    plot.set_defaults(func=_plot)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="internvl", description="InternVL training commands")
    add_train_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    threads.apply(getattr(args, "threads", None))
    try:
        return int(args.func(args) or 0)
    except InternVLError as exc:
        print(f"internvl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
