#!/usr/bin/env bash
# Set up, then let the embedded nano InternVL answer questions about pictures of the procedural world.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m internvl.nano.demo "$@"
