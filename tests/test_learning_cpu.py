"""Learning happens: the toy ablation's detail-reward arm gets better at what the detail reward pays for, the sparse
arm gets no signal.

``python -m recipe.ablate`` trains both arms for a few tens of planning steps from the same warm-started tiny model
(verl's real trainer, the recipe's reward manager, estimator and rollout, weight sync after every update). The detail
arm's reward and its endpoint rate (planning answers whose first departure and last arrival are the question's, the
gate of every detail point) must rise from its first to its last steps by margins well outside the spread between
seeds measured on this toy (README, "Toy ablation"); the sparse arm's GRPO groups must be almost all equal (no
learning signal). A flipped advantage sign, a rollout server that keeps stale weights or a reward manager that
scores the wrong thing makes the detail arm flat or falling, and the test fails.

The toy data and the warm-started tiny model are built in a fresh cache; ``REWARDMAP_LEARNING_CACHE=DIR`` reuses
DIR's (the warm start is most of the time on a fresh cache).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipe.ablate_report import first_last

pytestmark = [
    pytest.mark.slow,
    # Not yet run on this machine: the toy's warm start has not passed its step-0 check here and the margins below
    # are placeholders, not measured seed spreads (issue 14). Remove once measured.
    pytest.mark.skip(reason="toy warm start and margins not yet measured (issue 14)"),
]

ROOT = Path(__file__).resolve().parents[1]
DETAIL_STEPS = 20  # planning steps of the detail arm
SPARSE_STEPS = 4  # the sparse arm only has to show that its groups carry no signal
WINDOW = 5  # first / last steps compared
REWARD_RISE = 1.0  # detail arm: reward points (of 16.5), last window minus first
ENDPOINT_RISE = 0.15  # detail arm: endpoint rate, last window minus first
SPARSE_ALL_EQUAL = 0.9  # sparse arm: mean fraction of all-equal groups
TIMEOUT_S = 1800


def curves(out: Path, arm: str) -> dict[int, dict]:
    raw = json.loads((out / "arms" / f"{arm}-seed0" / "curves.json").read_text())
    return {int(step): values for step, values in raw.items()}


def ablate(out: Path, env: dict[str, str], arm: str, steps: int) -> None:
    command = [sys.executable, "-m", "recipe.ablate", "--arms", arm, "--seeds", "0", "--steps", str(steps)]
    command += ["--no-eval", "--out", str(out)]
    done = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{arm}: exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"


def test_the_detail_reward_learns_and_the_sparse_reward_has_no_signal(tmp_path: Path) -> None:
    env = {**os.environ, "REWARDMAP_CACHE": os.environ.get("REWARDMAP_LEARNING_CACHE", str(tmp_path / "cache"))}
    env.update(PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "ablation"
    ablate(out, env, "detail_reward", DETAIL_STEPS)
    ablate(out, env, "rl_baseline", SPARSE_STEPS)

    detail = curves(out, "detail_reward")
    assert len(detail) == DETAIL_STEPS
    reward = first_last(detail, "reward", WINDOW)
    endpoints = first_last(detail, "endpoints", WINDOW)
    sparse = curves(out, "rl_baseline")
    all_equal = [values["all_equal"] for values in sparse.values()]
    summary = f"detail arm: reward {reward}, endpoint rate {endpoints}; sparse arm: all-equal groups {all_equal}"
    print(summary)
    assert reward[1] - reward[0] > REWARD_RISE, summary
    assert endpoints[1] - endpoints[0] > ENDPOINT_RISE, summary
    assert sum(all_equal) / len(all_equal) >= SPARSE_ALL_EQUAL, summary
