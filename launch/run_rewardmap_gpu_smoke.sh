#!/usr/bin/env bash
# A few GRPO steps on ONE GPU with Qwen2.5-VL-3B (or MODEL=path) on the embedded synthetic data (or DATA_DIR):
# checks the whole GPU path (vLLM rollout, FSDP actor/ref, reward manager, stages, metrics) in minutes.
#   bash launch/run_rewardmap_gpu_smoke.sh [hydra overrides]
# Writes $REWARDMAP_RUNS/gpu_smoke (default: runs/ in the recipe folder), starting afresh every time.
set -euo pipefail
RM_CALLER_PWD=$PWD
RM_REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$RM_REPO"
# shellcheck source=launch/lib.sh
source launch/lib.sh

rm_check_override_paths "$@"
model=$(rm_model_path "${MODEL:-Qwen/Qwen2.5-VL-3B-Instruct}")
data=()
if [ -n "${DATA_DIR:-}" ]; then
    data=("rewardmap.data_dir=$(rm_data_dir "$DATA_DIR")")
fi
REWARDMAP_RUNS=${REWARDMAP_RUNS:-$RM_REPO/runs}
rm_run_dir gpu_smoke
exec "$RM_PYTHON" -m recipe.main_rewardmap \
    actor_rollout_ref.model.path="$model" \
    ${data[@]+"${data[@]}"} \
    rewardmap.synthetic_cities=4 \
    trainer.experiment_name=gpu_smoke \
    trainer.default_local_dir="$RM_CKPT_DIR" \
    trainer.resume_mode=disable \
    trainer.n_gpus_per_node=1 \
    trainer.nnodes=1 \
    trainer.total_training_steps="${STEPS:-4}" \
    trainer.save_freq=2 \
    trainer.test_freq=-1 \
    trainer.logger='[console]' \
    data.train_batch_size=4 \
    data.max_prompt_length=4096 \
    data.max_response_length=512 \
    actor_rollout_ref.actor.ppo_mini_batch_size=4 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.4 \
    actor_rollout_ref.rollout.max_num_batched_tokens=8192 \
    reward.num_workers=2 \
    "$@"
