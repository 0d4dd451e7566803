#!/usr/bin/env bash
# Train the nano InternVL from scratch on the procedural world and install it as the embedded default.
#   bash scripts/train_nano.sh            (training: under 30 minutes on a 2-core CPU; evaluation after)
# Steps: world train split -> tokenizer + random init -> SFT (configs/nano.yaml) -> export (bf16,
# original layout) to src/internvl/assets/nano -> evaluation on the world's test split.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
RUN=runs/nano
TRAIN_SAMPLES=${TRAIN_SAMPLES:-10000}
start=$(date +%s)

# 4 questions per picture (multi-turn lines): more supervised answers per encoded image; plus one
# "Describe what the picture shows." turn whose answer names every object and where it is
$PY -m internvl.cli world generate --out $RUN/world-train --split train --n "$TRAIN_SAMPLES" --workers 2 \
  --questions-per-image 4 --describe
$PY -m internvl.nano.init --data $RUN/world-train --out $RUN/init
# dense per-patch labels (colour, shape, size of the object under each patch) teach the encoder to see
$PY -m internvl.nano.vision_warmup --model $RUN/init --steps "${VISION_STEPS:-300}"
rm -rf $RUN/sft  # a fresh start: the recipe would otherwise resume an earlier run's last checkpoint
$PY -m internvl.cli train sft configs/nano.yaml "$@"
rm -rf src/internvl/assets/nano
$PY -m internvl.cli train merge-lora $RUN/sft src/internvl/assets/nano --layout original --dtype bf16
echo "nano model trained and installed in $(( ($(date +%s) - start) / 60 )) minutes" >&2

# Evaluation (README tables): the model, two baselines in the same harness, dynamic tiling vs one tile.
rm -rf $RUN/eval-* $RUN/compare  # `internvl eval run` resumes a folder it finds: start clean
$PY -m internvl.cli world export-tsv --out $RUN/world-test.tsv --split test --n 1000 --workers 2
$PY -m internvl.cli eval run --data $RUN/world-test.tsv --out $RUN/eval-test --batch-size 8 --max-new-tokens 64
$PY -m internvl.nano.baselines prior --train $RUN/world-train --data $RUN/world-test.tsv --out $RUN/eval-prior
$PY -m internvl.cli eval run --model $RUN/init --data $RUN/world-test.tsv --out $RUN/eval-untrained --batch-size 8 \
  --max-new-tokens 64 --no-progress
$PY -m internvl.cli eval compare $RUN/eval-prior $RUN/eval-untrained $RUN/eval-test --out $RUN/compare
$PY -m internvl.cli world export-tsv --out $RUN/world-detail.tsv --split test --n 200 --families detail --workers 2
$PY -m internvl.cli eval run --data $RUN/world-detail.tsv --out $RUN/eval-detail-6tiles --max-tiles 6 --batch-size 8 \
  --max-new-tokens 32 --no-progress
$PY -m internvl.cli eval run --data $RUN/world-detail.tsv --out $RUN/eval-detail-1tile --max-tiles 1 --batch-size 8 \
  --max-new-tokens 32 --no-progress
cp $RUN/sft/metrics.png docs/nano/loss.png
cp $RUN/compare/compare.png docs/nano/compare.png
