#!/usr/bin/env bash
# Create .venv and install the project (train, export and serve extras) and the dev tools.
# torch is installed first, pinned, so nothing pulls a CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade "pip>=25.1"
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[train,export,serve]" --group dev
