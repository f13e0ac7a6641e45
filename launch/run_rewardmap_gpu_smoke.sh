#!/usr/bin/env bash
# A few GRPO steps on ONE GPU with Qwen2.5-VL-3B (or MODEL=path) on the embedded synthetic data (or DATA_DIR):
# checks the whole GPU path (vLLM rollout, FSDP actor/ref, reward manager, stages, metrics) in minutes.
#   bash launch/run_rewardmap_gpu_smoke.sh [hydra overrides]
# Writes $REWARDMAP_RUNS/gpu_smoke (default: runs/ in the recipe folder), starting afresh every time; STEPS (4)
# steps. Its settings (batch, lengths, vLLM memory): SMOKE_OVERRIDES in recipe/launch_plan.py.
set -euo pipefail
RM_CALLER_PWD=$PWD
RM_REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$RM_REPO"
# shellcheck source=launch/lib.sh
source launch/lib.sh

rm_plan smoke --caller-dir "$RM_CALLER_PWD" -- "$@"
exec "$RM_PYTHON" -m recipe.main_rewardmap "${RM_OVERRIDES[@]}" "$@"
