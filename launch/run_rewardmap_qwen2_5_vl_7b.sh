#!/usr/bin/env bash
# RewardMap on Qwen2.5-VL-7B-Instruct, one 8-GPU node, submitted to a running Ray cluster.
#   RAY_ADDRESS=http://HEAD:8265 DATA_DIR=/shared/rewardmap_data bash launch/run_rewardmap_qwen2_5_vl_7b.sh [hydra overrides]
# DATA_DIR holds the stage files written by `python -m data_prep.reasonmap --out DATA_DIR`; unset, the job
# trains on the embedded synthetic curriculum. Extra arguments are Hydra overrides (curriculum=coarse, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
data_override=()
[ -n "${DATA_DIR:-}" ] && data_override=("rewardmap.data_dir=${DATA_DIR}")

ray job submit --address "$RAY_ADDRESS" --working-dir . -- \
    python -m recipe.main_rewardmap \
    preset=qwen2_5_vl_7b \
    trainer.nnodes="${NNODES:-1}" \
    trainer.n_gpus_per_node="${GPUS_PER_NODE:-8}" \
    "${data_override[@]}" \
    "$@"
