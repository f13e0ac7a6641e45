"""One rule names every run (recipe/run_name.py), the name changes with every choice that changes training, and a
checkpoint written under other choices is refused before verl loads it."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from recipe.run_name import (
    RECORD_NAME,
    RunChoicesMismatchError,
    check_resume,
    check_run_record,
    experiment_row_choices,
    run_name,
    write_run_record,
)
from tests.fixtures.configs import CONFIG_DIR, compose_config
from tests.test_ablation_experiments import ROWS
from tests.test_configs import CURRICULA, PRESETS, REWARD_MODES


def training_identity(config) -> str:
    """What a composed config trains: model, stages and their files, reward, estimator, adapter, learning rate."""
    arr = config.actor_rollout_ref
    return json.dumps(
        {
            "model": arr.model.path,
            "stages": OmegaConf.to_container(config.data.stages, resolve=True),
            "reward": OmegaConf.to_container(config.reward.reward_kwargs, resolve=True),
            "estimator": config.algorithm.adv_estimator,
            "lora": [arr.model.lora_rank, arr.model.lora_alpha, str(arr.model.exclude_modules)],
            "lr": arr.actor.optim.lr,
        },
        sort_keys=True,
    )


def names_and_identities(combinations) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for overrides in combinations:
        config = compose_config(*overrides)
        names.setdefault(str(config.trainer.experiment_name), set()).add(training_identity(config))
    return names


def test_the_rule_names_every_group_combination_apart() -> None:
    """The rule itself over every preset x curriculum x reward mode x adapter x dynamic sampling (x dry run)."""
    combos = list(itertools.product((None, "cpu"), PRESETS, CURRICULA, REWARD_MODES, (0, 64), ("off", "on")))
    names = {
        run_name({"dry_run": d, "preset": p, "curriculum": c, "reward_mode": m, "dynamic_sampling": s}, lora_rank=rank)
        for d, p, c, m, rank, s in combos
        if not (d and p != PRESETS[0])  # the dry run trains its tiny model whatever the preset
    }
    assert len(names) == len(combos) * 3 // 4


def test_composed_groups_train_under_their_own_names() -> None:
    """Composed (the config's one experiment_name line calls the rule): one combination per differing choice;
    tests/test_configs.py checks every preset x curriculum x reward mode against today's names."""
    combos = [
        ("preset=qwen2_5_vl_3b",),
        ("preset=qwen2_5_vl_7b",),
        ("preset=qwen2_5_vl_7b", "curriculum=coarse"),
        ("preset=qwen2_5_vl_7b", "reward_mode=released"),
        ("preset=qwen2_5_vl_7b", "adapter=lora"),
        ("preset=qwen2_5_vl_3b", "adapter=lora"),
    ]
    names = names_and_identities(combos)
    assert len(names) == len(combos), "two combinations share a checkpoint folder"
    assert "qwen2_5_vl_7b-fine_curriculum-released_reward" in names  # today's names for today's runs
    assert "qwen2_5_vl_3b-fine_curriculum-fixed_reward-lora" in names


def test_every_row_and_adapter_trains_under_its_own_name() -> None:
    combos = [(f"preset={p}", f"+experiment={row}") for p, row in itertools.product(PRESETS, ROWS)]
    combos += [("preset=qwen2_5_vl_7b", "+experiment=rewardmap", "adapter=lora")]
    names = names_and_identities(combos)
    assert len(names) == len(combos)
    assert all(len(identities) == 1 for identities in names.values())
    assert {f"qwen2_5_vl_7b-{row}" for row in ROWS} <= set(names)  # the README's <preset>-<experiment> rows
    assert "qwen2_5_vl_7b-rewardmap-lora" in names


def test_a_row_with_another_choice_never_trains_under_the_rows_name() -> None:
    names = names_and_identities(
        [
            ("preset=qwen2_5_vl_7b", "+experiment=rewardmap"),
            ("preset=qwen2_5_vl_7b", "+experiment=rewardmap", "curriculum=fine"),  # the row's own choice
            ("preset=qwen2_5_vl_7b", "+experiment=rewardmap", "curriculum=coarse"),
            ("preset=qwen2_5_vl_7b", "+experiment=rewardmap", "reward_mode=released"),
            ("preset=qwen2_5_vl_7b", "+experiment=rewardmap", "actor_rollout_ref.model.lora_rank=16"),
        ]
    )
    assert sorted(names) == [
        "qwen2_5_vl_7b-rewardmap",
        "qwen2_5_vl_7b-rewardmap-coarse_curriculum",
        "qwen2_5_vl_7b-rewardmap-lora",
        "qwen2_5_vl_7b-rewardmap-released_reward",
    ]
    assert len(names["qwen2_5_vl_7b-rewardmap"]) == 1


def test_the_dry_run_keeps_its_names() -> None:
    assert compose_config("dry_run=cpu").trainer.experiment_name == "cpu_dry_run-fine_curriculum-fixed_reward"
    lora = compose_config("dry_run=cpu", "adapter=lora", "curriculum=none")
    assert lora.trainer.experiment_name == "cpu_dry_run-none_curriculum-fixed_reward-lora"


def test_the_rule_has_one_home() -> None:
    """No config names a run but the root config's one line (the 9 copies are gone)."""
    lines = [
        f"{path.relative_to(CONFIG_DIR)}: {line.strip()}"
        for path in Path(CONFIG_DIR).rglob("*.yaml")
        for line in path.read_text().splitlines()
        if line.strip().startswith("experiment_name:")
    ]
    assert lines == [
        "rewardmap.yaml: experiment_name: ${rewardmap_run_name:${rewardmap.run_choices},"
        "${actor_rollout_ref.model.lora_rank}}"
    ]
    assert experiment_row_choices("coarse_curriculum") == {"curriculum": "coarse", "reward_mode": "fixed"}


# -- the record beside each checkpoint ----------------------------------------------------------------------------
def run_config(root: Path, *overrides: str):
    config = compose_config(*overrides)
    with open_dict(config):
        config.trainer.default_local_dir = str(root)
    return config


def fake_checkpoint(root: Path, step: int, config) -> Path:
    """A checkpoint folder as verl leaves it (tracker file, global_step_N) with this run's record."""
    step_dir = root / f"global_step_{step}"
    write_run_record(step_dir, config)
    (root / "latest_checkpointed_iteration.txt").write_text(str(step))
    return step_dir


def test_a_checkpoint_of_the_same_choices_resumes(tmp_path: Path) -> None:
    config = run_config(tmp_path, "adapter=lora")
    step_dir = fake_checkpoint(tmp_path, 3, config)
    assert json.loads((step_dir / RECORD_NAME).read_text())["choices"]["adapter"] == "lora"
    assert check_resume(run_config(tmp_path, "adapter=lora")) == str(step_dir)


def test_a_checkpoint_of_other_choices_is_refused_naming_them_and_the_ways_out(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 3, run_config(tmp_path, "+experiment=rewardmap"))
    other = run_config(tmp_path, "+experiment=rewardmap", "curriculum=coarse", "adapter=lora")
    with pytest.raises(RunChoicesMismatchError) as refused:
        check_resume(other)
    message = str(refused.value)
    assert "curriculum fine -> coarse" in message and "adapter full -> lora" in message
    assert "actor_rollout_ref.model.lora_rank 0 -> 64" in message
    assert "trainer.experiment_name=NAME" in message and f"delete {tmp_path}" in message
    assert "global_step_3" in message


def test_lora_settings_changed_without_the_group_are_refused(tmp_path: Path) -> None:
    step_dir = fake_checkpoint(tmp_path, 1, run_config(tmp_path, "adapter=lora"))
    with pytest.raises(RunChoicesMismatchError, match="lora_rank 64 -> 8"):
        check_run_record(step_dir, run_config(tmp_path, "adapter=lora", "actor_rollout_ref.model.lora_rank=8"))


def test_a_group_added_later_reads_as_its_default(tmp_path: Path) -> None:
    """A checkpoint written before a group existed (here: without adapter) resumes under the group's default."""
    step_dir = fake_checkpoint(tmp_path, 2, run_config(tmp_path))
    record = json.loads((step_dir / RECORD_NAME).read_text())
    del record["choices"]["adapter"]
    (step_dir / RECORD_NAME).write_text(json.dumps(record))
    assert check_run_record(step_dir, run_config(tmp_path)) is True
    with pytest.raises(RunChoicesMismatchError, match="adapter full -> lora"):
        check_run_record(step_dir, run_config(tmp_path, "adapter=lora"))


def test_without_a_record_or_a_checkpoint_nothing_is_refused(tmp_path: Path) -> None:
    config = run_config(tmp_path)
    assert check_resume(config) is None  # nothing saved yet
    (tmp_path / "global_step_5").mkdir()
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("5")
    assert check_resume(config) == str(tmp_path / "global_step_5")  # written before records: not comparable
    with open_dict(config):
        config.trainer.resume_mode = "disable"
    assert check_resume(run_config(tmp_path, "adapter=lora", "trainer.resume_mode=disable")) is None


def test_the_trainer_refuses_before_verl_loads_and_records_on_save(tmp_path: Path, monkeypatch) -> None:
    from verl.trainer.ppo.v1 import PPOTrainerSync

    from recipe.trainer import RewardMapTrainer

    calls = []
    monkeypatch.setattr(PPOTrainerSync, "_load_checkpoint", lambda self: calls.append("load"))
    monkeypatch.setattr(PPOTrainerSync, "_save_checkpoint", lambda self: calls.append("save"))
    trainer = RewardMapTrainer.__new__(RewardMapTrainer)
    trainer.config, trainer.global_steps = run_config(tmp_path, "curriculum=none"), 4
    trainer._save_checkpoint()
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("4")
    assert calls == ["save"] and (tmp_path / "global_step_4" / RECORD_NAME).is_file()

    trainer.config = run_config(tmp_path, "curriculum=fine")
    with pytest.raises(RunChoicesMismatchError, match="curriculum none -> fine"):
        trainer._load_checkpoint()
    assert calls == ["save"], "verl's loader ran before the refusal"
