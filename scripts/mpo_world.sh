#!/usr/bin/env bash
# MPO's effect on the world, in one run (docs/mpo.md#the-effect-on-the-world): pairs from the shipped nano
# model's own chain-of-thought answers, MPO on them, and the world's test split evaluated before and after,
# with and without chain-of-thought, in the same run.
#
#   bash scripts/mpo_world.sh                 about an hour on 2 CPU cores; everything in runs/mpo-world
#   bash scripts/mpo_world.sh --quick         a small scale (100 questions, 200 test samples; 17 minutes on a
#                                             shared CPU): the plumbing only, its 60 CoT items are too few to judge
#   bash scripts/mpo_world.sh --device cuda   sampling and training on a GPU
#
# Steps (each skipped when its output exists, so a second run resumes; delete runs/mpo-world to start over):
#   1. questions   3000 world train questions (seed 3: the nano never trained on them) from the families whose
#                  answers a chain of thought can reach: reasoning, counting, charts
#   2. pairs       internvl data mmpr: 8 sampled CoT answers per question, right against wrong, at most 4 pairs
#   3. MPO         internvl train mpo configs/mpo_world.yaml (one epoch over the pairs)
#   4. evaluation  the world's test split (100 per family) without --cot, and its reasoning, counting and
#                  charts items with --cot, before and after MPO; the issue's three bars checked in
#                  runs/mpo-world/report.md
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib.sh
quick_and_device mpo_world.sh "$@"
if [ "$QUICK" = 1 ]; then
  RUN=runs/mpo-world-quick; QUESTIONS=100; TEST=200
else
  RUN=runs/mpo-world; QUESTIONS=800; TEST=1000
fi
start=$(date +%s)

if [ ! -f $RUN/questions/meta.json ]; then
  $PY -m internvl.cli world generate --out $RUN/questions --split train --seed 3 --n 3000 \
    --families reasoning counting charts --workers 2
fi
$PY -m internvl.cli data mmpr --data $RUN/questions/train.jsonl --media-root $RUN/questions/images \
  --out $RUN/pairs --samples 8 --max-pairs 4 --batch 8 --max-new-tokens 160 --limit $QUESTIONS --device $DEVICE
echo "pairs built in $(minutes $start) minutes" >&2

t=$(date +%s)
$PY -m internvl.cli train mpo configs/mpo_world.yaml output_dir=$RUN/mpo model.path=$START \
  data.options.meta_path=$RUN/pairs/meta.json train.device=$DEVICE
if [ ! -f $RUN/model/config.json ]; then
  $PY -m internvl.cli train export $RUN/mpo $RUN/model --dtype float32
fi
echo "MPO trained in $(minutes $t) minutes" >&2

# Direct answers on every family (the second bar); chain-of-thought on the families it is for (the same items).
[ -f $RUN/test.tsv ] || $PY -m internvl.cli world export-tsv --out $RUN/test.tsv --split test --n $TEST --workers 2
[ -f $RUN/test-cot.tsv ] || $PY -m internvl.cli world export-tsv --out $RUN/test-cot.tsv --split test \
  --n $((TEST * 3 / 10)) --families reasoning counting charts --workers 2
for name in start mpo; do
  model=$START; [ $name = mpo ] && model=$RUN/model
  $PY -m internvl.cli eval run --model $model --data $RUN/test.tsv --out $RUN/eval-$name-direct \
    --batch-size 8 --max-new-tokens 160 --no-progress > /dev/null
  $PY -m internvl.cli eval run --model $model --data $RUN/test-cot.tsv --out $RUN/eval-$name-cot --cot \
    --batch-size 8 --max-new-tokens 160 --no-progress > /dev/null
done
$PY benchmarks/mpo_world.py $RUN --out $RUN/report.md
cp $RUN/mpo/metrics.png $RUN/metrics.png
echo "mpo_world done in $(minutes $start) minutes: $RUN/report.md" >&2
