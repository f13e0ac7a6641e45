#!/usr/bin/env bash
# Set up .venv for development and CI on a CPU machine: torch (CPU) first and constrained, then the
# recipe with its test extra. GPU clusters install with `pip install -e ".[gpu]"` instead (README).
set -euo pipefail
cd "$(dirname "$0")"
py=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip uv
# torch first: pip resolves the local CPU build; uv only sees it as already satisfied.
.venv/bin/python -m pip install -q torch==2.13.0
# Bytecode is compiled at install: without it every process spends ~20 s importing verl.
.venv/bin/uv pip install -q --python .venv/bin/python --compile-bytecode \
    -c constraints/cpu.txt -e ".[test]"
