#!/usr/bin/env bash
# VisualPRM's Best-of-N on the world, in one run (docs/prm.md#the-effect-on-the-world): process-reward data from
# the shipped nano's own chain-of-thought solutions, a PRM and an ORM trained on it, and Best-of-N with the
# three critics (PRM, ORM, self-consistency) on the test split's reasoning, counting and charts items.
#
#   bash scripts/prm_world.sh                 about 1.5 hours on 2 CPU cores; everything in runs/prm-world
#   bash scripts/prm_world.sh --quick         a small scale (the plumbing only: too few items to judge)
#   bash scripts/prm_world.sh --device cuda   sampling and training on a GPU
#
# Steps (each skipped or resumed when its output exists; delete runs/prm-world to start over):
#   1. questions  world train questions of reasoning, counting and charts (seed 4, which no other stage used),
#                 and val questions of the same families, held out for the PRM's step accuracy
#   2. PRM data   internvl data prm: 4 sampled solutions per question, 8 continuations from every step prefix;
#                 a step's label is "+" when a continuation reaches the right answer (early stop)
#   3. critics    internvl train sft configs/prm_world.yaml on prm.jsonl (the PRM) and on orm.jsonl (the ORM)
#   4. Best-of-N  internvl eval run --cot --best-of-n 16 --critic prm:... on the test items; then
#                 benchmarks/prm_world.py scores the same recorded candidates with the PRM again (a check of
#                 the eval's scores), the ORM and self-consistency, draws accuracy against N = 1, 2, 4, 8, 16
#                 (the first N candidates), scores the held-out steps and checks the issue's bars
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib.sh
quick_and_device prm_world.sh "$@"
if [ "$QUICK" = 1 ]; then
  RUN=runs/prm-world-quick; QUESTIONS=16; HELD_OUT=6; TEST=12; STEPS=10; N=4
else
  RUN=runs/prm-world; QUESTIONS=200; HELD_OUT=40; TEST=300; STEPS=300; N=16
fi
FAMILIES=(reasoning counting charts)
SAMPLING=(--solutions 4 --continuations 8 --max-new-tokens 160 --max-tiles 1 --device $DEVICE --no-progress)
start=$(date +%s)

for part in train val; do
  n=$QUESTIONS; seed=4; [ $part = val ] && n=$HELD_OUT && seed=5
  if [ ! -f $RUN/questions-$part/meta.json ]; then
    $PY -m internvl.cli world generate --out $RUN/questions-$part --split $part --seed $seed --n $n \
      --families "${FAMILIES[@]}" --workers 2 --no-progress
  fi
done
$PY -m internvl.cli data prm --model $START --data $RUN/questions-train/train.jsonl \
  --media-root $RUN/questions-train/images --out $RUN/data "${SAMPLING[@]}"
$PY -m internvl.cli data prm --model $START --data $RUN/questions-val/val.jsonl \
  --media-root $RUN/questions-val/images --out $RUN/held-out "${SAMPLING[@]}"
echo "PRM data built in $(minutes $start) minutes" >&2

t=$(date +%s)
for critic in prm orm; do
  $PY -m internvl.cli train sft configs/prm_world.yaml output_dir=$RUN/$critic \
    data.options.meta_path=$RUN/data/meta_$critic.json train.max_steps=$STEPS train.device=$DEVICE
  [ -f $RUN/$critic-model/config.json ] || $PY -m internvl.cli train export $RUN/$critic $RUN/$critic-model --dtype float32
done
echo "PRM and ORM trained in $(minutes $t) minutes" >&2

t=$(date +%s)
[ -f $RUN/test-cot.tsv ] || $PY -m internvl.cli world export-tsv --out $RUN/test-cot.tsv --split test --n $TEST \
  --families "${FAMILIES[@]}" --workers 2 --no-progress
if [ ! -f $RUN/bon-prm/summary.json ]; then
  $PY -m internvl.cli eval run --model $START --data $RUN/test-cot.tsv --out $RUN/bon-prm --cot --best-of-n $N \
    --critic prm:$RUN/prm-model --temperature 0.7 --batch-size 8 --max-new-tokens 160 --no-progress > /dev/null
  echo $(( $(date +%s) - t )) > $RUN/bon-prm/wall_s.txt  # sampling and PRM scoring (of a resumed run: its last part)
fi
echo "Best-of-$N with the PRM evaluated in $(minutes $t) minutes" >&2
$PY benchmarks/prm_world.py $RUN --out $RUN/report.md --plot $RUN/accuracy.png
echo "prm_world done in $(minutes $start) minutes: $RUN/report.md" >&2
