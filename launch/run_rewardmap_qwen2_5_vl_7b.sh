#!/usr/bin/env bash
# RewardMap on Qwen2.5-VL-7B-Instruct, the paper's run (one 8-GPU node), submitted to a running Ray cluster with `ray job submit`:
#   REWARDMAP_RUNS=/shared/rewardmap-runs RAY_ADDRESS=http://HEAD:8265 DATA_DIR=/shared/rewardmap-data \
#       bash launch/run_rewardmap_qwen2_5_vl_7b.sh [--no-wait] [hydra overrides, e.g. +experiment=rl_baseline]
# Checkpoints and TensorBoard logs: $REWARDMAP_RUNS/<experiment>/; the same command again resumes there.
# Variables (DATA_DIR, MODEL, NNODES, GPUS_PER_NODE, ...) and what the job carries: launch/lib.sh.
set -euo pipefail
RM_CALLER_PWD=$PWD
RM_REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$RM_REPO"
# shellcheck source=launch/lib.sh
source launch/lib.sh
rm_submit qwen2_5_vl_7b "$@"
