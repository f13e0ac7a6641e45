"""The paper's ablation rows as Hydra experiments (configs/experiment/*.yaml, selected with +experiment=NAME).

Each row must compose over the recipe's config and pass verl's validation, differ from its neighbours in
exactly what the row names (data stages, reward mode, difficulty weights), get its own run name (so rows never
share a checkpoint folder), and be a composition of group choices plus a few keys, not a copy of the config.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from recipe.reward_manager import reward_kwargs_from_config
from reward_fns.weights import DEFAULT_TRANSFER_WEIGHT, difficulty_weight
from tests.fixtures.cluster_stubs import calls_of, read_calls, stub_env
from tests.fixtures.configs import CONFIG_DIR, compose_config, run_name

EXPERIMENT_DIR = Path(CONFIG_DIR) / "experiment"
PERCEPTION_THEN_PLANNING = ["torf", "counting", "counting_stops", "planning"]
# Row -> (stages, reward mode, advantage estimator, W of a hard-map one-transfer planning question).
ROWS = {
    "rl_baseline": (["planning"], "sparse", "grpo", 2.0),
    "detail_reward": (["planning"], "fixed", "grpo_batch_scale", 1.0),
    "difficulty_weights": (["planning"], "fixed", "grpo_batch_scale", 2.0),
    "curriculum": (PERCEPTION_THEN_PLANNING, "sparse", "grpo", 2.0),
    "coarse_curriculum": (["perception", "planning"], "fixed", "grpo_batch_scale", 2.0),
    "rewardmap": (PERCEPTION_THEN_PLANNING, "fixed", "grpo_batch_scale", 2.0),
    "rewardmap_released": (PERCEPTION_THEN_PLANNING, "released", "grpo", 2.0),
}


def experiments() -> list[str]:
    return sorted(p.stem for p in EXPERIMENT_DIR.glob("*.yaml"))


def test_every_experiment_file_is_a_known_row() -> None:
    assert experiments() == sorted(ROWS)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_composes_validates_and_differs_only_as_named(name: str) -> None:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from recipe.advantage import register_estimator

    register_estimator()  # registers grpo_batch_scale, as the task runner does

    stages, mode, estimator, hard_transfer_weight = ROWS[name]
    config = compose_config("preset=qwen2_5_vl_7b", f"+experiment={name}")
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    assert [s.name for s in config.data.stages] == stages
    kwargs = reward_kwargs_from_config(config)
    assert kwargs["mode"] == mode and config.algorithm.adv_estimator == estimator
    weight = difficulty_weight(
        "planning",
        "hard",
        1,
        map_weights=kwargs.get("map_weights"),
        transfer_weight=kwargs.get("transfer_weight", DEFAULT_TRANSFER_WEIGHT),
    )
    assert weight == hard_transfer_weight
    # Everything else is the recipe's: same model, batch, optimiser as the plain composition.
    plain = compose_config("preset=qwen2_5_vl_7b")
    for key in ("actor_rollout_ref.actor.optim", "data.train_batch_size", "actor_rollout_ref.rollout.n"):
        assert OmegaConf.select(config, key) == OmegaConf.select(plain, key)


def test_every_row_gets_its_own_run_name() -> None:
    names = {row: run_name("preset=qwen2_5_vl_7b", f"+experiment={row}") for row in ROWS}
    assert names == {row: f"qwen2_5_vl_7b-{row}" for row in ROWS}
    assert run_name("preset=qwen2_5_vl_3b", "+experiment=rl_baseline") == "qwen2_5_vl_3b-rl_baseline"
    # a row run with another choice than its own is another run (recipe/run_name.py; tests/test_run_name.py)
    assert run_name("preset=qwen2_5_vl_7b", "+experiment=rewardmap", "curriculum=coarse") == (
        "qwen2_5_vl_7b-rewardmap-coarse_curriculum"
    )


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_is_a_composition_not_a_copy(name: str) -> None:
    text = (EXPERIMENT_DIR / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    body = yaml.safe_load(text)
    assert set(body) <= {"defaults", "reward"}  # the run name is the one rule's (recipe/run_name.py)
    assert all(next(iter(d)).startswith(("override /curriculum", "override /reward_mode")) for d in body["defaults"])
    assert set(body.get("reward", {"reward_kwargs": {}})) == {"reward_kwargs"}
    assert sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")) <= 12


def readme_ablation_commands() -> dict[str, str]:
    """experiment -> the command of its row in the README's "Ablations" table."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Ablations\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.search(r"\| `([^`]*\+experiment=(\w+)[^`]*)` \|$", line)
        if match:
            rows[match.group(2)] = match.group(1)
    return rows


def test_readme_table_gives_every_row_a_command_that_submits_it(tmp_path: Path) -> None:
    rows = readme_ablation_commands()
    assert sorted(rows) == sorted(ROWS), "one README row per experiment, no more"
    repo = Path(__file__).resolve().parents[1]
    for name, command in rows.items():
        env = stub_env(tmp_path / name, STUB_EXPERIMENT_NAME=f"qwen2_5_vl_7b-{name}")
        result = subprocess.run(shlex.split(command), cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        (submit,) = calls_of(read_calls(tmp_path / name / "calls.jsonl"), "ray", "job", "submit")
        entrypoint = submit["argv"][submit["argv"].index("--") + 1 :]
        assert entrypoint[-1] == f"+experiment={name}" and "preset=qwen2_5_vl_7b" in entrypoint
        assert f"runs/qwen2_5_vl_7b-{name}/checkpoints" in " ".join(entrypoint)
