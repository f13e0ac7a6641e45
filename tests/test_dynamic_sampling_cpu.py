"""Dynamic sampling in the whole loop on CPU (``--dry-run dynamic_sampling=on``): verl's trainer in two processes.

Stages of 3 plan steps (6 prompts, batch 2, 4 rollouts), at most one refill per step. The no-signal metric is
``detail`` (``algorithm.filter_groups.metric=detail``): 0 for every rollout of a TorF or Counting question, so
the perception stages' groups are dropped whatever the tiny model answers and what their steps draw is known:
2 prompts, a refill of 2, all dropped, so the step trains its first 2 groups unfiltered; the stage's next step
draws its last 2 and its refill finds the stage drawn (the boundary: the next stage's prompts stay untouched).
Process 1 trains step 1 and checkpoints inside torf after a refill (plan position 4); process 2 resumes there
and trains until the plan is drawn, in fewer steps than the plan's 12, saving its last step itself
(``trainer.save_freq=5``). Per-step identity with an uninterrupted run needs equal rollouts, which no backend
gives across processes; ``tests/test_dynamic_sampling.py`` shows it step by step with deterministic rewards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipe.cpu.run_summary import run_files, training_entries
from recipe.dynamic_sampling import read_draw_log

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PROCESS_TIMEOUT_S = 900  # a hang, not a speed limit: process 1 builds the tiny model, and the machine is shared
BATCH, ROLLOUTS, STAGE_PROMPTS = 2, 4, 6
STAGES = ["torf", "counting", "counting_stops", "planning"]
OPTIONS = (
    "dynamic_sampling=on",
    "algorithm.filter_groups.metric=detail",
    "rewardmap.dynamic_sampling.max_refills=1",
    "rewardmap.stage_steps=3",
)


def main_job(cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REWARDMAP_CACHE": str(cache), "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "recipe.main_rewardmap", "--dry-run", *overrides]
    done = subprocess.run(command, cwd=cache, env=env, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return done


def logged_metrics(run_dir: Path) -> dict[int, dict]:
    return {step: data for step, (_, data) in training_entries(run_files(run_dir)).items()}


def test_dynamic_sampling_keeps_stages_and_resumes_inside_a_stage(tmp_path: Path, shared_tiny_models: str) -> None:
    main_job(tmp_path, *OPTIONS, shared_tiny_models, "trainer.total_training_steps=1")
    second = main_job(tmp_path, *OPTIONS, shared_tiny_models, "trainer.save_freq=5")

    [run_dir] = list((tmp_path / "cpu_dry_run").iterdir())
    checkpoints = run_dir / "checkpoints"
    record = json.loads((checkpoints / "global_step_1" / "stage_plan.json").read_text())
    assert record["sampling"]["dynamic"] and record["sampling"]["position"] == 4  # inside torf, after a refill
    assert f"resuming the dry run from {checkpoints / 'global_step_1'}" in second.stdout

    log = read_draw_log(checkpoints)
    last = max(log)
    assert sorted(log) == list(range(1, last + 1))
    # every prompt of the plan drawn once, in plan order, across the resume; each step inside one stage
    assert [p for step in sorted(log) for p in log[step]["drawn"]] == list(range(len(STAGES) * STAGE_PROMPTS))
    for step, entry in log.items():
        assert {p // STAGE_PROMPTS for p in entry["drawn"]} == {entry["stage"]}, (step, entry["drawn"])
    # the perception stages, step by step: a refill inside the stage, then the stage's end
    expected = {1: [0, 1, 2, 3], 2: [4, 5], 3: [6, 7, 8, 9], 4: [10, 11], 5: [12, 13, 14, 15], 6: [16, 17]}
    for step, drawn in expected.items():
        entry = log[step]
        assert entry["drawn"] == drawn and entry["dropped"] == drawn, (step, entry)
        assert entry["unfiltered"] and entry["trained"] == drawn[:BATCH]
        assert entry["draws"] == ([BATCH, BATCH] if len(drawn) == 4 else [BATCH]) and entry["stage_ran_out"] == (
            len(drawn) == 2
        )
    # planning (stage 3) takes the rest: at most the plan's 3 steps; the run ends when the plan is drawn
    assert all(log[step]["stage"] == 3 for step in range(7, last + 1)) and 8 <= last <= 9  # 1 refill: 2+ steps
    assert f"step {last}: every prompt of the stage plan is drawn (24)" in second.stdout
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == str(last)
    final = json.loads((checkpoints / f"global_step_{last}" / "stage_plan.json").read_text())["sampling"]
    assert final["complete"] and [s["drawn"] for s in final["stages"]] == [STAGE_PROMPTS] * len(STAGES)
    assert (checkpoints / f"global_step_{last}" / "data.pt").is_file()  # saved by the trainer mode's on_train_end

    # the metrics of every step, from verl's file logger
    metrics = logged_metrics(run_dir)
    assert sorted(metrics) == sorted(log)
    for step, data in metrics.items():
        entry = log[step]
        assert data["rewardmap/stage"] == entry["stage"]
        assert data["rewardmap/sampling/prompts_drawn"] == len(entry["drawn"])
        assert data["rewardmap/sampling/groups_dropped"] == len(entry["dropped"])
        assert data["rewardmap/sampling/refills"] == len(entry["draws"]) - 1
        assert data[f"rewardmap/count/stage={STAGES[entry['stage']]}"] == len(entry["trained"]) * ROLLOUTS
    assert metrics[1]["rewardmap/sampling/progress/stage=torf"] == 4 / 6
    assert metrics[2]["rewardmap/sampling/progress/stage=torf"] == 1.0
    assert metrics[2]["rewardmap/sampling/progress/stage=counting"] == 0.0
    assert metrics[last]["rewardmap/sampling/plan_position"] == 24
