"""The pre-flight passes on good data and names the file, row or setting of every failure it exists to catch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_prep.synthetic import SyntheticParams, generate_dataset
from recipe.preflight import run_preflight
from tests.fixtures.configs import compose_config

REPO = Path(__file__).resolve().parents[1]
SMALL_BATCH = ("data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(
        tmp_path_factory.mktemp("synthetic") / "data", SyntheticParams(cities=3, seed=7, questions_per_city=24)
    )


def preflight(data_dir: Path, *overrides: str):
    return run_preflight(compose_config(*SMALL_BATCH, *overrides, data_dir=str(data_dir)))


def failed(report) -> dict[str, str]:
    return {c.name: c.detail for c in report.checks if not c.ok}


def test_good_data_passes_every_check(data_dir: Path) -> None:
    report = preflight(data_dir)
    assert report.ok, report.render()
    names = [c.name for c in report.checks]
    assert names == ["verl config", "data files", "stage plan", "model processor", "prompt budget", "reward"]
    assert "torf" in report.plan_table and "planning" in report.plan_table


def test_missing_stage_file_is_named(data_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    (broken / "counting.parquet").unlink()
    fails = failed(preflight(broken))
    assert "counting.parquet: not found" in fails["data files"]
    assert "counting" in fails["stage plan"]


def test_row_breaking_the_schema_is_named(data_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    table = pq.read_table(broken / "torf.parquet")
    rows = table.to_pylist()
    rows[1]["reward_model"]["style"] = "model"
    pq.write_table(table.from_pylist(rows, schema=table.schema), broken / "torf.parquet")
    detail = failed(preflight(broken))["data files"]
    assert "torf.parquet row 1" in detail and "reward_model.style" in detail


def test_prompt_over_budget_is_refused(data_dir: Path) -> None:
    detail = failed(preflight(data_dir, "data.max_prompt_length=300"))["prompt budget"]
    assert "exceeds data.max_prompt_length=300" in detail


def test_more_steps_than_the_plan_is_refused(data_dir: Path) -> None:
    detail = failed(preflight(data_dir, "trainer.total_training_steps=100000"))["stage plan"]
    assert "total_training_steps=100000" in detail


def test_verl_validation_failure_is_reported(data_dir: Path) -> None:
    detail = failed(preflight(data_dir, "data.train_batch_size=2"))["verl config"]
    assert "mini" in detail.lower()


def test_bad_reward_option_is_named(data_dir: Path) -> None:
    detail = failed(preflight(data_dir, "reward.reward_kwargs.mode=bogus"))["reward"]
    assert "reward.reward_kwargs.mode" in detail and "bogus" in detail


def test_epochs_outside_the_stages_are_refused(data_dir: Path) -> None:
    detail = failed(preflight(data_dir, "trainer.total_epochs=2"))["verl config"]
    assert "total_epochs must be 1" in detail


def test_the_legacy_trainer_is_refused(data_dir: Path) -> None:
    detail = failed(preflight(data_dir, "trainer.use_v1=false"))["verl config"]
    assert "trainer.use_v1 must be true" in detail


def test_main_command_runs_the_preflight_on_the_embedded_default(tmp_path: Path) -> None:
    """The README's main-job command on a machine without GPUs, offline, with the tiny local model."""
    env = dict(os.environ, REWARDMAP_CACHE=str(tmp_path), CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-m", "recipe.main_rewardmap", "--tiny-model", "rewardmap.synthetic_cities=3"]
    command += ["rewardmap.synthetic_questions_per_city=24", *SMALL_BATCH]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "FAIL" not in out.stdout
    assert "loaded from tiny local Qwen2.5-VL" in out.stdout
    assert "through the recipe's reward manager" in out.stdout
    assert "no CUDA device here: stopped after the pre-flight" in out.stdout
    assert list(tmp_path.glob("synthetic-*/manifest.json")), "the embedded curriculum was prepared in the cache"


def test_failing_preflight_exits_non_zero(tmp_path: Path) -> None:
    env = dict(os.environ, REWARDMAP_CACHE=str(tmp_path))
    command = [sys.executable, "-m", "recipe.main_rewardmap", "--preflight", f"rewardmap.data_dir={tmp_path}/none"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert out.returncode != 0
    assert "torf.parquet: not found" in out.stdout
    assert "pre-flight failed" in out.stderr
