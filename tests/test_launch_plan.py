"""recipe/launch_plan.py: the one Python entry the launch scripts call before they start anything.

It composes the config once with the driver's overrides and reads the run name from it, checks the paths other
machines will read, refuses a bad command line with one error naming what is wrong (and writes nothing), and
prints bash assignments that read back exactly, whatever characters the values hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipe import launch_plan
from recipe.launch_plan import LaunchError, plan_launch

REPO = Path(__file__).resolve().parents[1]


def plan(tmp_path: Path, *args: str, launcher: str = "slurm", **environ: str) -> launch_plan.LaunchPlan:
    env = {"REWARDMAP_RUNS": str(tmp_path / "runs"), **environ}
    return plan_launch(
        launcher,
        list(args),
        environ=env,
        caller_dir=tmp_path,
        preset="qwen2_5_vl_7b" if launcher == "ray-job" else None,
        nnodes=2,
        gpus_per_node=8,
    )


@pytest.fixture
def named(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Stand-in for the composition (for tests about everything else): records what it was given, names 'run'."""
    seen: list[list[str]] = []

    def compose(overrides: list[str]) -> str:
        seen.append(list(overrides))
        return "run"

    monkeypatch.setattr(launch_plan, "compose_experiment_name", compose)
    return seen


def test_the_run_is_named_by_the_composition_and_the_last_preset_wins(tmp_path: Path) -> None:
    given = plan(tmp_path, "trainer.experiment_name=my_run", "curriculum=coarse")
    assert given.experiment_name == "my_run", "the composed value, whatever rule made it"
    assert given.run_dir == tmp_path / "runs" / "my_run"
    assert all((given.run_dir / sub).is_dir() for sub in ("checkpoints", "tensorboard", "logs"))

    by_script = plan(tmp_path, "curriculum=coarse", launcher="ray-job")  # the script's preset: qwen2_5_vl_7b
    by_user = plan(tmp_path, "preset=qwen2_5_vl_3b", "curriculum=coarse", launcher="ray-job")
    three = plan_launch(
        "ray-job",
        ["curriculum=coarse"],
        environ={"REWARDMAP_RUNS": str(tmp_path)},
        caller_dir=tmp_path,
        preset="qwen2_5_vl_3b",
    )
    assert by_user.experiment_name == three.experiment_name != by_script.experiment_name
    assert by_user.overrides[0] == "preset=qwen2_5_vl_7b", "the script's preset first: the user's, later, wins"


@pytest.mark.parametrize(
    ("args", "named_in_error"),
    [
        (["curriculum=coarce"], ["do not compose", "coarce"]),
        (["preset=qwen9_vl_1t"], ["do not compose", "preset", "qwen9_vl_1t"]),
        (["trainer.no_such_key=1"], ["do not compose", "no_such_key"]),
        (["+trainer.note=a 'b' c"], ["do not compose", "+trainer.note=a 'b' c"]),
    ],
)
def test_overrides_that_do_not_compose_are_refused_and_nothing_is_written(
    tmp_path: Path, args: list[str], named_in_error: list[str]
) -> None:
    with pytest.raises(LaunchError) as refused:
        plan(tmp_path, *args)
    for text in named_in_error:
        assert text in str(refused.value)
    assert not (tmp_path / "runs").exists()


def test_paths_are_made_absolute_and_checked(tmp_path: Path, named: list[list[str]]) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text("{}")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    good = plan(tmp_path, DATA_DIR="data", MODEL="./model")
    assert f"rewardmap.data_dir={tmp_path / 'data'}" in good.overrides
    assert f"actor_rollout_ref.model.path={tmp_path / 'model'}" in good.overrides
    assert named[-1] == good.overrides[:-1], "composed with the driver's overrides, less the run folder"
    assert good.overrides[-1] == f"trainer.default_local_dir={tmp_path / 'runs' / 'run' / 'checkpoints'}"

    (tmp_path / "empty").mkdir()
    (tmp_path / "no-config").mkdir()
    cases = [
        ({"DATA_DIR": "missing"}, [], f"data folder {tmp_path / 'missing'} does not exist"),
        ({"DATA_DIR": "empty"}, [], "has no readable manifest.json"),
        ({"MODEL": "./nowhere"}, [], "no such folder"),
        ({"MODEL": "no-config"}, [], f"model {tmp_path / 'no-config'} is not a readable model folder"),
        ({"MODEL": "not a/hub name"}, [], "not a hub name (org/name)"),
        ({}, ["rewardmap.data_dir=relative/data"], "rewardmap.data_dir=relative/data: give an absolute path"),
        ({}, ["++rewardmap.data_dir=rel"], "++rewardmap.data_dir=rel: give an absolute path (or DATA_DIR=rel"),
        ({}, ["actor_rollout_ref.model.path=./m"], "give an absolute path (or MODEL=./m"),
        ({}, [f"rewardmap.data_dir={tmp_path / 'empty'}"], "has no readable manifest.json"),
        ({"REWARDMAP_RUNS": ""}, [], "set REWARDMAP_RUNS to a folder every node mounts"),
    ]
    for environ, args, message in cases:
        with pytest.raises(LaunchError) as refused:
            plan(tmp_path, *args, **{"REWARDMAP_RUNS": str(tmp_path / "case"), **environ})
        assert message in str(refused.value), (environ, args)
        assert not (tmp_path / "case").exists()
    assert plan(tmp_path, "rewardmap.data_dir=null", "~actor_rollout_ref.model.path").experiment_name == "run"


def test_hub_names_are_kept_and_checked_against_an_offline_cache(
    tmp_path: Path, named: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    hub = "Qwen/Qwen2.5-VL-7B-Instruct"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    online = plan(tmp_path, f"actor_rollout_ref.model.path={hub}", MODEL=hub)
    assert f"actor_rollout_ref.model.path={hub}" in online.overrides
    assert any("a hub name" in note and "HF_HUB_OFFLINE=1" in note for note in online.notes)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LaunchError, match=f"HF_HUB_OFFLINE=1 but {hub} is not in the cache {tmp_path / 'hub'}"):
        plan(tmp_path, MODEL=hub)
    (tmp_path / "hub" / "models--Qwen--Qwen2.5-VL-7B-Instruct").mkdir(parents=True)
    assert plan(tmp_path, MODEL=hub).experiment_name == "run"


def test_flags_and_overrides_in_any_order_and_flags_that_change_the_config_are_refused(
    tmp_path: Path, named: list[list[str]]
) -> None:
    plan(tmp_path, "--cfg", "job", "curriculum=coarse", "--dry-run", "-p", "trainer", "reward_mode=sparse")
    assert named[-1][-3:] == ["curriculum=coarse", "dry_run=cpu", "reward_mode=sparse"], "flags are not overrides"
    plan(tmp_path, "--info", "curriculum=coarse")  # split as the driver splits: no value taken from an override
    assert named[-1][-1] == "curriculum=coarse"
    for args, message in [
        (["--config-name", "other"], "--config-name: the launch scripts run configs/rewardmap.yaml"),
        (["-m", "curriculum=fine,coarse"], "--multirun: a launch runs one job"),
        (["--no-such-flag"], "cannot read the arguments --no-such-flag: unrecognized arguments: --no-such-flag"),
    ]:
        with pytest.raises(LaunchError) as refused:
            plan(tmp_path, *args)
        assert message in str(refused.value)


def test_smoke_plan_runs_one_gpu_in_its_own_folder(
    tmp_path: Path, named: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the default model is a hub name
    smoke = plan(tmp_path, "trainer.total_training_steps=2", launcher="smoke", STEPS="3")
    assert smoke.overrides[0] == f"actor_rollout_ref.model.path={launch_plan.SMOKE_MODEL}"
    assert {"trainer.n_gpus_per_node=1", "trainer.resume_mode=disable", "trainer.total_training_steps=3"} <= set(
        smoke.overrides
    )
    assert named[-1][-1] == "trainer.total_training_steps=2", "the user's overrides win"


def test_the_ray_job_runtime_env_forwards_the_listed_variables_only(tmp_path: Path, named: list[list[str]]) -> None:
    environ = {
        "WANDB_PROJECT": "rm",
        "HF_HOME": "/shared/hf",
        "https_proxy": "http://proxy:3128",
        "RAY_ADDRESS": "http://head:8265",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": "a-secret-token",
        "RAY_AUTH_TOKEN_PATH": "/home/u/.ray/auth_token",
        "CUDA_VISIBLE_DEVICES": "0",
        "PYTHONPATH": "/x",
    }
    job = plan(tmp_path, launcher="ray-job", **environ)
    env = job.runtime_env["env_vars"]
    assert env == {
        "HF_HOME": "/shared/hf",
        "REWARDMAP_RUNS": str(tmp_path / "runs"),
        "TENSORBOARD_DIR": str(job.tensorboard_dir),
        "WANDB_PROJECT": "rm",
        "https_proxy": "http://proxy:3128",
    }
    assert "a-secret-token" not in json.dumps(job.runtime_env), "a Ray token never reaches the dashboard"
    assert job.runtime_env["working_dir"] == str(REPO) and ".venv" in job.runtime_env["excludes"]
    assert plan(tmp_path).runtime_env is None


def test_bash_reads_the_plan_back_exactly(tmp_path: Path) -> None:
    odd = tmp_path / "runs $(touch pwned) 'q' \"d\" `x`"
    given = launch_plan.LaunchPlan("it's a `run`", odd, ["+trainer.note=a 'b' $HOME", "k=[1, 2]"], {"a": "'$x'"})
    script = 'eval "$1"; printf "%s\\n" "$RM_EXPERIMENT_NAME" "$RM_RUN_DIR" "$RM_CKPT_DIR" "$TENSORBOARD_DIR" '
    script += '"${#RM_OVERRIDES[@]}" "${RM_OVERRIDES[@]}" "$RM_RUNTIME_ENV"; bash -c "echo \\$TENSORBOARD_DIR"'
    out = subprocess.run(["bash", "-c", script, "bash", given.shell()], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "it's a `run`",
        str(odd),
        str(odd / "checkpoints"),
        str(odd / "tensorboard"),
        "2",
        "+trainer.note=a 'b' $HOME",
        "k=[1, 2]",
        json.dumps({"a": "'$x'"}),
        str(odd / "tensorboard"),  # exported
    ]
    assert not (tmp_path / "pwned").exists()


def run_entry(tmp_path: Path, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REWARDMAP_", "MODEL", "DATA_DIR", "HF_HUB"))}
    env.update(PYTHONPATH=str(REPO), REWARDMAP_RUNS=str(tmp_path / "runs"), **environ)
    command = [sys.executable, "-m", "recipe.launch_plan", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_the_entry_prints_only_the_plan_on_stdout_or_one_error(tmp_path: Path) -> None:
    bad = run_entry(tmp_path, "ray-job", "--preset", "qwen2_5_vl_3b", "--caller-dir", str(tmp_path), "--", "x=1")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("[rewardmap] error: the Hydra overrides") and "x=1" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, "one line, no traceback"

    good = run_entry(tmp_path, "slurm", "--nnodes", "1", "--gpus-per-node", "8", "--", "trainer.experiment_name=e")
    assert good.returncode == 0, good.stderr
    assert [line.split("=", 1)[0] for line in good.stdout.splitlines()] == [
        "RM_EXPERIMENT_NAME",
        "RM_RUN_DIR",
        "RM_CKPT_DIR",
        "RM_OVERRIDES",
        "export TENSORBOARD_DIR",
    ]
    assert "RM_EXPERIMENT_NAME=e" in good.stdout.splitlines()
    assert run_entry(tmp_path, "slurm", "--", "x=1").returncode == 2, "slurm needs the node layout"
