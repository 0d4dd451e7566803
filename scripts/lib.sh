# Sourced by the experiment scripts (scripts/*_world.sh) after they read their arguments, from the
# repository root: sets up .venv, then names what they share. Needs DEVICE (cpu, cuda).
bash scripts/setup.sh
PY=.venv/bin/python
START=src/internvl/assets/nano  # the shipped nano model, where every world experiment begins
minutes() { echo $(( ($(date +%s) - $1 + 30) / 60 )); }  # whole minutes since the epoch second $1
# bf16 autocast only where the CPU computes in bf16 natively (else fp32 is several times faster)
PRECISION=fp32
if [ "$DEVICE" != cpu ] || grep -qE "avx512_bf16|amx_bf16" /proc/cpuinfo; then PRECISION=bf16; fi
