# shellcheck shell=bash
# Shared by the launch scripts (sourced, never run): paths made absolute and checked before anything starts,
# the run folder on shared storage, what a Ray job carries from the submitter, and the SLURM Ray cluster
# (head, workers, poll, stop). Callers set RM_CALLER_PWD (where the user ran the command) and RM_REPO.
#
# Environment (all optional unless marked):
#   REWARDMAP_RUNS   required by the cluster scripts: folder on storage every node mounts at the same path.
#                    A run lives in $REWARDMAP_RUNS/<trainer.experiment_name>/: checkpoints/ (trainer.default_local_dir,
#                    so trainer.resume_mode=auto in a later job finds them), tensorboard/ (TENSORBOARD_DIR), logs/.
#   DATA_DIR         folder written by data_prep (has manifest.json) -> rewardmap.data_dir; unset: embedded data.
#   MODEL            local model folder or a hub name (org/name) -> actor_rollout_ref.model.path; unset: the preset's.
#   PYTHON           interpreter of the recipe's environment on this machine (default: python).
# ray job submit:    RAY_ADDRESS (http://127.0.0.1:8265), NNODES (1), GPUS_PER_NODE (8).
# SLURM:             RAY_HEAD_IP or RAY_HEAD_IFACE (default: the head's `hostname --ip-address`), RAY_PORT (6379),
#                    RAY_CLUSTER_TIMEOUT (600 s) and RAY_POLL_INTERVAL (5 s) for the cluster wait,
#                    REWARDMAP_REQUEUE=0 (stop at the time limit instead of requeueing), REWARDMAP_SAVE_WAIT
#                    (seconds to wait for the requested checkpoint, 420), REWARDMAP_HOME (the
#                    recipe folder, default: where sbatch ran), GPUS_PER_NODE when SLURM does not say.

# A `ray job submit` job gets these of the submitter's variables (runtime_env env_vars): every name starting
# with a prefix below, plus the exact names. Never forwarded: RAY_* (the submitter's RAY_ADDRESS is the
# dashboard URL and would misdirect the job's own ray.init), CUDA_VISIBLE_DEVICES, PATH, PYTHONPATH and HOME
# (each node has its own). Tokens (WANDB_API_KEY, HF_TOKEN) are shown in the Ray dashboard's job details: on a
# shared cluster prefer `wandb login` / `hf auth login` on the nodes.
RM_FORWARD_PREFIXES=(WANDB_ HF_ HUGGING_FACE_ TRANSFORMERS_ TOKENIZERS_ NCCL_ GLOO_ TORCH_ PYTORCH_ VLLM_ VERL_
    REWARDMAP_ TRITON_ MLFLOW_ SWANLAB_)
RM_FORWARD_NAMES=(TENSORBOARD_DIR HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy)
# Never uploaded with the working dir (runtime_env "excludes": gitignore patterns relative to the recipe folder).
RM_UPLOAD_EXCLUDES=(.git .venv /data /runs /logs checkpoints outputs tensorboard_log wandb "*.out" __pycache__
    .cache .pytest_cache .hypothesis .ruff_cache)

RM_PYTHON=${PYTHON:-python}

rm_say() { printf '[rewardmap] %s\n' "$*"; }
rm_die() {
    printf '[rewardmap] error: %s\n' "$*" >&2
    exit 1
}

# Absolute form of a path given relative to where the user ran the command.
rm_abspath() {
    case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "${RM_CALLER_PWD:-$PWD}/${1#./}" ;;
    esac
}

# Folder written by data_prep -> its absolute path; dies naming what is wrong.
rm_data_dir() {
    local dir
    dir=$(rm_abspath "$1")
    [ -d "$dir" ] || rm_die "data folder $dir does not exist (write one with python -m data_prep.reasonmap --out DIR)"
    [ -r "$dir" ] && [ -x "$dir" ] || rm_die "data folder $dir is not readable"
    [ -r "$dir/manifest.json" ] || rm_die "data folder $dir has no readable manifest.json: not written by data_prep"
    printf '%s\n' "$dir"
}

# Local model folder -> its absolute path; a hub name (org/name, no such folder here) is kept and said so.
rm_model_path() {
    local model=$1 abs
    abs=$(rm_abspath "$model")
    if [ -e "$abs" ]; then
        [ -d "$abs" ] && [ -r "$abs/config.json" ] || rm_die "model $abs is not a readable model folder (no config.json)"
        printf '%s\n' "$abs"
    elif [[ $model =~ ^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
        rm_say "model $model: no such folder here, so a hub name; every node reads it from its HF cache" \
            "(pre-download it to a shared HF_HOME and set HF_HUB_OFFLINE=1, README \"GPU cluster\")" >&2
        local cache=${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}
        if [ "${HF_HUB_OFFLINE:-0}" = 1 ] && [ ! -d "$cache/models--${model//\//--}" ]; then
            rm_die "HF_HUB_OFFLINE=1 but $model is not in the cache $cache: run hf download $model first"
        fi
        printf '%s\n' "$model"
    else
        rm_die "model $model: no such folder ($abs) and not a hub name (org/name)"
    fi
}

# Hydra overrides are forwarded untouched; the path-valued ones are only checked (a relative path would be
# read on another machine, from another folder).
rm_check_override_paths() {
    local arg key value
    for arg in "$@"; do
        key=${arg%%=*}
        key=${key#+}
        key=${key#+}
        value=${arg#*=}
        [ "$arg" != "$key" ] && [ -n "$value" ] && [ "$value" != null ] || continue
        case $key in
        rewardmap.data_dir)
            [[ $value == /* ]] || rm_die "$arg: give an absolute path (or DATA_DIR=$value, made absolute here)"
            rm_data_dir "$value" >/dev/null
            ;;
        actor_rollout_ref.model.path)
            if [[ $value == /* ]]; then
                rm_model_path "$value" >/dev/null
            elif [ -e "$(rm_abspath "$value")" ] || [[ $value == .* ]]; then
                rm_die "$arg: give an absolute path (or MODEL=$value, made absolute here)"
            else
                rm_model_path "$value" >/dev/null
            fi
            ;;
        esac
    done
}

# trainer.experiment_name as the driver will compose it from the same overrides (Hydra, on this machine):
# names the run folder, and refuses overrides that do not compose before anything is submitted or started.
rm_experiment_name() {
    local out err name
    err=$(mktemp)
    if ! out=$(cd "$RM_REPO" && "$RM_PYTHON" -m recipe.main_rewardmap --cfg job --resolve \
        -p trainer.experiment_name "$@" 2>"$err"); then
        tail -n 20 "$err" >&2
        rm -f "$err"
        rm_die "the Hydra overrides ($*) do not compose (python -m recipe.main_rewardmap --cfg job shows the config)"
    fi
    rm -f "$err"
    name=$(printf '%s\n' "$out" | awk 'NF { line = $0 } END { print line }')
    [ -n "$name" ] || rm_die "could not read trainer.experiment_name from the composed config"
    printf '%s\n' "$name"
}

# $REWARDMAP_RUNS/<name>, absolute and created; sets RM_RUN_DIR, RM_CKPT_DIR and exports TENSORBOARD_DIR
# (verl's TensorBoard logger reads it; unset, it writes under the job's temporary working dir).
rm_run_dir() {
    local name=$1 runs
    [ -n "${REWARDMAP_RUNS:-}" ] ||
        rm_die "set REWARDMAP_RUNS to a folder every node mounts at the same path (e.g. /shared/rewardmap-runs):" \
            "checkpoints, TensorBoard and logs go to \$REWARDMAP_RUNS/$name and a later job resumes from there"
    runs=$(rm_abspath "$REWARDMAP_RUNS")
    RM_RUN_DIR="$runs/$name"
    RM_CKPT_DIR="$RM_RUN_DIR/checkpoints"
    mkdir -p "$RM_CKPT_DIR" "$RM_RUN_DIR/tensorboard" "$RM_RUN_DIR/logs" ||
        rm_die "cannot create the run folder $RM_RUN_DIR"
    [ -w "$RM_CKPT_DIR" ] || rm_die "run folder $RM_CKPT_DIR is not writable"
    export TENSORBOARD_DIR="$RM_RUN_DIR/tensorboard"
}

# Everything the driver gets besides the user's overrides: preset (when given), node layout, run folder,
# resume, data and model. Sets RM_OVERRIDES; the user's overrides go after it, so theirs win.
rm_recipe_overrides() {
    local preset=$1 nnodes=$2 gpus=$3
    RM_OVERRIDES=()
    [ -z "$preset" ] || RM_OVERRIDES+=("preset=$preset")
    RM_OVERRIDES+=("trainer.nnodes=$nnodes" "trainer.n_gpus_per_node=$gpus"
        "trainer.default_local_dir=$RM_CKPT_DIR" "trainer.resume_mode=auto")
    local data model
    if [ -n "${DATA_DIR:-}" ]; then
        data=$(rm_data_dir "$DATA_DIR")
        RM_OVERRIDES+=("rewardmap.data_dir=$data")
    fi
    if [ -n "${MODEL:-}" ]; then
        model=$(rm_model_path "$MODEL")
        RM_OVERRIDES+=("actor_rollout_ref.model.path=$model")
    fi
}

# The preset named on the command line (the last preset=... wins, as in Hydra), else the given default.
rm_preset() {
    local preset=$1 arg
    shift
    for arg in "$@"; do
        case $arg in preset=*) preset=${arg#preset=} ;; esac
    done
    printf '%s\n' "$preset"
}

# ---------------------------------------------------------------------------------------------- ray job submit

rm_runtime_env_json() {
    "$RM_PYTHON" -c '
import json, os, sys
workdir, excludes, prefixes, names = sys.argv[1], sys.argv[2].split(), tuple(sys.argv[3].split()), sys.argv[4].split()
env = {k: v for k, v in sorted(os.environ.items()) if k in names or k.startswith(prefixes)}
print(json.dumps({"working_dir": workdir, "excludes": excludes, "env_vars": env}))
' "$RM_REPO" "${RM_UPLOAD_EXCLUDES[*]}" "${RM_FORWARD_PREFIXES[*]}" "${RM_FORWARD_NAMES[*]}"
}

rm_submit_usage() {
    cat <<EOF
usage: [REWARDMAP_RUNS=DIR] [RAY_ADDRESS=URL] [DATA_DIR=DIR] [MODEL=PATH|org/name] [NNODES=1] [GPUS_PER_NODE=8]
       bash $0 [--no-wait] [hydra overrides...]
Submits python -m recipe.main_rewardmap to a running Ray cluster (ray job submit). --no-wait returns once the job
is submitted; without it the job's log follows until it ends (Ctrl-C stops following, not the job).
Checkpoints: \$REWARDMAP_RUNS/<experiment>/checkpoints; resubmitting the same overrides resumes from there.
EOF
}

# ray job submit for one preset; the per-model scripts are `rm_submit PRESET "$@"`.
rm_submit() {
    local preset=$1 address no_wait=() name runtime_env job_id
    shift
    while [ $# -gt 0 ]; do
        case $1 in
        --no-wait) no_wait=(--no-wait) && shift ;;
        -h | --help) rm_submit_usage && return 0 ;;
        --) shift && break ;;
        *) break ;;
        esac
    done
    command -v ray >/dev/null || rm_die "ray not found: activate the recipe's environment (README \"GPU cluster\")"
    address=${RAY_ADDRESS:-http://127.0.0.1:8265}
    rm_check_override_paths "$@"
    preset=$(rm_preset "$preset" "$@")
    name=$(rm_experiment_name "preset=$preset" "$@")
    rm_run_dir "$name"
    rm_recipe_overrides "$preset" "${NNODES:-1}" "${GPUS_PER_NODE:-8}"
    runtime_env=$(rm_runtime_env_json)
    job_id="rewardmap-$name-$(date +%Y%m%d-%H%M%S)"
    rm_say "run folder: $RM_RUN_DIR (checkpoints/, tensorboard/)"
    rm_say "job id:     $job_id"
    rm_say "  follow:   ray job logs --address $address --follow $job_id"
    rm_say "  stop:     ray job stop --address $address $job_id"
    rm_say "  logs:     ray job logs --address $address $job_id"
    ray job submit --address "$address" --submission-id "$job_id" --runtime-env-json "$runtime_env" \
        ${no_wait[@]+"${no_wait[@]}"} -- python -m recipe.main_rewardmap "${RM_OVERRIDES[@]}" "$@"
}

# ------------------------------------------------------------------------------------------------------- SLURM

# Started steps (srun ... ray start --block), watched until the driver starts: pid, what it is, its log.
RM_STEP_PIDS=()
RM_STEP_WHAT=()
RM_STEP_LOGS=()

rm_slurm_setup() {
    [ -n "${SLURM_JOB_ID:-}" ] && [ -n "${SLURM_JOB_NODELIST:-}" ] || rm_die "not inside a SLURM job: submit with sbatch"
    mapfile -t RM_NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    [ "${#RM_NODES[@]}" -gt 0 ] || rm_die "scontrol show hostnames $SLURM_JOB_NODELIST listed no host"
    local gpus=${SLURM_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-${GPUS_PER_NODE:-8}}}
    RM_GPUS=${gpus##*:}
    [[ $RM_GPUS =~ ^[0-9]+$ ]] || rm_die "cannot read GPUs per node from '$gpus' (set GPUS_PER_NODE)"
    RM_CPUS=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-}}
    RM_ATTEMPT=${SLURM_RESTART_COUNT:-0}
}

# Per-node logs of this job attempt: $RM_RUN_DIR/logs/slurm-<job>.<attempt>/
rm_slurm_logs() {
    RM_LOG_DIR="$RM_RUN_DIR/logs/slurm-$SLURM_JOB_ID.$RM_ATTEMPT"
    mkdir -p "$RM_LOG_DIR" || rm_die "cannot create $RM_LOG_DIR"
    rm_say "per-node logs: $RM_LOG_DIR"
}

# Head address: RAY_HEAD_IP, else the address of RAY_HEAD_IFACE on the head, else the head's `hostname -i`.
rm_head_ip() {
    local head=$1 ip
    if [ -n "${RAY_HEAD_IP:-}" ]; then
        ip=$RAY_HEAD_IP
    elif [ -n "${RAY_HEAD_IFACE:-}" ]; then
        ip=$(srun --overlap --nodes=1 --ntasks=1 -w "$head" ip -4 -o addr show dev "$RAY_HEAD_IFACE" |
            awk '{ split($4, a, "/"); print a[1]; exit }')
    else
        ip=$(srun --overlap --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{ print $1 }')
    fi
    [ -n "$ip" ] || rm_die "no IP address for the head $head (set RAY_HEAD_IP or RAY_HEAD_IFACE)"
    case $ip in 127.*) rm_die "the head $head resolves to $ip (loopback): set RAY_HEAD_IP or RAY_HEAD_IFACE" ;; esac
    printf '%s\n' "$ip"
}

rm_ray_resources() {
    RM_RAY_RESOURCES=("--num-gpus=$RM_GPUS")
    [ -z "$RM_CPUS" ] || RM_RAY_RESOURCES+=("--num-cpus=$RM_CPUS")
}

rm_start_step() {
    local what=$1 node=$2 log=$3
    shift 3
    srun --nodes=1 --ntasks=1 -w "$node" "$@" >"$log" 2>&1 &
    RM_STEP_PIDS+=("$!")
    RM_STEP_WHAT+=("$what")
    RM_STEP_LOGS+=("$log")
}

rm_start_head() {
    local head=${RM_NODES[0]}
    rm_ray_resources
    rm_say "Ray head on $head ($RM_RAY_ADDRESS)"
    rm_start_step "Ray head on $head" "$head" "$RM_LOG_DIR/ray-head-$head.log" \
        ray start --head --node-ip-address="$RM_HEAD_IP" --port="$RM_RAY_PORT" "${RM_RAY_RESOURCES[@]}" \
        --disable-usage-stats --block
}

rm_start_workers() {
    local node
    for node in "${RM_NODES[@]:1}"; do
        rm_say "Ray worker on $node"
        rm_start_step "Ray worker on $node" "$node" "$RM_LOG_DIR/ray-worker-$node.log" \
            ray start --address="$RM_RAY_ADDRESS" "${RM_RAY_RESOURCES[@]}" --disable-usage-stats --block
    done
}

# Dies at once, naming its log, when a started step has exited.
rm_check_steps() {
    local i rc
    for i in "${!RM_STEP_PIDS[@]}"; do
        if ! kill -0 "${RM_STEP_PIDS[$i]}" 2>/dev/null; then
            rc=0
            wait "${RM_STEP_PIDS[$i]}" || rc=$?
            tail -n 20 "${RM_STEP_LOGS[$i]}" >&2 || true
            rm_die "${RM_STEP_WHAT[$i]} exited (status $rc); its log: ${RM_STEP_LOGS[$i]}"
        fi
    done
}

# Polls until the cluster reports NODES alive nodes with GPUS GPUs, within RAY_CLUSTER_TIMEOUT seconds
# (default 600), every RAY_POLL_INTERVAL seconds (default 5); a step that dies ends the wait at once.
rm_wait_cluster() {
    local want_nodes=$1 want_gpus=$2 limit=${RAY_CLUSTER_TIMEOUT:-600} start=$SECONDS size nodes=0 gpus=0
    while :; do
        rm_check_steps
        if size=$(timeout "${RAY_POLL_TIMEOUT:-60}" "$RM_PYTHON" "$RM_REPO/launch/ray_cluster_size.py" \
            "$RM_RAY_ADDRESS" 2>>"$RM_LOG_DIR/poll.log"); then
            read -r nodes gpus <<<"$size"
            if [ "$nodes" -ge "$want_nodes" ] && [ "$gpus" -ge "$want_gpus" ]; then
                rm_say "Ray cluster up: $nodes node(s), $gpus GPU(s)"
                return 0
            fi
        fi
        [ $((SECONDS - start)) -lt "$limit" ] ||
            rm_die "Ray cluster at $RM_RAY_ADDRESS has $nodes node(s) and $gpus GPU(s) after ${limit}s," \
                "expected $want_nodes and $want_gpus; logs: $RM_LOG_DIR"
        sleep "${RAY_POLL_INTERVAL:-5}"
    done
}

rm_start_cluster() {
    RM_HEAD_IP=$(rm_head_ip "${RM_NODES[0]}")
    RM_RAY_PORT=${RAY_PORT:-6379}
    RM_RAY_ADDRESS="$RM_HEAD_IP:$RM_RAY_PORT"
    rm_start_head
    rm_wait_cluster 1 "$RM_GPUS"
    rm_start_workers
    rm_wait_cluster "${#RM_NODES[@]}" $((${#RM_NODES[@]} * RM_GPUS))
}

# Stops what was started, whatever ended the job (exit, scancel, time limit): `ray stop` on every node, then
# the remaining steps are signalled and reaped (SLURM also kills every step when the job ends).
rm_slurm_cleanup() {
    local rc=$? node pid log tries
    trap - EXIT
    set +e
    rm_say "cleanup: ray stop on ${RM_NODES[*]:-no node}"
    for node in "${RM_NODES[@]}"; do
        log=/dev/null
        [ -z "${RM_LOG_DIR:-}" ] || log="$RM_LOG_DIR/ray-stop-$node.log"
        timeout 60 srun --overlap --nodes=1 --ntasks=1 -w "$node" ray stop --force >>"$log" 2>&1 ||
            rm_say "warning: ray stop on $node failed (see $log)"
    done
    for pid in "${RM_STEP_PIDS[@]}" ${RM_DRIVER_PID:+"$RM_DRIVER_PID"}; do
        kill "$pid" 2>/dev/null
    done
    for tries in $(seq 1 30); do
        jobs -pr | grep -q . || break
        [ "$tries" -lt 30 ] && sleep 1
    done
    jobs -pr | xargs -r kill -9 2>/dev/null
    exit "$rc"
}

# The checkpoint step recorded by verl (latest_checkpointed_iteration.txt), or "none".
rm_checkpoint_step() {
    cat "$RM_CKPT_DIR/latest_checkpointed_iteration.txt" 2>/dev/null || echo none
}

# SIGUSR1 from `#SBATCH --signal=B:USR1@LEAD`: the time limit is near. The trap asks the trainer for a checkpoint
# at the end of the current step (recipe/trainer.py reads $RM_CKPT_DIR/save_now.request), waits up to
# REWARDMAP_SAVE_WAIT seconds (default 420, inside the 600 s lead) for verl to record it, and requeues the job
# when this attempt wrote a checkpoint; the next attempt resumes from it (same run folder,
# trainer.resume_mode=auto). Set REWARDMAP_REQUEUE=0 to stop instead.
rm_on_time_limit() {
    local step waited=0
    step=$(rm_checkpoint_step)
    rm_say "SIGUSR1: the time limit is near; latest checkpoint: $step (at the start of this attempt: $RM_STEP_AT_START)"
    if [ "${REWARDMAP_REQUEUE:-1}" = 0 ]; then
        rm_say "REWARDMAP_REQUEUE=0: not requeueing"
        return
    fi
    : >"$RM_CKPT_DIR/save_now.request"
    rm_say "asked the trainer for a checkpoint at the end of its step ($RM_CKPT_DIR/save_now.request)"
    while [ -e "$RM_CKPT_DIR/save_now.request" ] && [ "$waited" -lt "${REWARDMAP_SAVE_WAIT:-420}" ]; do
        sleep 1
        waited=$((waited + 1))
    done
    step=$(rm_checkpoint_step)
    if [ "$step" = "$RM_STEP_AT_START" ]; then
        rm_say "no checkpoint written during this attempt (a step longer than ${REWARDMAP_SAVE_WAIT:-420} s?): not requeueing"
    else
        rm_say "requeueing job $SLURM_JOB_ID at checkpoint $step: the next attempt resumes from $RM_CKPT_DIR"
        scontrol requeue "$SLURM_JOB_ID" || rm_say "warning: scontrol requeue $SLURM_JOB_ID failed"
    fi
}

rm_slurm_traps() {
    RM_STEP_AT_START=$(rm_checkpoint_step)
    trap rm_slurm_cleanup EXIT
    trap 'rm_say "SIGTERM (scancel, requeue or time limit)"; exit 143' TERM
    trap 'exit 130' INT
    trap rm_on_time_limit USR1
}

# Runs a command in the background and waits for it, staying interruptible by the traps above; returns its status.
rm_run_driver() {
    local rc
    "$@" &
    RM_DRIVER_PID=$!
    while :; do
        rc=0
        wait "$RM_DRIVER_PID" || rc=$?
        [ "$rc" -gt 128 ] || break                       # it exited
        kill -0 "$RM_DRIVER_PID" 2>/dev/null || {        # it died of a signal, or died during a trap
            rc=0
            wait "$RM_DRIVER_PID" || rc=$?
            break
        }
        # a trapped signal (USR1) interrupted the wait: keep waiting
    done
    RM_DRIVER_PID=
    return "$rc"
}
