#!/usr/bin/env bash
# Probe: does a text-only decoder stage (stage 1b: the world in words, internvl.nano.text_world) make the
# nano learn the world faster? Two arms from the same init (the committed stage-1 encoder, a random
# projector and decoder) and the same data:
#   plain: warm-up (WARM_STEPS) -> SFT probe (SFT_STEPS)
#   text:  text stage (TEXT_STEPS, configs/nano_text.yaml, on the chat and --lm texts and the drills of
#          internvl.nano.drills) -> the same warm-up -> the same SFT probe
# The SFT probe is benchmarks/nano_probe.py (configs/nano_sft_more.yaml at stage 3's peak learning rate on
# the world + warm-up mix), each checkpoint evaluated on 300 world test samples; the tables go to BENCHMARKS.md.
#
#   bash benchmarks/nano_text_probe.sh [text] [plain]   the arms named (default both); runs in runs/nano2
#
# Every step resumes or is skipped when its output exists. Check the text stage first with
# benchmarks/nano_copy_probe.py --data runs/nano2/world --models runs/nano2/text-model: on 2 CPU cores, 400
# text steps did not make the decoder copy (docs/nano/README.md#stage-1b-the-world-in-words), so the arms
# after it were not run (that run had no drills; they came later, docs/nano/README.md#drills). The probe is
# meant for a GPU, where the text stage can run long enough for lookup to form (about 10^8 tokens):
#
#   DEVICE=cuda TEXT_STEPS=20000 bash benchmarks/nano_text_probe.sh text plain
#
# DEVICE=cuda trains in bf16 on the GPU (fp32 on a CPU); the evaluations run where `internvl eval run` runs.
# WORLD_N (default 12000) sets the number of world conversations, for a quick check of the script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RUN=${RUN:-runs/nano2}
TEXT_STEPS=${TEXT_STEPS:-400}; WARM_STEPS=${WARM_STEPS:-100}; SFT_STEPS=${SFT_STEPS:-500}; EVERY=${EVERY:-250}
DEVICE=${DEVICE:-cpu}; WORLD_N=${WORLD_N:-12000}
if [ "$DEVICE" = cpu ]; then PRECISION=fp32; else PRECISION=bf16; fi
QUIET=(train.precision=$PRECISION train.device=$DEVICE log.progress_bar=false)

[ -f $RUN/world/meta.json ] || $PY -m internvl.cli world generate --out $RUN/world --split train --n $WORLD_N \
  --questions-per-image 4 --describe --workers 2
[ -f $RUN/warmup/mix.json ] || $PY -m internvl.nano.warmup --out $RUN/warmup --n 3000 --mix $RUN/world/meta.json
[ -f $RUN/init/config.json ] || $PY -m internvl.nano.init --data $RUN/world --out $RUN/init \
  --vision src/internvl/assets/nano-vision.safetensors
[ -f $RUN/text-data/meta.json ] || $PY -m internvl.nano.text_world --data $RUN/world --out $RUN/text-data
[ -f $RUN/text-lm/meta.json ] || $PY -m internvl.nano.text_world --data $RUN/world --out $RUN/text-lm --lm
[ -f $RUN/drills/meta.json ] || $PY -m internvl.nano.drills --data $RUN/world --out $RUN/drills
[ -f $RUN/test-300.tsv ] || $PY -m internvl.cli world export-tsv --out $RUN/test-300.tsv --split test --n 300 --workers 2

ARMS=("$@"); [ ${#ARMS[@]} -gt 0 ] || ARMS=(text plain)
for arm in "${ARMS[@]}"; do
  start=$RUN/init
  if [ $arm = text ]; then
    [ -f $RUN/text-mix.json ] || $PY -c "import sys; from internvl.nano.warmup import mix_meta; mix_meta(sys.argv[1], sys.argv[2:])" \
      $RUN/text-mix.json $RUN/text-data/meta.json $RUN/text-lm/meta.json $RUN/drills/meta.json
    $PY -m internvl.cli train sft configs/nano_text.yaml output_dir=$RUN/text model.path=$RUN/init \
      data.options.meta_path=$RUN/text-mix.json train.max_steps=$TEXT_STEPS checkpoint.every_steps=$((TEXT_STEPS / 2)) \
      "${QUIET[@]}"
    [ -f $RUN/text-model/config.json ] || $PY -m internvl.cli train export $RUN/text $RUN/text-model --dtype float32
    start=$RUN/text-model
  fi
  $PY -m internvl.cli train sft configs/nano_warmup.yaml output_dir=$RUN/warm-$arm model.path=$start \
    data.options.meta_path=$RUN/warmup/meta.json train.max_steps=$WARM_STEPS checkpoint.every_steps=$WARM_STEPS \
    "${QUIET[@]}"
  [ -f $RUN/warm-$arm-model/config.json ] || $PY -m internvl.cli train export $RUN/warm-$arm $RUN/warm-$arm-model \
    --dtype float32
  $PY benchmarks/nano_probe.py --name 1b-$arm --start $RUN/warm-$arm-model --data $RUN/warmup/mix.json \
    --steps $SFT_STEPS --every $EVERY --test $RUN/test-300.tsv --append -- optim.lr=1e-3 optim.warmup_steps=100 \
    train.precision=$PRECISION train.device=$DEVICE
done
