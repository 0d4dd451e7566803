# Sourced by the experiment scripts (scripts/*_world.sh) first, from the repository root: sets up .venv,
# then names what they share.
bash scripts/setup.sh
PY=.venv/bin/python
START=src/internvl/assets/nano  # the shipped nano model, where every world experiment begins
minutes() { echo $(( ($(date +%s) - $1 + 30) / 60 )); }  # whole minutes since the epoch second $1

# `precision DEVICE`: bf16 autocast only where the CPU computes in bf16 natively (else fp32 is several times faster)
precision() {
  if [ "$1" != cpu ] || grep -qE "avx512_bf16|amx_bf16" /proc/cpuinfo; then echo bf16; else echo fp32; fi
}

# `quick_and_device NAME "$@"`: the arguments of a script that takes only --quick and --device DEVICE. Sets
# QUICK (0 or 1), DEVICE (default cpu) and FLAGS (the same arguments, for a script that runs another one).
quick_and_device() {
  local name=$1; shift
  QUICK=0; DEVICE=cpu; FLAGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --quick) QUICK=1; FLAGS+=(--quick) ;;
      --device) DEVICE="$2"; FLAGS+=(--device "$2"); shift ;;
      *) echo "$name: unknown argument $1 (use --quick, --device DEVICE)" >&2; exit 2 ;;
    esac
    shift
  done
}
