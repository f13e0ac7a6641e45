"""Every preset x curriculum x reward mode composes over verl's ppo_trainer and passes verl's own validation."""

from __future__ import annotations

import functools
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.fixtures.configs import compose_config

PRESETS = ("qwen2_5_vl_3b", "qwen2_5_vl_7b")
CURRICULA = ("fine", "coarse", "none", "planning_only")
REWARD_MODES = ("fixed", "released", "sparse")


def verl_validate(config) -> None:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from recipe.advantage import register_estimator

    register_estimator()  # the estimator must be registered, as in the task runner

    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


@pytest.mark.parametrize(("preset", "curriculum", "mode"), list(itertools.product(PRESETS, CURRICULA, REWARD_MODES)))
def test_every_combination_composes_and_validates(preset: str, curriculum: str, mode: str) -> None:
    config = compose_config(f"preset={preset}", f"curriculum={curriculum}", f"reward_mode={mode}")
    verl_validate(config)
    assert config.trainer.experiment_name == f"{preset}-{curriculum}_curriculum-{mode}_reward"  # one per combination
    stages = OmegaConf.to_container(config.data.stages, resolve=True)
    assert stages, "every curriculum has at least one stage"
    assert all(f.startswith("/data/rewardmap/") for s in stages for f in s["files"])
    assert config.reward.reward_kwargs.mode == mode
    assert config.reward.reward_manager.source == "importlib"
    assert config.data.custom_cls.name == "StagedRLHFDataset"
    assert config.data.shuffle is False


def test_presets_and_curricula_say_what_the_paper_says() -> None:
    seven = compose_config("preset=qwen2_5_vl_7b", "curriculum=fine", "reward_mode=released")
    assert seven.actor_rollout_ref.model.path == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert seven.actor_rollout_ref.rollout.tensor_model_parallel_size == 4
    assert seven.algorithm.adv_estimator == "grpo"
    assert [s.name for s in seven.data.stages] == ["torf", "counting", "counting_stops", "planning"]
    actor = seven.actor_rollout_ref.actor
    assert (actor.optim.lr, actor.kl_loss_coef, actor.kl_loss_type) == (1e-6, 1e-2, "low_var_kl")
    assert seven.actor_rollout_ref.rollout.n == 4 and seven.data.train_batch_size == 16
    default = compose_config()
    assert default.actor_rollout_ref.model.path == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert default.algorithm.adv_estimator != "grpo", "fixed mode keeps difficulty weights with its own estimator"
    coarse = compose_config("curriculum=coarse")
    assert [s.name for s in coarse.data.stages] == ["perception", "planning"]
    assert len(coarse.data.stages[0].files) == 3


def test_inconsistent_batch_sizes_fail_with_verls_error() -> None:
    config = compose_config("data.train_batch_size=8")  # smaller than the PPO mini-batch of 16
    with pytest.raises((AssertionError, ValueError), match="mini"):
        verl_validate(config)


def test_unknown_key_is_refused() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="not_a_key"):
        compose_config("actor_rollout_ref.actor.not_a_key=1")


def test_cli_prints_the_composed_job() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "recipe.main_rewardmap",
            "--cfg",
            "job",
            "curriculum=coarse",
            "reward_mode=sparse",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    job = OmegaConf.create(out.stdout)
    assert job.reward.reward_kwargs.mode == "sparse"
    assert [s["name"] for s in job.data.stages] == ["perception", "planning"]
    assert job.trainer.experiment_name == "qwen2_5_vl_3b-coarse_curriculum-sparse_reward"
    embedded = job.rewardmap.embedded_data_dir
    assert job.rewardmap.data_dir == embedded and "/synthetic-c16-q60-" in embedded
    assert list(job.data.train_files) == [
        f"{embedded}/{name}.parquet" for name in ("torf", "counting", "counting_stops", "planning")
    ]
    assert job.data.val_files == f"{embedded}/val.parquet"


def _stated_leaves(path: Path) -> list[tuple[str, str]]:
    """(dotted key, source line) of every leaf value the recipe's yaml states (block mappings only)."""
    stack: list[tuple[int, str]] = []
    leaves = []
    for line in path.read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][\w]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3).split("#")[0].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        if rest:
            leaves.append((dotted, line))
        else:
            stack.append((indent, key))
    return leaves


def test_the_config_states_only_what_differs_from_verl_or_what_the_paper_pins() -> None:
    """A key equal to verl's default must be labelled as pinned to the paper; ignored keys are gone."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("verl.trainer.config", version_base=None):
        verl_defaults = compose("ppo_trainer")
    recipe_yaml = Path(__file__).resolve().parents[1] / "configs" / "rewardmap.yaml"
    stated = yaml.safe_load(recipe_yaml.read_text())
    leaves = [
        (key, line) for key, line in _stated_leaves(recipe_yaml) if key.split(".")[0] not in ("hydra", "rewardmap")
    ]
    assert len(leaves) > 30, leaves  # the walker found the config's leaves
    unlabelled_defaults = []
    for key, line in leaves:
        ours = functools.reduce(lambda node, part: node[part], key.split("."), stated)
        theirs = OmegaConf.select(verl_defaults, key, default="<absent>", throw_on_resolution_failure=False)
        if OmegaConf.is_config(theirs):
            theirs = OmegaConf.to_container(theirs)
        if ours == theirs and "# [paper]" not in line:
            unlabelled_defaults.append(key)
    assert not unlabelled_defaults, f"equal to verl's default and not pinned to the paper: {unlabelled_defaults}"
    assert "filter_overlong_prompts" not in recipe_yaml.read_text()  # the staged dataset ignores it


HEAVY = "{'verl', 'ray', 'torch'}"
ENTRY = f"import atexit, sys; atexit.register(lambda: print('imported:', sorted({HEAVY} & set(sys.modules))))"


def _entry(*argv: str) -> subprocess.CompletedProcess:
    """``python -m recipe.main_rewardmap ARGV`` in a fresh process, reporting at exit the heavy packages imported."""
    run = "import runpy; runpy.run_module('recipe.main_rewardmap', run_name='__main__', alter_sys=True)"
    code = f"{ENTRY}; sys.argv = ['main_rewardmap', *{list(argv)!r}]; {run}"
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)


def test_help_lists_the_recipe_flags_and_groups_without_importing_verl() -> None:
    out = _entry("--help")
    assert out.returncode == 0, out.stderr[-2000:]
    for text in ("--preflight", "--tiny-model", "--dry-run", "reward_mode: fixed, released, sparse", "--cfg job"):
        assert text in out.stdout
    assert "imported: []" in out.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data.train_batch_sise=4"], "Could not override 'data.train_batch_sise'"),
        (["preset=qwen9_vl_1t"], "Could not find 'preset/qwen9_vl_1t'"),
    ],
)
def test_a_bad_command_line_fails_at_once_without_importing_verl(argv: list[str], message: str) -> None:
    """Composition errors come from Hydra before verl, Ray or torch are imported (start-up: benchmarks/)."""
    out = _entry(*argv)
    assert out.returncode != 0 and message in out.stderr
    assert "imported: []" in out.stdout


@pytest.mark.parametrize(("preset", "gpus"), [("qwen2_5_vl_3b", 1), ("qwen2_5_vl_7b", 2)])
def test_lora_composes_and_validates_on_its_fewer_gpus(preset: str, gpus: int) -> None:
    """adapter=lora: verl's own LoRA keys, the vision tower excluded, the preset's GPUs (configs/adapter/lora.yaml)."""
    config = compose_config(f"preset={preset}", "adapter=lora")
    verl_validate(config)  # includes verl's check that vLLM takes the rank
    model = config.actor_rollout_ref.model
    assert (model.lora_rank, model.lora_alpha, model.target_modules) == (64, 32, "all-linear")
    assert model.exclude_modules == ".*visual.*"
    assert config.trainer.n_gpus_per_node == gpus and config.actor_rollout_ref.rollout.tensor_model_parallel_size == 1
    assert not model.lora.get("merge"), "vLLM loads the adapter (verl's default), not merged weights"
