#!/usr/bin/env bash
# The effect of InternVL3.5-Flash's ViCO on the world (docs/flash.md#the-effect-on-the-world): from the shipped
# nano model, train the compressed connector (stage 1) and the router (stage 2), then answer the world's
# test split three ways: every tile full, every tile compressed, and as the router decides.
#
#   bash scripts/vico_world.sh [--device cuda] [--train N] [--test N]
#
# Every step is skipped when its output exists (delete runs/vico to start over); the training stages
# resume from their checkpoints. The table: python benchmarks/vico_world.py --run runs/vico
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=cpu; TRAIN=4000; TEST=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift ;;
    --train) TRAIN="$2"; shift ;;
    --test) TEST="$2"; shift ;;
    *) echo "vico_world.sh: unknown argument $1 (use --device, --train, --test)" >&2; exit 2 ;;
  esac
  shift
done

source scripts/lib.sh
RUN=runs/vico
mkdir -p $RUN

if [ ! -f $RUN/world-train/meta.json ]; then
  $PY -m internvl.cli world generate --out $RUN/world-train --split train --n "$TRAIN" --seed 7 --workers 2 \
    --questions-per-image 4 --describe
fi
if [ ! -f $RUN/world-test.tsv ]; then
  $PY -m internvl.cli world export-tsv --out $RUN/world-test.tsv --split test --n "$TEST" --workers 2
fi

t=$(date +%s)
$PY -m internvl.cli train vico configs/vico_consistency.yaml output_dir=$RUN/consistency \
  data.options.meta_path=$RUN/world-train/meta.json train.device=$DEVICE train.precision=$(precision $DEVICE)
[ -f $RUN/consistency-model/config.json ] || $PY -m internvl.cli train export $RUN/consistency $RUN/consistency-model
echo "stage 1 (consistency) took $(minutes $t) minutes" >&2

t=$(date +%s)
$PY -m internvl.cli train vico configs/vico_router.yaml output_dir=$RUN/router model.path=$RUN/consistency-model \
  data.options.meta_path=$RUN/world-train/meta.json train.device=$DEVICE train.precision=$(precision $DEVICE)
[ -f $RUN/flash-model/config.json ] || $PY -m internvl.cli train export $RUN/router $RUN/flash-model
echo "stage 2 (router) took $(minutes $t) minutes" >&2

for mode in full compressed router; do
  if [ ! -f $RUN/eval-$mode/summary.json ]; then
    t=$(date +%s)
    $PY -m internvl.cli eval run --model $RUN/flash-model --data $RUN/world-test.tsv --out $RUN/eval-$mode \
      --batch-size 8 --max-new-tokens 64 --visual-resolution $mode
    echo "evaluation ($mode) took $(minutes $t) minutes" >&2
  fi
done
$PY benchmarks/vico_world.py --run $RUN
