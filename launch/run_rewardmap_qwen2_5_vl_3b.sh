#!/usr/bin/env bash
# RewardMap on Qwen2.5-VL-3B-Instruct, submitted to a running Ray cluster (see run_rewardmap_qwen2_5_vl_7b.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
data_override=()
[ -n "${DATA_DIR:-}" ] && data_override=("rewardmap.data_dir=${DATA_DIR}")

ray job submit --address "$RAY_ADDRESS" --working-dir . -- \
    python -m recipe.main_rewardmap \
    preset=qwen2_5_vl_3b \
    trainer.nnodes="${NNODES:-1}" \
    trainer.n_gpus_per_node="${GPUS_PER_NODE:-8}" \
    "${data_override[@]}" \
    "$@"
