#!/usr/bin/env bash
# Set up .venv for development and CI on a CPU machine: torch first and constrained, then the recipe with its
# test extra. GPU clusters install differently (README "GPU cluster": a lock, then flash-attn).
#
# Which torch: this command asks pip for torch==2.13.0 from the configured indexes. The development machines
# and CI serve a local CPU build, so that is what they get. Elsewhere, PyPI's default torch for Linux x86_64 is
# a CUDA build (several GB of nvidia-* wheels; it runs on a CPU too); macOS and Windows get CPU builds. For
# the CPU build on Linux, name PyTorch's CPU wheel index (used for torch only, as pip's --index-url):
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash install.sh
set -euo pipefail
cd "$(dirname "$0")"
py=${PYTHON:-python3}
torch_index=()
[ -n "${TORCH_INDEX_URL:-}" ] && torch_index=(--index-url "$TORCH_INDEX_URL")
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip uv
# torch first: pip resolves the CPU build (local or from TORCH_INDEX_URL); uv then sees it as already satisfied
# (torch==2.13.0 matches 2.13.0+cpu), and constraints/cpu.txt keeps any dependency from replacing it.
.venv/bin/python -m pip install -q ${torch_index[@]+"${torch_index[@]}"} torch==2.13.0
# Bytecode is compiled at install: without it every process spends ~20 s importing verl.
.venv/bin/uv pip install -q --python .venv/bin/python --compile-bytecode \
    -c constraints/cpu.txt -e ".[test]"
