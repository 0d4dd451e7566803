#!/usr/bin/env bash
# V2PE's effect on the world, in one run (docs/v2pe.md): the shipped nano model fine-tuned twice on the same
# data and steps, with V2PE (each image's step drawn from {1, 1/2, ..., 1/256}) and without it (step 1), then
# both asked `needle_colour` questions ("What colour is the star?", the one star among 4-16 small images) at
# the training family's length and with 2x, 4x and 8x as many images.
#
#   bash scripts/v2pe_world.sh [--device cuda] [--test N]
#
# Steps (each skipped when its output exists, so a second run resumes; delete runs/v2pe-world to start over):
#   1. data        3000 `needle_colour` conversations (4-16 images, within 2048 tokens) + 1500 ordinary world
#                  conversations (4 questions and a description each; half of 3000 drawn), one mix
#   2. training    internvl train sft configs/v2pe_world.yaml, v2pe.mode=random and v2pe.mode=none
#   3. sweep       the V2PE model's inference step on 50 validation needles with 4x the images (steps 1, 1/4,
#                  1/16, 1/64)
#   4. evaluation  test needles at 1x, 2x, 4x, 8x (N each) and the ordinary test split (1000 items). The
#                  step-1 model's context is 4096 tokens, which 4x and 8x prompts exceed: it is also asked
#                  with the limit lifted to 32768 (the rotary embedding is unchanged; only the refusal moves)
#   5. report      runs/v2pe-world/report.md and accuracy.png: python benchmarks/v2pe_world.py runs/v2pe-world
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cpu; TEST=100
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift ;;
    --test) TEST="$2"; shift ;;
    *) echo "v2pe_world.sh: unknown argument $1 (use --device DEVICE, --test N)" >&2; exit 2 ;;
  esac
  shift
done
source scripts/lib.sh
RUN=runs/v2pe-world
SWEEP="1 0.25 0.0625 0.015625"
mkdir -p $RUN
start=$(date +%s)

# 1. data
[ -f $RUN/colour-train/meta.json ] || $PY -m internvl.cli world generate --out $RUN/colour-train --split train \
  --n 3000 --seed 11 --families needle_colour --workers 2
[ -f $RUN/world-train/meta.json ] || $PY -m internvl.cli world generate --out $RUN/world-train --split train \
  --n 3000 --seed 5 --workers 2 --questions-per-image 4 --describe
if [ ! -f $RUN/mix.json ]; then
  $PY - $RUN <<'MIX'
import json, sys
run = sys.argv[1]
(_, needle), = json.load(open(f"{run}/colour-train/meta.json")).items()
(_, world), = json.load(open(f"{run}/world-train/meta.json")).items()
world["repeat_time"] = 0.5  # the ordinary conversations keep the other families; the needles are the lesson
json.dump({"needle_colour": needle, "world": world}, open(f"{run}/mix.json", "w"), indent=2)
MIX
fi
FAMILIES="needle_colour needle_colour_x2 needle_colour_x4 needle_colour_x8"
for family in $FAMILIES; do
  [ -f $RUN/test-$family.tsv ] || $PY -m internvl.cli world export-tsv --out $RUN/test-$family.tsv --split test \
    --n "$TEST" --families $family --workers 2
done
[ -f $RUN/val-needle_colour_x4.tsv ] || $PY -m internvl.cli world export-tsv --out $RUN/val-needle_colour_x4.tsv \
  --split val --n 50 --families needle_colour_x4 --workers 2
[ -f $RUN/test.tsv ] || $PY -m internvl.cli world export-tsv --out $RUN/test.tsv --split test --n 1000 --workers 2

# 2. the two fine-tunes: same data, seed and steps; only the positions differ
for name in v2pe plain; do
  mode=random; [ $name = plain ] && mode=none
  t=$(date +%s)
  $PY -m internvl.cli train sft configs/v2pe_world.yaml output_dir=$RUN/$name v2pe.mode=$mode \
    data.options.meta_path=$RUN/mix.json train.device=$DEVICE train.precision=$(precision $DEVICE)
  [ -f $RUN/$name-model/config.json ] || $PY -m internvl.cli train export $RUN/$name $RUN/$name-model --dtype float32
  echo "$name fine-tune took $(minutes $t) minutes" >&2
done
# the step-1 model with its context limit lifted (config only: plain rotary positions do not depend on it)
if [ ! -f $RUN/plain-lifted/config.json ]; then
  cp -r $RUN/plain-model $RUN/plain-lifted
  $PY - $RUN/plain-lifted/config.json <<'LIFT'
import json, sys
config = json.load(open(sys.argv[1]))
config["llm_config"]["max_position_embeddings"] = 32768
json.dump(config, open(sys.argv[1], "w"), indent=2)
LIFT
fi

ask() {  # ask MODEL DATA OUT [options]: one evaluation, skipped when done
  local model=$1 data=$2 out=$3; shift 3
  [ -f $out/summary.json ] || $PY -m internvl.cli eval run --model $model --data $data --out $out \
    --batch-size 4 --max-new-tokens 16 --no-progress "$@" > /dev/null
}
# 3. the V2PE model's inference step, chosen on validation needles at 4x the training length
for delta in $SWEEP; do ask $RUN/v2pe-model $RUN/val-needle_colour_x4.tsv $RUN/sweep-$delta --v2pe-delta $delta; done
DELTA=$($PY benchmarks/v2pe_world.py $RUN --best-delta $SWEEP)
echo "V2PE step chosen on validation: $DELTA" >&2

# 4. test needles at each length, and the ordinary test split
t=$(date +%s)
for family in $FAMILIES; do
  ask $RUN/v2pe-model $RUN/test-$family.tsv $RUN/eval-v2pe-$family --v2pe-delta $DELTA
  ask $RUN/plain-lifted $RUN/test-$family.tsv $RUN/eval-plain-$family
done
ask $RUN/v2pe-model $RUN/test.tsv $RUN/eval-v2pe-test --v2pe-delta $DELTA
ask $RUN/plain-model $RUN/test.tsv $RUN/eval-plain-test
ask $START $RUN/test.tsv $RUN/eval-start-test
# what answering without looking reaches (the most frequent training answer of each question type)
[ -f $RUN/eval-prior-needle_colour/summary.json ] || $PY -m internvl.nano.baselines prior --train $RUN/colour-train \
  --data $RUN/test-needle_colour.tsv --out $RUN/eval-prior-needle_colour > /dev/null
echo "evaluation took $(minutes $t) minutes" >&2

# 5. report
$PY benchmarks/v2pe_world.py $RUN --out $RUN/report.md --plot $RUN/accuracy.png
echo "v2pe_world done in $(minutes $start) minutes: $RUN/report.md" >&2
