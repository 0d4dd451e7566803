#!/usr/bin/env bash
# Train the nano InternVL from scratch on the procedural world and install it as the embedded default.
#   bash scripts/train_nano.sh            (about 30 minutes on a 2-core CPU)
# Steps: world train split -> tokenizer + random init -> SFT (configs/nano.yaml) -> export (bf16,
# original layout) to src/internvl/assets/nano -> evaluation on the world's test split.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
RUN=runs/nano
TRAIN_SAMPLES=${TRAIN_SAMPLES:-10000}
start=$(date +%s)

$PY -m internvl.cli world generate --out $RUN/world-train --split train --n "$TRAIN_SAMPLES" --workers 2
$PY -m internvl.nano.init --data $RUN/world-train --out $RUN/init
$PY -m internvl.cli train sft configs/nano.yaml "$@"
rm -rf src/internvl/assets/nano
$PY -m internvl.cli train merge-lora $RUN/sft src/internvl/assets/nano --layout original --dtype bf16
echo "nano model trained and installed in $(( ($(date +%s) - start) / 60 )) minutes" >&2

$PY -m internvl.cli world export-tsv --out $RUN/world-test.tsv --split test --n 1000 --workers 2
$PY -m internvl.cli eval run --data $RUN/world-test.tsv --out $RUN/eval-test --batch-size 8 --max-new-tokens 64
