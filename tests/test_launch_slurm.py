"""The SLURM scripts under simulated one- and three-node jobs, with recording stubs of ray, srun, scontrol and python.

Each test runs a launch script as sbatch would (the SLURM variables of a job, the batch shell on the first
node) and reads back what was called, where and in which order: the Ray head, then one worker per other
host, the cluster polled to nodes x GPUs, the driver once with the user's overrides intact, ``ray stop`` on
every node at the end, and the failure, cancel and time-limit paths.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster_stubs import REPO, calls_of, driver_calls, override, read_calls, slurm_env

MULTI = "launch/slurm_rewardmap.sbatch"
SINGLE = "launch/slurm_rewardmap_1node.sbatch"
NAME = "qwen2_5_vl_7b-fine_curriculum-fixed_reward"
# Overrides a user might pass; they must reach the driver exactly, in order, after the script's own.
USER_OVERRIDES = ["preset=qwen2_5_vl_7b", "trainer.logger=[console,tensorboard]", "+trainer.note=two words"]


def run(script: str, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    return read_calls(tmp_path / "calls.jsonl")


def ray_starts(all_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return calls_of(all_calls, "ray", "start")


def index_of(all_calls: list[dict[str, Any]], call: dict[str, Any]) -> int:
    return all_calls.index(call)


@pytest.mark.parametrize("nodes", [1, 3])
def test_head_then_workers_then_poll_then_driver_once_then_ray_stop_everywhere(tmp_path: Path, nodes: int) -> None:
    env = slurm_env(tmp_path, nodes, STUB_EXPERIMENT_NAME=NAME, WANDB_PROJECT="rm", HF_HUB_OFFLINE="1")
    result = run(MULTI, env, *USER_OVERRIDES)
    assert result.returncode == 0, result.stderr
    log = calls(tmp_path)
    hosts = [f"gpu{i:02d}" for i in range(1, nodes + 1)]

    starts = ray_starts(log)
    assert [c["host"] for c in starts if "--head" in c["argv"]] == ["gpu01"]
    assert sorted(c["host"] for c in starts if "--head" not in c["argv"]) == hosts[1:], "one worker per other host"
    head_start = next(c for c in starts if "--head" in c["argv"])
    assert "--node-ip-address=192.0.2.1" in head_start["argv"] and "--num-gpus=8" in head_start["argv"]
    assert "--block" in head_start["argv"]
    for worker in (c for c in starts if "--head" not in c["argv"]):
        assert "--address=192.0.2.1:6379" in worker["argv"]

    polls = [c for c in calls_of(log, "python") if c["argv"][0].endswith("ray_cluster_size.py")]
    assert polls and all(c["argv"][1] == "192.0.2.1:6379" for c in polls)
    worker_srun = [c for c in calls_of(log, "srun") if "start" in c["argv"] and "--head" not in c["argv"]]
    head_srun = next(c for c in calls_of(log, "srun") if "--head" in c["argv"])
    first_poll_after_head = next(i for i, c in enumerate(log) if c in polls and i > index_of(log, head_srun))
    assert all(index_of(log, w) > first_poll_after_head for w in worker_srun), "workers start once the head is up"
    assert f"Ray cluster up: {nodes} node(s), {8 * nodes} GPU(s)" in result.stdout

    (drive,) = driver_calls(log)
    assert drive["host"] == "gpu01"
    assert drive["argv"][-len(USER_OVERRIDES) :] == USER_OVERRIDES, "the user's overrides arrive untouched, last"
    assert index_of(log, drive) > max(index_of(log, p) for p in polls)
    ckpt = tmp_path / "runs" / NAME / "checkpoints"
    assert override(drive["argv"], "trainer.default_local_dir") == str(ckpt) and ckpt.is_dir()
    assert override(drive["argv"], "trainer.resume_mode") == "auto"
    assert override(drive["argv"], "trainer.nnodes") == str(nodes)
    assert override(drive["argv"], "trainer.n_gpus_per_node") == "8"
    assert drive["env"]["RAY_ADDRESS"] == "192.0.2.1:6379"
    assert drive["env"]["TENSORBOARD_DIR"] == str(tmp_path / "runs" / NAME / "tensorboard")
    assert (drive["env"]["WANDB_PROJECT"], drive["env"]["HF_HUB_OFFLINE"]) == ("rm", "1")
    assert head_start["env"]["TENSORBOARD_DIR"] == drive["env"]["TENSORBOARD_DIR"], "Ray workers inherit it"

    stops = calls_of(log, "ray", "stop")
    assert sorted(c["host"] for c in stops) == hosts, "ray stop once on every node"
    assert min(index_of(log, c) for c in stops) > index_of(log, drive)
    logs = tmp_path / "runs" / NAME / "logs" / "slurm-4242.0"
    assert (logs / "ray-head-gpu01.log").read_text().startswith("ray start on gpu01: head started")
    assert sorted(p.name for p in logs.glob("ray-worker-*.log")) == [f"ray-worker-{h}.log" for h in hosts[1:]]


@pytest.mark.parametrize("nodes", [1, 3])
def test_failed_head_start_ends_the_job_without_a_driver(tmp_path: Path, nodes: int) -> None:
    result = run(MULTI, slurm_env(tmp_path, nodes, STUB_EXPERIMENT_NAME=NAME, STUB_FAIL_HEAD="1"))
    assert result.returncode != 0
    head_log = tmp_path / "runs" / NAME / "logs" / "slurm-4242.0" / "ray-head-gpu01.log"
    assert f"Ray head on gpu01 exited (status 1); its log: {head_log}" in result.stderr
    log = calls(tmp_path)
    assert driver_calls(log) == []
    assert [c for c in ray_starts(log) if "--head" not in c["argv"]] == [], "no worker joins a dead head"
    assert len(calls_of(log, "ray", "stop")) == nodes, "cleanup still stops every node"


def test_failed_worker_ends_the_job_naming_its_log(tmp_path: Path) -> None:
    result = run(MULTI, slurm_env(tmp_path, 3, STUB_EXPERIMENT_NAME=NAME, STUB_FAIL_WORKER="gpu03"))
    assert result.returncode != 0
    assert re.search(r"Ray worker on gpu03 exited \(status 1\); its log: \S+/ray-worker-gpu03\.log", result.stderr)
    assert driver_calls(calls(tmp_path)) == []


def test_a_cluster_short_of_nodes_times_out_without_a_driver(tmp_path: Path) -> None:
    env = slurm_env(tmp_path, 3, STUB_EXPERIMENT_NAME=NAME, STUB_HANG_WORKER="gpu02", RAY_CLUSTER_TIMEOUT="3")
    result = run(MULTI, env)
    assert result.returncode != 0
    # gpu02 hangs; gpu03 joins unless a loaded machine delays its stub past the 3 s wait
    found = re.search(r"has (\d) node\(s\) and (\d+) GPU\(s\) after 3s, expected 3 and 24", result.stderr)
    assert found and int(found[1]) in (1, 2) and int(found[2]) == 8 * int(found[1]), result.stderr
    log = calls(tmp_path)
    assert driver_calls(log) == []
    assert len(calls_of(log, "ray", "stop")) == 3


def test_head_address_from_ray_head_ip_or_interface(tmp_path: Path) -> None:
    result = run(MULTI, slurm_env(tmp_path, 3, STUB_EXPERIMENT_NAME=NAME, RAY_HEAD_IP="203.0.113.5", RAY_PORT="6400"))
    assert result.returncode == 0, result.stderr
    log = calls(tmp_path)
    assert calls_of(log, "hostname") == []
    assert all("--address=203.0.113.5:6400" in c["argv"] for c in ray_starts(log) if "--head" not in c["argv"])
    assert driver_calls(log)[0]["env"]["RAY_ADDRESS"] == "203.0.113.5:6400"

    iface = tmp_path / "iface"
    result = run(MULTI, slurm_env(iface, 2, STUB_EXPERIMENT_NAME=NAME, RAY_HEAD_IFACE="ib0"))
    assert result.returncode == 0, result.stderr
    log = calls(iface)
    assert calls_of(log, "ip")[0]["argv"] == ["-4", "-o", "addr", "show", "dev", "ib0"]
    assert calls_of(log, "ip")[0]["host"] == "gpu01"
    assert "--node-ip-address=198.51.100.1" in next(c for c in ray_starts(log) if "--head" in c["argv"])["argv"]


def test_loopback_head_address_is_refused(tmp_path: Path) -> None:
    result = run(MULTI, slurm_env(tmp_path, 2, STUB_EXPERIMENT_NAME=NAME, STUB_HOST_IP="127.0.1.1"))
    assert result.returncode != 0
    assert "resolves to 127.0.1.1 (loopback): set RAY_HEAD_IP or RAY_HEAD_IFACE" in result.stderr
    assert ray_starts(calls(tmp_path)) == []


@pytest.mark.parametrize("script", [MULTI, SINGLE])
def test_bad_setup_stops_before_anything_starts(tmp_path: Path, script: str) -> None:
    no_runs = slurm_env(tmp_path, 1, STUB_EXPERIMENT_NAME=NAME)
    del no_runs["REWARDMAP_RUNS"]
    result = run(script, no_runs)
    assert result.returncode != 0 and "set REWARDMAP_RUNS" in result.stderr
    relative = run(script, slurm_env(tmp_path, 1, STUB_EXPERIMENT_NAME=NAME), "rewardmap.data_dir=data/rm")
    assert relative.returncode != 0 and "rewardmap.data_dir=data/rm: give an absolute path" in relative.stderr
    outside = slurm_env(tmp_path, 1, STUB_EXPERIMENT_NAME=NAME)
    del outside["SLURM_JOB_ID"]
    assert "not inside a SLURM job" in run(script, outside).stderr
    assert calls_of(calls(tmp_path), "srun") == [] and driver_calls(calls(tmp_path)) == []


def test_overrides_that_do_not_compose_stop_the_job_before_ray(tmp_path: Path) -> None:
    """The real Hydra composition (no stub name): a typo in a group choice ends the job at once."""
    result = run(MULTI, slurm_env(tmp_path, 1), "curriculum=no_such_curriculum", timeout=180)
    assert result.returncode != 0
    assert "do not compose" in result.stderr and "no_such_curriculum" in result.stderr
    assert ray_starts(calls(tmp_path)) == []


class Job:
    """A launch script running in the background, its output collected line by line as it comes."""

    def __init__(self, script: str, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            ["bash", script, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self) -> tuple[int, str]:
        rc = self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        return rc, "".join(self.lines)


def wait_for(condition: Callable[[], object], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("script", [MULTI, SINGLE])
def test_scancel_sigterm_stops_ray_on_every_node(tmp_path: Path, script: str) -> None:
    nodes = 3 if script == MULTI else 1
    env = slurm_env(tmp_path, nodes, STUB_EXPERIMENT_NAME=NAME, STUB_DRIVER_SECONDS="60")
    job = Job(script, env)
    wait_for(lambda: driver_calls(calls(tmp_path)), "the driver")
    job.signal(signal.SIGTERM)
    rc, out = job.finish()
    assert rc == 143, out
    stops = calls_of(calls(tmp_path), "ray", "stop")
    assert sorted(c["host"] for c in stops) == [f"gpu{i:02d}" for i in range(1, nodes + 1)]
    assert "SIGTERM" in out


@pytest.mark.parametrize("script", [MULTI, SINGLE])
def test_time_limit_signal_requeues_and_the_requeued_job_resumes(tmp_path: Path, script: str) -> None:
    env = slurm_env(tmp_path, 1, STUB_EXPERIMENT_NAME=NAME, STUB_DRIVER_SECONDS="60", STUB_DRIVER_CHECKPOINT="50")
    job = Job(script, env)
    ckpt = tmp_path / "runs" / NAME / "checkpoints"
    wait_for(lambda: (ckpt / "latest_checkpointed_iteration.txt").exists(), "the driver's checkpoint")
    job.signal(signal.SIGUSR1)  # what `#SBATCH --signal=B:USR1@600` sends before the time limit
    wait_for(lambda: calls_of(calls(tmp_path), "scontrol", "requeue"), "scontrol requeue")
    assert calls_of(calls(tmp_path), "scontrol", "requeue")[0]["argv"] == ["requeue", "4242"]
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "51", "the requested checkpoint came first"
    assert not (ckpt / "save_now.request").exists()
    job.signal(signal.SIGTERM)  # SLURM ends the attempt it requeued
    _, out = job.finish()
    assert "asked the trainer for a checkpoint" in out and "requeueing job 4242 at checkpoint 51" in out

    again = run(script, {**env, "SLURM_RESTART_COUNT": "1", "STUB_DRIVER_SECONDS": "0"})
    assert again.returncode == 0, again.stderr
    first, second = driver_calls(calls(tmp_path))
    for key in ("trainer.default_local_dir", "trainer.resume_mode"):
        assert override(first["argv"], key) == override(second["argv"], key)
    assert override(second["argv"], "trainer.default_local_dir") == str(ckpt)
    assert override(second["argv"], "trainer.resume_mode") == "auto"
    assert (tmp_path / "runs" / NAME / "logs" / "slurm-4242.1").is_dir(), "each attempt keeps its own logs"


def test_time_limit_without_a_new_checkpoint_does_not_requeue(tmp_path: Path) -> None:
    """A trainer that does not answer the checkpoint request in time (a step longer than the wait): no requeue."""
    env = slurm_env(
        tmp_path,
        1,
        STUB_EXPERIMENT_NAME=NAME,
        STUB_DRIVER_SECONDS="60",
        STUB_DRIVER_IGNORES_REQUEST="1",
        REWARDMAP_SAVE_WAIT="2",
    )
    job = Job(MULTI, env)
    wait_for(lambda: driver_calls(calls(tmp_path)), "the driver")
    job.signal(signal.SIGUSR1)
    wait_for(lambda: job.said("not requeueing"), "the time-limit message")
    assert job.said("no checkpoint written during this attempt")
    job.signal(signal.SIGTERM)
    job.finish()
    assert calls_of(calls(tmp_path), "scontrol", "requeue") == []


def test_single_node_variant_lets_the_driver_start_ray(tmp_path: Path) -> None:
    env = slurm_env(tmp_path, 1, STUB_EXPERIMENT_NAME=NAME, RAY_ADDRESS="10.9.9.9:6379")
    result = run(SINGLE, env, *USER_OVERRIDES)
    assert result.returncode == 0, result.stderr
    log = calls(tmp_path)
    assert ray_starts(log) == [] and calls_of(log, "srun", "--nodes=1", "--ntasks=1") == []
    (drive,) = driver_calls(log)
    assert drive["argv"][-len(USER_OVERRIDES) :] == USER_OVERRIDES
    assert override(drive["argv"], "ray_kwargs.ray_init.num_cpus") == "16"
    assert override(drive["argv"], "trainer.nnodes") == "1"
    assert override(drive["argv"], "trainer.default_local_dir") == str(tmp_path / "runs" / NAME / "checkpoints")
    assert "RAY_ADDRESS" not in drive["env"], "a stray RAY_ADDRESS would send the driver to another cluster"
    assert [c["host"] for c in calls_of(log, "ray", "stop")] == ["gpu01"]
    refused = run(SINGLE, slurm_env(tmp_path / "three", 3, STUB_EXPERIMENT_NAME=NAME))
    assert refused.returncode != 0 and "use launch/slurm_rewardmap.sbatch" in refused.stderr


def sbatch_options(script: str) -> dict[str, str]:
    options = {}
    for line in (REPO / script).read_text().splitlines():
        match = re.match(r"#SBATCH --([\w-]+)(?:=(.*))?$", line)
        if match:
            options[match.group(1)] = match.group(2) or ""
    return options


def slurm_seconds(value: str) -> int:
    """SLURM's --time forms [D-]HH:MM:SS / MM:SS / minutes."""
    days, _, clock = value.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        parts = [0, parts[0], 0]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


@pytest.mark.parametrize("script", [MULTI, SINGLE])
def test_sbatch_header_works_in_a_fresh_clone(script: str) -> None:
    options = sbatch_options(script)
    output_dir = Path(options["output"]).parent
    tracked = subprocess.run(["git", "ls-files", str(output_dir)], cwd=REPO, capture_output=True, text=True).stdout
    assert str(output_dir) == "." or tracked, "#SBATCH --output cannot create folders: it must exist in a clone"
    lead = int(re.fullmatch(r"B:USR1@(\d+)", options["signal"]).group(1))
    assert 0 < lead < slurm_seconds(options["time"]), "the signal must come before the time limit"
    assert "requeue" in options and options["open-mode"] == "append"


def test_node_count_defaults_to_what_the_presets_need() -> None:
    from tests.fixtures.configs import compose_config

    for preset in ("qwen2_5_vl_3b", "qwen2_5_vl_7b"):
        config = compose_config(f"preset={preset}")
        for script in (MULTI, SINGLE):
            options = sbatch_options(script)
            assert int(options["nodes"]) == config.trainer.nnodes == 1
            assert int(options["gpus-per-node"]) == config.trainer.n_gpus_per_node


# ------------------------------------------------------------------------------------ Ray token authentication


def token_file_while_running(tmp_path: Path, job: Job) -> tuple[Path, str, int]:
    """(the job's token file, its token, its mode) read while the driver runs; then the job is cancelled."""
    wait_for(lambda: driver_calls(calls(tmp_path)), "the driver")
    token_file = Path(driver_calls(calls(tmp_path))[0]["env"]["RAY_AUTH_TOKEN_PATH"])
    token, mode = token_file.read_text(), token_file.stat().st_mode & 0o777
    job.signal(signal.SIGTERM)
    job.finish()
    return token_file, token, mode


@pytest.mark.parametrize("script", [MULTI, SINGLE])
def test_one_new_token_per_job_reaches_every_ray_process_and_nothing_else(tmp_path: Path, script: str) -> None:
    """Ray 2.60 turns token auth on in a head that finds a token (here a stale ~/.ray/auth_token) but never in a
    worker, the poll or the driver by itself: the job sets RAY_AUTH_MODE=token and one token file for all of them."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("stale token from an earlier local ray.init")
    nodes = 3 if script == MULTI else 1
    env = slurm_env(tmp_path, nodes, STUB_EXPERIMENT_NAME=NAME, STUB_DRIVER_SECONDS="60", HOME=str(home))
    job = Job(script, env)
    token_file, token, mode = token_file_while_running(tmp_path, job)

    assert token_file.parent == tmp_path / "runs" / NAME / "logs" / "slurm-4242.0", "on storage every node mounts"
    assert mode == 0o600 and len(token) == 64
    log = calls(tmp_path)
    polls = [c for c in calls_of(log, "python") if c["argv"][0].endswith("ray_cluster_size.py")]
    assert len(ray_starts(log)) == (nodes if script == MULTI else 0) and bool(polls) == (script == MULTI)
    for call in [*ray_starts(log), *polls, *driver_calls(log)]:
        assert call["env"]["RAY_AUTH_MODE"] == "token", call["argv"]
        assert call["env"]["RAY_AUTH_TOKEN_PATH"] == str(token_file), call["argv"]
    assert all(token not in " ".join(c["argv"]) and token not in json.dumps(c["env"]) for c in log), "never a value"
    assert token not in "".join(job.lines)
    assert not token_file.exists(), "removed when the job ends"
    assert (home / ".ray" / "auth_token").read_text().startswith("stale"), "nothing written to ~/.ray"


def test_the_users_token_or_disabled_mode_is_kept(tmp_path: Path) -> None:
    mine = tmp_path / "my-token"
    mine.write_text("f" * 64)
    env = slurm_env(tmp_path, 2, STUB_EXPERIMENT_NAME=NAME, RAY_AUTH_TOKEN_PATH=str(mine))
    assert run(MULTI, env).returncode == 0
    for call in [*ray_starts(calls(tmp_path)), *driver_calls(calls(tmp_path))]:
        assert (call["env"]["RAY_AUTH_MODE"], call["env"]["RAY_AUTH_TOKEN_PATH"]) == ("token", str(mine))
    assert not list((tmp_path / "runs").rglob("ray-auth-token")) and mine.read_text() == "f" * 64

    off = tmp_path / "off"
    result = run(MULTI, slurm_env(off, 2, STUB_EXPERIMENT_NAME=NAME, RAY_AUTH_MODE="disabled"))
    assert result.returncode == 0 and "RAY_AUTH_MODE=disabled: this job's Ray cluster takes no token" in result.stdout
    for call in [*ray_starts(calls(off)), *driver_calls(calls(off))]:
        assert call["env"]["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN_PATH" not in call["env"]
