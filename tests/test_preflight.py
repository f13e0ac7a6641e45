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
from recipe.preflight import Status, run_preflight
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


def statuses(report) -> dict[str, Status]:
    return {c.name: c.status for c in report.checks}


def test_good_data_passes_every_check(data_dir: Path) -> None:
    report = preflight(data_dir)
    assert report.ok, report.render()
    # the configured model is not downloaded here: its checks say so instead of passing
    assert statuses(report) == {
        "verl config": Status.OK,
        "verl workarounds": Status.OK,
        "data files": Status.OK,
        "stage plan": Status.OK,
        "resume": Status.OK,
        "gpu memory": Status.OK,
        "model processor": Status.SKIPPED,
        "prompt budget": Status.WARN,
        "reward": Status.OK,
    }
    assert "torf" in report.plan_table and "planning" in report.plan_table


def test_every_status_prints_as_itself(data_dir: Path) -> None:
    lines = preflight(data_dir).render().splitlines()
    assert any(line.startswith("  [SKIPPED] model processor: cannot load") for line in lines), lines
    assert any(line.startswith("  [WARN] prompt budget: longest prompt about") for line in lines), lines
    assert any(line.startswith("  [ok] reward:") for line in lines), lines


def test_data_seed_null_is_planned_as_the_dataset_plans_it(data_dir: Path) -> None:
    from recipe.stages import plan_from_data_config

    config = compose_config(*SMALL_BATCH, "data.seed=null", data_dir=str(data_dir))
    report = run_preflight(config)
    assert statuses(report)["stage plan"] is Status.OK, report.render()
    assert report.plan_table == plan_from_data_config(config.data).describe()


def test_whole_files_are_never_read(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def whole_file(*args, **kwargs):
        raise AssertionError("the pre-flight read a whole Parquet file")

    monkeypatch.setattr(pq, "read_table", whole_file)
    monkeypatch.setattr(pq.ParquetFile, "read", whole_file)
    report = preflight(data_dir, "rewardmap.preflight_rows=2")
    assert statuses(report)["data files"] is Status.OK, report.render()
    assert "the first 10 rows read" in {c.name: c.detail for c in report.checks}["data files"]


def test_empty_stage_file_fails_and_nothing_is_measured(data_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    for name in ("torf", "counting", "counting_stops", "planning", "val"):
        table = pq.read_table(broken / f"{name}.parquet")
        pq.write_table(table.slice(0, 0), broken / f"{name}.parquet")
    report = preflight(broken)
    assert not report.ok
    assert "torf.parquet: no rows" in failed(report)["data files"]
    assert statuses(report)["prompt budget"] is Status.SKIPPED  # not "longest prompt 0 tokens [ok]"
    assert statuses(report)["reward"] is Status.SKIPPED


def test_missing_val_file_says_how_to_get_one(data_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    (broken / "val.parquet").unlink()
    detail = failed(preflight(broken))["data files"]
    assert "val.parquet: not found" in detail
    assert "data_prep.reasonmap" in detail and "--source val=" in detail and "data_prep.synthetic" in detail


def test_released_reward_on_long_planning_answers_is_a_warning_naming_the_flaw(data_dir: Path) -> None:
    report = preflight(data_dir, "reward_mode=released")  # the data asks long1/long2 planning questions too
    assert report.ok, report.render()
    assert statuses(report)["reward"] is Status.WARN
    detail = {c.name: c.detail for c in report.checks}["reward"]
    assert "via-stop line into the arrival stop" in detail and "long" in detail


def test_missing_nested_position_id_fix_is_refused(data_dir: Path) -> None:
    env = "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES"
    detail = failed(preflight(data_dir, f"{env}=some.other_module"))["verl workarounds"]
    assert "recipe.nested_mrope_fix" in detail and "equal-length" in detail


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


def test_preflight_command_checks_the_embedded_default_with_the_tiny_model(tmp_path: Path) -> None:
    """``--preflight --tiny-model`` on a machine without GPUs, offline: the configured run is checked, not trained."""
    env = dict(os.environ, REWARDMAP_CACHE=str(tmp_path), CUDA_VISIBLE_DEVICES="")
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "recipe.main_rewardmap", "--preflight", "--tiny-model"]
    command += ["rewardmap.synthetic_cities=3", "rewardmap.synthetic_questions_per_city=24", *SMALL_BATCH]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "FAIL" not in out.stdout
    assert "loaded from tiny local Qwen2.5-VL" in out.stdout
    assert "[ok] prompt budget: longest prompt" in out.stdout and "measured with the processor" in out.stdout
    assert "through the recipe's reward manager" in out.stdout
    assert "dry run" not in out.stdout, "--preflight checks the configured run, it never adds the CPU dry run"
    assert "engine is not available" not in out.stderr, "verl's missing-engine warnings are not shown to users"
    assert list(tmp_path.glob("synthetic-*/manifest.json")), "the embedded curriculum was prepared in the cache"


def test_failing_preflight_exits_non_zero(tmp_path: Path) -> None:
    env = dict(os.environ, REWARDMAP_CACHE=str(tmp_path))
    command = [sys.executable, "-m", "recipe.main_rewardmap", "--preflight", f"rewardmap.data_dir={tmp_path}/none"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert out.returncode != 0
    assert "torf.parquet: not found" in out.stdout
    assert "pre-flight failed" in out.stderr


def test_prompt_is_measured_as_the_agent_loop_builds_it(tiny: tuple, tmp_path: Path) -> None:
    """The row's own pixel budget decides the image size (here min_pixels enlarges a small map), as in training."""
    from verl.trainer.ppo.utils import create_rl_dataset

    from data_prep.images import IMAGE_FACTOR
    from recipe.preflight import _prompt_tokens
    from tests.fixtures.agent_loop import run_agent_loop
    from tests.fixtures.stage_data import make_row, write_rows

    tokenizer, processor = tiny
    row = make_row("torf", 0, size=(56, 56))  # 4 image tokens as stored ...
    row["images"][0]["min_pixels"] = 16 * IMAGE_FACTOR**2  # ... 16 once fitted to the row's own budget
    row["images"][0]["max_pixels"] = 64 * IMAGE_FACTOR**2
    file = write_rows(tmp_path / "rows.parquet", [row])
    config = compose_config(f"data.val_files=[{file}]", "data.stages=[]", data_dir=str(tmp_path)).data
    dataset = create_rl_dataset([str(file)], config, tokenizer, processor, is_train=False)
    run = run_agent_loop(dataset[0], tiny, dataset, config, 512, 8, answer_ids=[tokenizer.eos_token_id])

    measured = _prompt_tokens(processor, row)
    assert measured == len(run.output.prompt_ids)
    unfitted = processor(
        text=[processor.apply_chat_template(_messages(row), add_generation_prompt=True, tokenize=False)],
        images=[_stored_image(row)],
        return_tensors="pt",
    )["input_ids"].shape[-1]
    assert measured == unfitted + 12, "the stored 2x2-token map is measured at the row's 4x4-token minimum"


def _messages(row: dict) -> list:
    from recipe.row_images import chat_messages

    return chat_messages(row)


def _stored_image(row: dict):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB")


def test_a_checkpoint_of_other_training_choices_fails_before_anything_starts(data_dir: Path, tmp_path: Path) -> None:
    from recipe.run_name import write_run_record

    checkpoints = f"trainer.default_local_dir={tmp_path}"
    write_run_record(tmp_path / "global_step_2", compose_config(*SMALL_BATCH, checkpoints, data_dir=str(data_dir)))
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("2")
    report = preflight(data_dir, checkpoints, "curriculum=coarse")
    assert "curriculum fine -> coarse" in failed(report)["resume"], report.render()
    assert statuses(preflight(data_dir, checkpoints))["resume"] is Status.OK
