#!/usr/bin/env bash
# Cascade RL on the world, in one run (docs/gspo.md#the-effect-on-the-world): the shipped nano (the SFT model),
# then MPO on pairs of its own chain-of-thought answers, then online GSPO from the MPO model, all on the world's
# train split; the three models evaluated on the same test items in one table.
#
#   bash scripts/cascade_world.sh                 about 2 hours on 2 CPU cores; runs/mpo-world and runs/cascade-world
#   bash scripts/cascade_world.sh --quick         a small scale (the plumbing only: too few items to judge)
#   bash scripts/cascade_world.sh --device cuda   sampling and training on a GPU
#
# Steps (each skipped or resumed when its output exists; delete the run folders to start over):
#   1. SFT -> MPO  scripts/mpo_world.sh: 3000 train questions of reasoning, counting and charts (seed 3),
#                  pairs from 8 sampled CoT answers, MPO, and the start and MPO models evaluated
#   2. GSPO        internvl train gspo configs/gspo_world.yaml from the MPO model, on the same questions:
#                  8 answers per question, the world's scorer and the answer's format as rewards
#   3. evaluation  the GSPO model on the test items of step 1 (direct on every family, --cot on reasoning,
#                  counting and charts); benchmarks/cascade_world.py writes the table and checks the issue's
#                  bars in runs/cascade-world/report.md
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib.sh
quick_and_device cascade_world.sh "$@"
if [ "$QUICK" = 1 ]; then
  MPO=runs/mpo-world-quick; RUN=runs/cascade-world-quick; STEPS=20
else
  MPO=runs/mpo-world; RUN=runs/cascade-world; STEPS=300
fi
start=$(date +%s)

bash scripts/mpo_world.sh "${FLAGS[@]}"

t=$(date +%s)
$PY -m internvl.cli train gspo configs/gspo_world.yaml output_dir=$RUN/gspo model.path=$MPO/model \
  data.options.questions=$MPO/questions/train.jsonl data.options.media_root=$MPO/questions/images \
  train.max_steps=$STEPS train.device=$DEVICE
if [ ! -f $RUN/model/config.json ]; then
  $PY -m internvl.cli train export $RUN/gspo $RUN/model --dtype float32
fi
echo "GSPO trained in $(minutes $t) minutes" >&2

$PY -m internvl.cli eval run --model $RUN/model --data $MPO/test.tsv --out $RUN/eval-gspo-direct \
  --batch-size 8 --max-new-tokens 160 --no-progress > /dev/null
$PY -m internvl.cli eval run --model $RUN/model --data $MPO/test-cot.tsv --out $RUN/eval-gspo-cot --cot \
  --batch-size 8 --max-new-tokens 160 --no-progress > /dev/null
$PY benchmarks/cascade_world.py $RUN --mpo-run $MPO --out $RUN/report.md
cp $RUN/gspo/metrics.png $RUN/metrics.png
echo "cascade_world done in $(minutes $start) minutes: $RUN/report.md" >&2
