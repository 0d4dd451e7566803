#!/usr/bin/env bash
# Train the nano InternVL in stages on the procedural world, install it as the embedded default, evaluate it.
#
#   bash scripts/train_nano.sh                  the full recipe, then the README's evaluation
#   bash scripts/train_nano.sh --quick          every stage at a small scale (under 30 minutes on 2 CPU cores) in
#                                               runs/nano-quick; installs nothing; bar: above the answer prior in
#                                               every family
#   bash scripts/train_nano.sh --vision-asset   skip stage 1: start from the committed encoder
#                                               (src/internvl/assets/nano-vision.safetensors)
#   bash scripts/train_nano.sh --device cuda    run the training stages on a GPU
#
# Stages (each one resumable command with its own output folder and YAML recipe; run the script again
# after an interruption and each stage goes on from its last checkpoint; delete the run folder to start over):
#   1. vision pre-training     python -m internvl.nano.vision_pretrain configs/nano_vision.yaml  -> RUN/vision
#      data: world + warm-up pictures + tokenizer + init (stage 1's encoder, random projector and decoder)
#   2. warm-up, encoder frozen internvl train sft configs/nano_warmup.yaml                        -> RUN/warm
#   3. SFT, encoder frozen     internvl train sft configs/nano_sft.yaml (world + warm-up mix)     -> RUN/sft
#   4. more SFT (full recipe)  internvl train sft configs/nano_sft_more.yaml (+ 20,000 new world
#                              conversations, seed 1)                                             -> RUN/more
# then the export (bf16, original layout) and the evaluation on the world's test split.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0; VISION_ASSET=0; DEVICE=cpu
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --vision-asset) VISION_ASSET=1 ;;
    --device) DEVICE="$2"; shift ;;
    *) echo "train_nano.sh: unknown argument $1 (use --quick, --vision-asset, --device DEVICE)" >&2; exit 2 ;;
  esac
  shift
done

bash scripts/setup.sh
PY=.venv/bin/python
if [ "$QUICK" = 1 ]; then
  RUN=runs/nano-quick; TRAIN_SAMPLES=4000; WARMUP_PICTURES=2000; TEST_SAMPLES=300; MODEL=$RUN/model
  VISION_ARGS=(steps=700 eval_every=100); WARM_ARGS=(train.max_steps=200)
  SFT_ARGS=(train.max_steps=500 checkpoint.every_steps=100)
else
  RUN=runs/nano; TRAIN_SAMPLES=20000; WARMUP_PICTURES=6000; TEST_SAMPLES=1000; MODEL=src/internvl/assets/nano
  VISION_ARGS=(); WARM_ARGS=(); SFT_ARGS=()
fi
# Both recipes compute in bf16 (autocast). A CPU without native bf16 runs that slower than fp32: use fp32 there
# (the package's own test of the CPU, internvl.model.linear.cpu_has_native_bf16).
if [ "$DEVICE" = cpu ] && ! $PY -c "import sys; from internvl.model.linear import cpu_has_native_bf16 as f; sys.exit(not f())"; then
  echo "this CPU has no native bf16 (AVX512-BF16 or AMX): training in fp32" >&2
  VISION_ARGS+=(precision=fp32); WARM_ARGS+=(train.precision=fp32); SFT_ARGS+=(train.precision=fp32)
fi
start=$(date +%s)
minutes() { echo $(( ($(date +%s) - $1) / 60 )); }

# Stage 1: the vision encoder alone, on dense per-patch labels of the world's train scenes.
if [ "$VISION_ASSET" = 1 ]; then
  VISION=src/internvl/assets/nano-vision.safetensors
else
  t=$(date +%s)
  $PY -m internvl.nano.vision_pretrain configs/nano_vision.yaml output_dir=$RUN/vision device=$DEVICE "${VISION_ARGS[@]}"
  VISION=$RUN/vision/vision.safetensors
  echo "stage 1 (vision pre-training) took $(minutes $t) minutes" >&2
fi

# Data, done once per run folder: training conversations (4 questions about a picture + a last "Describe what
# the picture shows." turn), the warm-up pictures (one or two large objects) and their mix with the world,
# the tokenizer, and the initial checkpoint with stage 1's encoder.
if [ ! -f $RUN/world-train/meta.json ]; then
  $PY -m internvl.cli world generate --out $RUN/world-train --split train --n "$TRAIN_SAMPLES" --workers 2 \
    --questions-per-image 4 --describe
fi
if [ ! -f $RUN/warmup/mix.json ]; then
  $PY -m internvl.nano.warmup --out $RUN/warmup --n "$WARMUP_PICTURES" --mix $RUN/world-train/meta.json
fi
if [ ! -f $RUN/init/config.json ]; then
  $PY -m internvl.nano.init --data $RUN/world-train --out $RUN/init --vision "$VISION"
fi

# Stage 2: the warm-up, encoder frozen: projector and decoder learn to read large objects.
t=$(date +%s)
$PY -m internvl.cli train sft configs/nano_warmup.yaml output_dir=$RUN/warm model.path=$RUN/init \
  data.options.meta_path=$RUN/warmup/meta.json train.device=$DEVICE "${WARM_ARGS[@]}"
if [ ! -f $RUN/warm-model/config.json ]; then
  $PY -m internvl.cli train export $RUN/warm $RUN/warm-model --dtype float32
fi
echo "stage 2 (warm-up) took $(minutes $t) minutes" >&2

# Stage 3: SFT on the world mixed with the warm-up pictures, encoder frozen, from stage 2's model.
t=$(date +%s)
$PY -m internvl.cli train sft configs/nano_sft.yaml output_dir=$RUN/sft model.path=$RUN/warm-model \
  data.options.meta_path=$RUN/warmup/mix.json train.device=$DEVICE \
  "${SFT_ARGS[@]}"
echo "stage 3 (SFT) took $(minutes $t) minutes" >&2
LAST=$RUN/sft

# Stage 4 (full recipe only): more SFT from stage 3's model, on stage 3's data and as many new world conversations.
if [ "$QUICK" = 0 ]; then
  if [ ! -f $RUN/world-train-s1/meta.json ]; then
    $PY -m internvl.cli world generate --out $RUN/world-train-s1 --split train --n "$TRAIN_SAMPLES" --seed 1 \
      --workers 2 --questions-per-image 4 --describe
  fi
  if [ ! -f $RUN/more-mix.json ]; then
    $PY - $RUN <<'MIX'
import json, sys
run = sys.argv[1]
mix = json.load(open(f"{run}/warmup/mix.json"))
(name, entry), = json.load(open(f"{run}/world-train-s1/meta.json")).items()
mix[f"{name}_seed1"] = entry
json.dump(mix, open(f"{run}/more-mix.json", "w"), indent=2)
MIX
  fi
  if [ ! -f $RUN/sft-model/config.json ]; then
    $PY -m internvl.cli train export $RUN/sft $RUN/sft-model --dtype float32
  fi
  t=$(date +%s)
  $PY -m internvl.cli train sft configs/nano_sft_more.yaml output_dir=$RUN/more model.path=$RUN/sft-model \
    data.options.meta_path=$RUN/more-mix.json train.device=$DEVICE "${SFT_ARGS[@]}"
  echo "stage 4 (more SFT) took $(minutes $t) minutes" >&2
  LAST=$RUN/more
fi
rm -rf "$MODEL"
$PY -m internvl.cli train export $LAST "$MODEL" --layout original --dtype bf16
if [ "$QUICK" = 0 ] && [ "$VISION_ASSET" = 0 ]; then
  $PY -c "import sys; from safetensors.torch import load_file, save_file; from safetensors import safe_open
w = load_file(sys.argv[1]); meta = safe_open(sys.argv[1], 'pt').metadata()
save_file({k: v.bfloat16() for k, v in w.items()}, sys.argv[2], metadata=meta)" \
    $RUN/vision/vision.safetensors src/internvl/assets/nano-vision.safetensors
fi
echo "nano model trained and installed in $MODEL in $(minutes $start) minutes" >&2

# Evaluation: the model, the answer prior in the same harness, test-ood, dynamic tiling vs one tile.
rm -rf $RUN/eval-* $RUN/compare  # `internvl eval run` resumes a folder it finds: start clean
$PY -m internvl.cli world export-tsv --out $RUN/world-test.tsv --split test --n $TEST_SAMPLES --workers 2
$PY -m internvl.cli eval run --model "$MODEL" --data $RUN/world-test.tsv --out $RUN/eval-test --batch-size 8 \
  --max-new-tokens 64
$PY -m internvl.nano.baselines prior --train $RUN/world-train --data $RUN/world-test.tsv --out $RUN/eval-prior
$PY -m internvl.cli eval compare $RUN/eval-prior $RUN/eval-test --out $RUN/compare
$PY - $RUN/eval-prior $RUN/eval-test <<'CHECK'
import json, sys
prior, model = (json.load(open(f"{run}/summary.json"))["categories"] for run in sys.argv[1:])
below = [f"{c} {model[c]['score']:.3g} <= prior {prior[c]['score']:.3g}" for c in prior
         if model.get(c, {}).get("score", 0) <= prior[c]["score"]]
print("above the answer prior in every family:", "yes" if not below else "NO (" + "; ".join(below) + ")")
CHECK
if [ "$QUICK" = 0 ]; then
  $PY -m internvl.cli world export-tsv --out $RUN/world-test-ood.tsv --split test-ood --n 500 --workers 2
  $PY -m internvl.cli eval run --model "$MODEL" --data $RUN/world-test-ood.tsv --out $RUN/eval-test-ood \
    --batch-size 8 --max-new-tokens 64 --no-progress
  $PY -m internvl.cli world export-tsv --out $RUN/world-detail.tsv --split test --n 200 --families detail --workers 2
  for tiles in 6 1; do
    $PY -m internvl.cli eval run --model "$MODEL" --data $RUN/world-detail.tsv --out $RUN/eval-detail-${tiles}tiles \
      --max-tiles $tiles --batch-size 8 --max-new-tokens 32 --no-progress
  done
  # The learning curve across the stages (docs/nano/stages.png): SFT checkpoints on 300 test samples.
  $PY -m internvl.cli world export-tsv --out $RUN/world-test-300.tsv --split test --n 300 --workers 2
  $PY -m internvl.nano.baselines prior --train $RUN/world-train --data $RUN/world-test-300.tsv --out $RUN/eval-prior-300
  $PY benchmarks/nano_curves.py --vision $RUN/vision --sft $RUN/sft --steps 250,1000,2000,3000,4000,5000 \
    --data $RUN/world-test-300.tsv --prior $RUN/eval-prior-300 --out docs/nano/stages.png
  cp $RUN/sft/metrics.png docs/nano/loss.png
  cp $RUN/compare/compare.png docs/nano/compare.png
fi
