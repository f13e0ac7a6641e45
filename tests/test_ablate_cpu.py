"""``python -m recipe.ablate`` end to end on CPU: verl's real trainer runs two arms (one adds overrides to its
experiment) from the toy's warm-started tiny model, and the results folder gets each arm's curves, record and
held-out evaluation, and the table, plot and report.

The toy's own settings (configs/ablation/toy.yaml) take longer than a test should; this run shrinks the warm start
and the steps through the command's Hydra overrides and lets the step-0 check warn instead of stopping, because
it checks the command's plumbing, not learning (a shrunken warm start has no reason to pass it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "rewardmap.synthetic_cities=3",
    "rewardmap.synthetic_questions_per_city=11",
    "rewardmap.cpu_run.warm_start.cities=3",
    "rewardmap.cpu_run.warm_start.questions_per_city=11",
    "rewardmap.cpu_run.warm_start.copy_steps=2",
    "rewardmap.cpu_run.warm_start.steps=4",
    "rewardmap.cpu_run.precheck.on_failure=warn",
    "rewardmap.cpu_run.precheck.prompts=1",
    "data.train_batch_size=2",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.rollout.n=2",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
]


def test_the_ablation_command_writes_a_complete_report(tmp_path: Path) -> None:
    env = {**os.environ, "REWARDMAP_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    env["CUDA_VISIBLE_DEVICES"] = ""
    out = tmp_path / "results"
    arms = ("detail_reward", "difficulty_weights_grpo")  # the second: an arm whose overrides change verl's estimator
    command = [sys.executable, "-m", "recipe.ablate", "--arms", ",".join(arms), "--seeds", "0", "--steps", "2"]
    done = subprocess.run(
        [*command, "--out", str(out), *SMALL], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    assert "step-0 reachability" in done.stdout + done.stderr

    for name in arms:
        arm = out / "arms" / f"{name}-seed0"
        record = json.loads((arm / "record.json").read_text())
        assert record["stages"] == [["planning", 2]] and record["train_wall_s"] > 0
        curves = json.loads((arm / "curves.json").read_text())
        assert sorted(int(step) for step in curves) == [1, 2]
        assert all(0.0 <= values["endpoints"] <= 1.0 for values in curves.values())
        held_out = record["held_out"]
        assert held_out["released/reasonmap_short"] is not None and "fixed/reasonmap_short" in held_out
        checkpoints = sorted(
            p.name for p in (arm / "run" / "checkpoints").iterdir() if p.name.startswith("global_step_")
        )
        assert checkpoints == ["global_step_2"]  # one checkpoint per arm: the last
    assert (out / "warm_start" / "held_out.json").is_file()
    grpo_command = (out / "arms" / "difficulty_weights_grpo-seed0" / "command.txt").read_text()
    assert "+experiment=difficulty_weights " in grpo_command and "algorithm.adv_estimator=grpo" in grpo_command
    report = (out / "report.md").read_text()
    assert "Runs finished: 2 of 2" in report and all(f"| {name} |" in report for name in arms)
    assert "| warm start (step 0, every arm) |" in report and "released/reasonmap_short" in report
    assert "detail_reward seed 0 step 2/2" in done.stderr  # the progress bar follows verl's step lines
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
