# shellcheck shell=bash
# Shared by the launch scripts (sourced, never run): the cluster work (ray job submit, the SLURM Ray cluster: head,
# workers, poll, stop, traps, requeue, Ray token authentication). Everything decided before a run starts comes from
# one Python entry, recipe/launch_plan.py (`rm_plan`): the data and model paths made absolute and checked, the
# config composed once with the driver's overrides, trainer.experiment_name read from it, the run folder created,
# the overrides the driver gets and a `ray job submit` job's runtime env (what it carries from the submitter:
# FORWARD_PREFIXES and FORWARD_NAMES there). Callers set RM_CALLER_PWD (where the user ran the command) and RM_REPO.
#
# Environment (all optional unless marked):
#   REWARDMAP_RUNS   required by the cluster scripts: folder on storage every node mounts at the same path.
#                    A run lives in $REWARDMAP_RUNS/<trainer.experiment_name>/: checkpoints/ (trainer.default_local_dir,
#                    so trainer.resume_mode=auto in a later job finds them), tensorboard/ (TENSORBOARD_DIR), logs/.
#   DATA_DIR         folder written by data_prep (has manifest.json) -> rewardmap.data_dir; unset: embedded data.
#   MODEL            local model folder or a hub name (org/name) -> actor_rollout_ref.model.path; unset: the preset's.
#   PYTHON           interpreter of the recipe's environment on this machine (default: python).
# ray job submit:    RAY_ADDRESS (http://127.0.0.1:8265), NNODES (1), GPUS_PER_NODE (8); RAY_AUTH_MODE (unset: the
#                    cluster's, asked by launch/ray_auth.py; token: sent from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
#                    ~/.ray/auth_token, never put in the job's runtime env).
# SLURM:             RAY_HEAD_IP or RAY_HEAD_IFACE (default: the head's `hostname --ip-address`), RAY_PORT (6379),
#                    RAY_CLUSTER_TIMEOUT (600 s) and RAY_POLL_INTERVAL (5 s) for the cluster wait,
#                    REWARDMAP_REQUEUE=0 (stop at the time limit instead of requeueing), REWARDMAP_SAVE_WAIT
#                    (seconds to wait for the requested checkpoint, 420), REWARDMAP_HOME (the
#                    recipe folder, default: where sbatch ran), GPUS_PER_NODE when SLURM does not say;
#                    RAY_AUTH_MODE (token, the default, or disabled), RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (your
#                    token; unset: a new token for each job attempt, see rm_ray_auth).

RM_PYTHON=${PYTHON:-python}

rm_say() { printf '[rewardmap] %s\n' "$*"; }
rm_die() {
    printf '[rewardmap] error: %s\n' "$*" >&2
    exit 1
}

# The launch plan (python -m recipe.launch_plan LAUNCHER [options] -- user arguments): checks, one composition,
# the run folder. Sets RM_EXPERIMENT_NAME, RM_RUN_DIR, RM_CKPT_DIR, the array RM_OVERRIDES (the launcher's
# overrides; the user's go after them) and exports TENSORBOARD_DIR; ray-job also RM_RUNTIME_ENV. The plan prints
# bash assignments whose every value is quoted by shlex.quote, so eval reads them as data; on a bad command line
# it prints one error naming what is wrong and no plan, and the script stops here.
rm_plan() {
    local plan
    plan=$(cd "$RM_REPO" && "$RM_PYTHON" -m recipe.launch_plan "$@") || exit 1
    eval "$plan"
}

# ---------------------------------------------------------------------------------------------- ray job submit

# ray job submit sends the cluster's token only with RAY_AUTH_MODE=token in its environment (Ray 2.60 never asks
# the cluster): unless the user set RAY_AUTH_MODE, ask the dashboard and export token mode when it wants one
# (launch/ray_auth.py stops here when this machine has no token to send). The token stays where Ray reads it.
rm_submit_auth() {
    local address=$1 mode
    [ -z "${RAY_AUTH_MODE:-}" ] || return 0
    mode=$("$RM_PYTHON" "$RM_REPO/launch/ray_auth.py" cluster-mode "$address") || exit 1
    if [ "$mode" = token ]; then
        export RAY_AUTH_MODE=token
        rm_say "the Ray cluster at $address uses token authentication: ray job commands need RAY_AUTH_MODE=token"
    fi
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
    local preset=$1 address no_wait=() job_id ray_job=(ray job)
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
    rm_plan ray-job --caller-dir "$RM_CALLER_PWD" --preset "$preset" -- "$@"
    rm_submit_auth "$address"
    [ "${RAY_AUTH_MODE:-}" != token ] || ray_job=(RAY_AUTH_MODE=token ray job)
    job_id="rewardmap-$RM_EXPERIMENT_NAME-$(date +%Y%m%d-%H%M%S)"
    rm_say "run folder: $RM_RUN_DIR (checkpoints/, tensorboard/)"
    rm_say "job id:     $job_id"
    rm_say "  follow:   ${ray_job[*]} logs --address $address --follow $job_id"
    rm_say "  stop:     ${ray_job[*]} stop --address $address $job_id"
    rm_say "  logs:     ${ray_job[*]} logs --address $address $job_id"
    ray job submit --address "$address" --submission-id "$job_id" --runtime-env-json "$RM_RUNTIME_ENV" \
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

# Ray token authentication for this job's own Ray cluster, exported before any step starts so that srun (which
# passes the batch environment on) gives the same to the head, every worker, the poll and the driver: Ray 2.60's
# `ray start --address` and `ray.init(address=...)` never turn it on by themselves, and a head that found a token
# does (README "Ray token authentication"). RAY_AUTH_MODE=token unless the user set it otherwise; the token is the
# user's (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) or else a new one for this attempt, in a file only the user can
# read, in the attempt's log folder on the shared run folder (RAY_AUTH_TOKEN_PATH), removed when the job ends:
# one token per cluster, none written to ~/.ray, none on a command line.
rm_ray_auth() {
    if [ "${RAY_AUTH_MODE:-token}" != token ]; then
        rm_say "RAY_AUTH_MODE=$RAY_AUTH_MODE: this job's Ray cluster takes no token (anyone who reaches it can use it)"
        return 0
    fi
    export RAY_AUTH_MODE=token
    if [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -n "${RAY_AUTH_TOKEN_PATH:-}" ]; then
        rm_say "Ray token authentication with your token (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)"
        return 0
    fi
    RM_AUTH_TOKEN_FILE="$RM_LOG_DIR/ray-auth-token"
    "$RM_PYTHON" "$RM_REPO/launch/ray_auth.py" new-token "$RM_AUTH_TOKEN_FILE" ||
        rm_die "cannot write this job's Ray token to $RM_AUTH_TOKEN_FILE"
    export RAY_AUTH_TOKEN_PATH=$RM_AUTH_TOKEN_FILE
    rm_say "Ray token authentication: this job's token is $RM_AUTH_TOKEN_FILE (mode 600, removed when the job ends)"
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
    [ "${RAY_AUTH_MODE:-}" != token ] ||
        rm_say "to reach it: RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-FILE} ray status --address $RM_RAY_ADDRESS"
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
    [ -z "${RM_AUTH_TOKEN_FILE:-}" ] || rm -f "$RM_AUTH_TOKEN_FILE"
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
