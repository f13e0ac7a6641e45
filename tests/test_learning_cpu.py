"""Learning happens: 16 steps of the toy ablation's detail arm (``python -m recipe.ablate``, verl's real trainer, the
toy's warm-started tiny model) raise its reward and its endpoint rate, and the sparse arm's GRPO groups are mostly
all-equal where the detail arm's are not.

Not part of the default run (marker ``learning``, deselected in pytest.ini): on a fresh 2-core machine the toy's
warm start alone takes about 18 minutes and each arm about 13 more, past what CI can pay. Run it with

    python -m pytest -m learning tests/test_learning_cpu.py

(``REWARDMAP_CACHE`` set: its data and warm-started model are reused, as the main job reuses them.)

A rise is the mean of steps 9-16 minus the mean of steps 1-8: the toy's 66 planning prompts at 8 a step make each window
one pass over (almost) the same prompts, so which prompts a step drew, which moves a step's mean reward between 0.5 and
2.9, cancels. Measured on four healthy detail runs (seed 0 three times, seed 1; the same seed does not repeat a curve on
CPU): reward +1.21, +0.96, +0.97, +0.60; endpoint rate +0.174, +0.143, +0.117, +0.188; all-equal groups 0.20, 0.20,
0.27, 0.21; the sparse arm (seed 0 three times, seed 1): 0.88, 0.88, 0.86 and 0.84 all-equal. Each deliberate break of
README's "The learning test" fails the detail test: the advantage's sign flipped, a rollout that keeps its first
weights, a reward manager scoring against another question's ground truth (in training only; in the scoring the
pre-flight also runs, the pre-flight stops the run first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipe.ablate_report import first_last, window_mean

pytestmark = [pytest.mark.slow, pytest.mark.learning]

ROOT = Path(__file__).resolve().parents[1]
STEPS, WINDOW = 16, 8  # two passes over the stage's prompts
MIN_REWARD_RISE = 0.3  # the detail arm's own reward, 0 to 11 (healthy: 0.60 to 1.21)
MIN_ENDPOINT_RISE = 0.07  # its endpoint rate, rescored from the rollout dumps (healthy: 0.117 to 0.188)
MIN_SPARSE_ALL_EQUAL = 0.7  # the sparse arm's mean all-equal fraction (0.84 to 0.88)
MAX_DETAIL_ALL_EQUAL = 0.4  # the detail arm's (0.20 to 0.27)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the toy's data and warm-started model live: ``REWARDMAP_CACHE`` when set, else one folder for both arms."""
    return Path(os.environ.get("REWARDMAP_CACHE") or tmp_path_factory.mktemp("cache"))


def arm_curves(arm: str, cache: Path, out: Path) -> dict[int, dict[str, float]]:
    """Train ``arm`` (seed 0) for STEPS toy steps without the held-out evaluation; its per-step curves."""
    env = {**os.environ, "REWARDMAP_CACHE": str(cache), "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "recipe.ablate", "--arms", arm, "--seeds", "0", "--steps", str(STEPS)]
    command += ["--no-eval", "--out", str(out), f"rewardmap.ablation.last_k={WINDOW}"]
    done = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, timeout=7200)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    raw = json.loads((out / "arms" / f"{arm}-seed0" / "curves.json").read_text())
    curves = {int(step): values for step, values in raw.items()}
    assert sorted(curves) == list(range(1, STEPS + 1))
    return curves


def rise(curves: dict[int, dict[str, float]], key: str) -> float:
    """The mean of the last WINDOW steps minus the mean of the first WINDOW (``recipe.ablate_report``'s windows)."""
    first, last = first_last(curves, key, WINDOW)
    return last - first


def mean(curves: dict[int, dict[str, float]], key: str) -> float:
    return window_mean(curves, key, sorted(curves))


def test_the_detail_arm_raises_its_reward_and_endpoint_rate(cache: Path, tmp_path: Path) -> None:
    curves = arm_curves("detail_reward", cache, tmp_path / "results")
    rises = {key: round(rise(curves, key), 3) for key in ("reward", "endpoints", "format", "detail")}
    print(f"detail_reward seed 0, steps {WINDOW + 1}-{STEPS} minus steps 1-{WINDOW}: {rises}")
    assert rises["reward"] > MIN_REWARD_RISE, rises
    assert rises["endpoints"] > MIN_ENDPOINT_RISE, rises
    assert mean(curves, "all_equal") <= MAX_DETAIL_ALL_EQUAL, mean(curves, "all_equal")


def test_the_sparse_arm_leaves_most_groups_without_a_signal(cache: Path, tmp_path: Path) -> None:
    curves = arm_curves("rl_baseline", cache, tmp_path / "results")
    print(f"rl_baseline seed 0, mean all-equal groups over {STEPS} steps: {mean(curves, 'all_equal'):.3f}")
    assert mean(curves, "all_equal") >= MIN_SPARSE_ALL_EQUAL, mean(curves, "all_equal")
