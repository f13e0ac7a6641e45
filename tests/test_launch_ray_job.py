"""The `ray job submit` scripts and the one-GPU smoke run, against recording stubs of ray and python.

What a job gets: the submitter's forwarded variables (and none of the others) in its runtime environment, a
working dir without logs, checkpoints, data or .venv, an absolute checkpoint folder under REWARDMAP_RUNS with
TensorBoard beside it, absolute and checked data and model paths, and the user's Hydra overrides untouched.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster_stubs import REPO, calls_of, driver_calls, override, read_calls, stub_env

SEVEN = "launch/run_rewardmap_qwen2_5_vl_7b.sh"
THREE = "launch/run_rewardmap_qwen2_5_vl_3b.sh"
SMOKE = "launch/run_rewardmap_gpu_smoke.sh"
NAME = "qwen2_5_vl_7b-coarse_curriculum-sparse_reward"
USER_OVERRIDES = ["curriculum=coarse", "reward_mode=sparse", "trainer.logger=[console,wandb]", "+trainer.note=a 'b' c"]
FORWARDED = {
    "WANDB_API_KEY": "k",
    "WANDB_PROJECT": "rewardmap",
    "HF_HOME": "/shared/hf",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_CACHE": "/shared/hf/datasets",
    "NCCL_SOCKET_IFNAME": "ib0",
    "VERL_LOGGING_LEVEL": "INFO",
    "VLLM_USE_V1": "1",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    "REWARDMAP_CACHE": "/shared/cache",
    "https_proxy": "http://proxy:3128",
}
NOT_FORWARDED = {"RAY_ADDRESS": "http://head:8265", "CUDA_VISIBLE_DEVICES": "0", "SECRET_THING": "x", "HOME": "/h"}


def run(script: str, env: dict[str, str], *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    path = REPO / script
    return subprocess.run(["bash", str(path), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def submits(tmp_path: Path) -> list[list[str]]:
    return [c["argv"] for c in calls_of(read_calls(tmp_path / "calls.jsonl"), "ray", "job", "submit")]


def split_submit(argv: list[str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """(runtime env, ray job submit options, entrypoint) of one recorded `ray job submit`."""
    cut = argv.index("--")
    options, entrypoint = argv[2:cut], argv[cut + 1 :]
    return json.loads(options[options.index("--runtime-env-json") + 1]), options, entrypoint


def test_job_carries_the_listed_variables_an_absolute_run_folder_and_the_overrides(tmp_path: Path) -> None:
    env = stub_env(tmp_path, STUB_EXPERIMENT_NAME=NAME, **FORWARDED, **NOT_FORWARDED)
    result = run(SEVEN, env, *USER_OVERRIDES)
    assert result.returncode == 0, result.stderr
    (argv,) = submits(tmp_path)
    runtime_env, options, entrypoint = split_submit(argv)
    run_dir = tmp_path / "runs" / NAME

    env_vars = runtime_env["env_vars"]
    assert {k: env_vars[k] for k in FORWARDED} == FORWARDED
    assert not set(NOT_FORWARDED) & set(env_vars), "RAY_*, CUDA_VISIBLE_DEVICES and unlisted names stay behind"
    assert env_vars["TENSORBOARD_DIR"] == str(run_dir / "tensorboard")
    assert runtime_env["working_dir"] == str(REPO)
    assert {".venv", "/data", "/runs", "/logs", "checkpoints", "outputs", ".git"} <= set(runtime_env["excludes"])
    assert options[options.index("--address") + 1] == "http://head:8265"
    assert "--no-wait" not in options

    assert entrypoint[:3] == ["python", "-m", "recipe.main_rewardmap"]
    assert entrypoint[-len(USER_OVERRIDES) :] == USER_OVERRIDES, "the user's overrides arrive untouched, last"
    assert override(entrypoint, "preset") == "qwen2_5_vl_7b"
    assert override(entrypoint, "trainer.default_local_dir") == str(run_dir / "checkpoints")
    assert override(entrypoint, "trainer.resume_mode") == "auto"
    assert (override(entrypoint, "trainer.nnodes"), override(entrypoint, "trainer.n_gpus_per_node")) == ("1", "8")
    assert (run_dir / "checkpoints").is_dir() and (run_dir / "tensorboard").is_dir()

    job_id = options[options.index("--submission-id") + 1]
    assert job_id.startswith(f"rewardmap-{NAME}-")
    for command in (
        "logs --address http://head:8265 --follow",
        "stop --address http://head:8265",
        "logs --address http://head:8265",
    ):
        assert re.search(rf"ray job {command} {re.escape(job_id)}", result.stdout), command


def test_no_wait_and_the_same_command_again_resumes_in_the_same_folder(tmp_path: Path) -> None:
    env = stub_env(tmp_path, STUB_EXPERIMENT_NAME=NAME)
    assert run(SEVEN, env, "--no-wait", *USER_OVERRIDES).returncode == 0
    assert run(SEVEN, env, *USER_OVERRIDES).returncode == 0
    (_, first_options, first), (_, second_options, second) = (split_submit(a) for a in submits(tmp_path))
    assert "--no-wait" in first_options and "--no-wait" not in second_options
    assert "--no-wait" not in first, "a launcher option is not a Hydra override"
    assert override(first, "trainer.default_local_dir") == override(second, "trainer.default_local_dir")


def test_relative_paths_become_absolute_and_are_checked_before_submission(tmp_path: Path) -> None:
    caller = tmp_path / "work"
    (caller / "rm-data").mkdir(parents=True)
    (caller / "rm-data" / "manifest.json").write_text("{}")
    (caller / "model").mkdir()
    (caller / "model" / "config.json").write_text("{}")
    env = stub_env(tmp_path, STUB_EXPERIMENT_NAME=NAME, DATA_DIR="rm-data", MODEL="./model", REWARDMAP_RUNS="runs")
    result = run(THREE, env, cwd=caller)
    assert result.returncode == 0, result.stderr
    (argv,) = submits(tmp_path)
    _, _, entrypoint = split_submit(argv)
    assert override(entrypoint, "rewardmap.data_dir") == str(caller / "rm-data")
    assert override(entrypoint, "actor_rollout_ref.model.path") == str(caller / "model")
    assert override(entrypoint, "trainer.default_local_dir") == str(caller / "runs" / NAME / "checkpoints")
    assert override(entrypoint, "preset") == "qwen2_5_vl_3b"


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"DATA_DIR": "missing"}, [], "missing does not exist"),
        ({"DATA_DIR": "empty"}, [], "has no readable manifest.json"),
        ({"MODEL": "./nowhere"}, [], "no such folder"),
        ({}, ["rewardmap.data_dir=relative/data"], "give an absolute path"),
        ({}, ["actor_rollout_ref.model.path=./m"], "give an absolute path"),
        ({"REWARDMAP_RUNS": ""}, [], "set REWARDMAP_RUNS"),
    ],
)
def test_bad_paths_stop_before_submission(tmp_path: Path, env: dict[str, str], args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    result = run(SEVEN, stub_env(tmp_path, STUB_EXPERIMENT_NAME=NAME, **env), *args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert submits(tmp_path) == []


def test_a_hub_model_name_is_allowed_and_said_so(tmp_path: Path) -> None:
    env = stub_env(tmp_path, STUB_EXPERIMENT_NAME=NAME, MODEL="Qwen/Qwen2.5-VL-7B-Instruct")
    result = run(SEVEN, env, "actor_rollout_ref.model.path=Qwen/Qwen2.5-VL-7B-Instruct", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "a hub name" in result.stderr and "HF_HUB_OFFLINE=1" in result.stderr
    _, _, entrypoint = split_submit(submits(tmp_path)[0])
    assert override(entrypoint, "actor_rollout_ref.model.path") == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_run_folder_is_named_by_the_real_composition(tmp_path: Path) -> None:
    """No stub name: Hydra composes the overrides on the submitting machine, as the driver will."""
    result = run(SEVEN, stub_env(tmp_path), "curriculum=coarse", "reward_mode=sparse")
    assert result.returncode == 0, result.stderr
    _, _, entrypoint = split_submit(submits(tmp_path)[0])
    assert override(entrypoint, "trainer.default_local_dir") == str(tmp_path / "runs" / NAME / "checkpoints")

    typo = run(SEVEN, stub_env(tmp_path / "typo"), "curriculum=coarce")
    assert typo.returncode != 0 and "do not compose" in typo.stderr
    assert submits(tmp_path / "typo") == []


def test_a_failed_submission_fails_the_script(tmp_path: Path) -> None:
    result = run(SEVEN, stub_env(tmp_path, STUB_EXPERIMENT_NAME=NAME, STUB_SUBMIT_RC="3"))
    assert result.returncode == 3


def test_help_lists_the_variables(tmp_path: Path) -> None:
    result = run(SEVEN, stub_env(tmp_path), "--help")
    assert result.returncode == 0 and "REWARDMAP_RUNS" in result.stdout and "--no-wait" in result.stdout
    assert submits(tmp_path) == []


def test_gpu_smoke_runs_the_driver_once_on_one_gpu(tmp_path: Path) -> None:
    env = stub_env(tmp_path, MODEL="Qwen/Qwen2.5-VL-3B-Instruct")
    result = run(SMOKE, env, "trainer.total_training_steps=2", "+trainer.note=x y")
    assert result.returncode == 0, result.stderr
    (drive,) = driver_calls(read_calls(tmp_path / "calls.jsonl"))
    argv = drive["argv"]
    assert argv[-2:] == ["trainer.total_training_steps=2", "+trainer.note=x y"]
    assert override(argv, "trainer.n_gpus_per_node") == "1"
    assert override(argv, "trainer.default_local_dir") == str(tmp_path / "runs" / "gpu_smoke" / "checkpoints")
    assert override(argv, "trainer.experiment_name") == "gpu_smoke", "never the checkpoints of a real run"
    assert override(argv, "trainer.resume_mode") == "disable"
    assert drive["env"]["TENSORBOARD_DIR"] == str(tmp_path / "runs" / "gpu_smoke" / "tensorboard")


def test_offline_hub_model_must_be_in_the_cache_before_submission(tmp_path: Path) -> None:
    hub = "Qwen/Qwen2.5-VL-7B-Instruct"
    env = stub_env(tmp_path, STUB_EXPERIMENT_NAME=NAME, MODEL=hub, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    missing = run(SEVEN, env)
    assert missing.returncode != 0
    assert f"HF_HUB_OFFLINE=1 but {hub} is not in the cache {tmp_path / 'hf' / 'hub'}" in missing.stderr
    assert submits(tmp_path) == []
    (tmp_path / "hf" / "hub" / "models--Qwen--Qwen2.5-VL-7B-Instruct").mkdir(parents=True)
    assert run(SEVEN, env).returncode == 0
    assert len(submits(tmp_path)) == 1


# ------------------------------------------------------------------------------------ Ray token authentication


def test_a_token_cluster_gets_token_mode_and_the_job_no_token(tmp_path: Path) -> None:
    """Ray 2.60's `ray job submit` sends the token only with RAY_AUTH_MODE=token: the script asks the cluster and
    sets it for the submission; the token itself stays where Ray reads it, out of the job's runtime env."""
    secret = "9" * 64
    env = stub_env(tmp_path, STUB_EXPERIMENT_NAME=NAME, STUB_CLUSTER_AUTH_MODE="token", RAY_AUTH_TOKEN=secret)
    env["RAY_ADDRESS"] = "http://head:8265"
    result = run(SEVEN, env, "--no-wait")
    assert result.returncode == 0, result.stderr
    log = read_calls(tmp_path / "calls.jsonl")
    (asked,) = [c for c in calls_of(log, "python") if c["argv"][0].endswith("launch/ray_auth.py")]
    assert asked["argv"][1:] == ["cluster-mode", "http://head:8265"]
    (submit,) = calls_of(log, "ray", "job", "submit")
    assert submit["env"]["RAY_AUTH_MODE"] == "token" and submit["env"]["RAY_AUTH_TOKEN"] == secret
    runtime_env, _, _ = split_submit(submit["argv"])
    assert not [k for k in runtime_env["env_vars"] if k.startswith("RAY_")]
    assert secret not in " ".join(submit["argv"]) and secret not in result.stdout + result.stderr
    assert "RAY_AUTH_MODE=token ray job logs --address http://head:8265 --follow" in result.stdout


def test_no_token_mode_for_an_open_cluster_and_the_users_mode_is_kept(tmp_path: Path) -> None:
    result = run(SEVEN, stub_env(tmp_path, STUB_EXPERIMENT_NAME=NAME, STUB_CLUSTER_AUTH_MODE="disabled"))
    assert result.returncode == 0, result.stderr
    (submit,) = calls_of(read_calls(tmp_path / "calls.jsonl"), "ray", "job", "submit")
    assert "RAY_AUTH_MODE" not in submit["env"]

    mine = tmp_path / "mine"
    env = stub_env(mine, STUB_EXPERIMENT_NAME=NAME, STUB_CLUSTER_AUTH_MODE="token", RAY_AUTH_MODE="disabled")
    assert run(SEVEN, env).returncode == 0
    log = read_calls(mine / "calls.jsonl")
    assert not [c for c in calls_of(log, "python") if c["argv"][0].endswith("ray_auth.py")], "not asked"
    assert calls_of(log, "ray", "job", "submit")[0]["env"]["RAY_AUTH_MODE"] == "disabled"


def test_a_token_cluster_and_no_token_here_stops_before_submission(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = stub_env(tmp_path, STUB_EXPERIMENT_NAME=NAME, STUB_CLUSTER_AUTH_MODE="token", HOME=str(home))
    result = run(SEVEN, env)
    assert result.returncode != 0
    assert "uses token authentication and this machine has no token" in result.stderr
    assert submits(tmp_path) == []
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("3" * 64)  # what `ray get-auth-token` on the head prints
    assert run(SEVEN, env).returncode == 0 and len(submits(tmp_path)) == 1
