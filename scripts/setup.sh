#!/usr/bin/env bash
# Create .venv and install internvl with every extra. The pinned CPU torch goes in first so that
# pip never pulls a multi-GB CUDA build to satisfy the `torch` requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
