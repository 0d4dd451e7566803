#!/usr/bin/env bash
# Set up (if needed), check lint, format and types, and run the whole test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint, format and types first (seconds), so the next change keeps them clean.
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy src/internvl
exec .venv/bin/python -m pytest -q -rs -n 2 "$@"  # -rs: print why a test was skipped
