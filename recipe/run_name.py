"""What a run trains, by its Hydra choices: the run's name and the record that refuses to resume another run.

A run's checkpoint folder is named by ``trainer.experiment_name``, and resuming (``trainer.resume_mode=auto``)
continues whatever that folder holds. So the name must change with every choice that changes what is trained, and
a checkpoint written under other choices must not be resumed. Both live here:

- ``run_choices`` picks the training choices out of Hydra's ``runtime.choices`` (``RUN_GROUPS``: preset, experiment,
  curriculum, reward mode, adapter, dynamic sampling, dry run; a group the config does not have is left out);
  ``configs/rewardmap.yaml`` stores them as ``rewardmap.run_choices`` (resolved in the driver, so Ray workers read
  plain values).
- ``run_name`` turns them into ``trainer.experiment_name`` (the one rule; the yaml calls it through the
  ``rewardmap_run_name`` resolver). Today's names are kept: ``<preset>-<curriculum>_curriculum-<mode>_reward``,
  ``<preset>-<experiment>`` for an ablation row run as the row says, ``cpu_dry_run-...`` for the dry run; a choice
  that departs from its default (or from the experiment row's own choice) adds a part.
- ``write_run_record`` writes ``global_step_N/run_choices.json`` (the choices and the LoRA settings, which can be
  changed without the ``adapter`` group) beside the stage-plan record; ``check_resume`` refuses, before verl loads
  anything, a checkpoint whose record differs, naming the differences and the two ways out.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

# The Hydra groups whose choice changes what a run trains, in name order.
RUN_GROUPS = ("dry_run", "preset", "experiment", "curriculum", "reward_mode", "adapter", "dynamic_sampling")
# Each group's choice that adds nothing to the name; a record without the group reads as this choice (so a
# checkpoint written before a group existed resumes under the group's default).
NEUTRAL_CHOICES: dict[str, str | None] = {
    "dry_run": None,
    "experiment": None,
    "adapter": "full",
    "dynamic_sampling": "off",
}
# What an experiment row chooses itself (configs/experiment/<row>.yaml, "override /<group>: <option>").
ROW_GROUPS = ("curriculum", "reward_mode")
NAME_PARTS = {"curriculum": "{}_curriculum", "reward_mode": "{}_reward", "dynamic_sampling": "dynsample"}
LORA_KEYS = ("lora_rank", "lora_alpha", "target_modules", "exclude_modules")
RECORD_NAME = "run_choices.json"
TRACKER_NAME = "latest_checkpointed_iteration.txt"  # verl's checkpoint tracker in trainer.default_local_dir
EXPERIMENT_DIR = Path(__file__).resolve().parents[1] / "configs" / "experiment"


class RunChoicesMismatchError(RuntimeError):
    """Resuming a checkpoint written under other training choices; the message names them and the ways out."""


def run_choices(choices: Mapping[str, Any]) -> dict[str, str | None]:
    """The training choices (``RUN_GROUPS``) out of Hydra's ``runtime.choices``; groups not composed are left out.

    >>> run_choices({"preset": "qwen2_5_vl_3b", "curriculum": "fine", "hydra/env": "default", "dry_run": None})
    {'dry_run': None, 'preset': 'qwen2_5_vl_3b', 'curriculum': 'fine'}
    """
    return {group: _option(choices[group]) for group in RUN_GROUPS if group in choices}


def run_name(choices: Mapping[str, Any], *, lora_rank: int = 0, row: Mapping[str, str] | None = None) -> str:
    """``trainer.experiment_name`` for these choices (``run_choices``) and the effective LoRA rank.

    ``row`` is the experiment row's own choices (``experiment_row_choices``); a row group whose choice departs from
    the row's is named, so ``+experiment=rewardmap curriculum=coarse`` never trains under the row's name.

    >>> run_name({"preset": "qwen2_5_vl_7b", "curriculum": "fine", "reward_mode": "released"})
    'qwen2_5_vl_7b-fine_curriculum-released_reward'
    >>> row = {"curriculum": "fine", "reward_mode": "fixed"}
    >>> run_name({"preset": "qwen2_5_vl_7b", "experiment": "rewardmap", "curriculum": "fine", "reward_mode": "fixed"},
    ...          row=row)
    'qwen2_5_vl_7b-rewardmap'
    >>> run_name({"preset": "qwen2_5_vl_7b", "experiment": "rewardmap", "curriculum": "coarse", "reward_mode": "fixed",
    ...           "adapter": "lora", "dynamic_sampling": "on"}, lora_rank=64, row=row)
    'qwen2_5_vl_7b-rewardmap-coarse_curriculum-lora-dynsample'
    >>> run_name({"dry_run": "cpu", "preset": "qwen2_5_vl_3b", "curriculum": "none", "reward_mode": "sparse"})
    'cpu_dry_run-none_curriculum-sparse_reward'
    """
    dry_run, experiment = choices.get("dry_run"), choices.get("experiment")
    parts = [f"{dry_run}_dry_run" if dry_run else str(choices.get("preset"))]
    if experiment:
        parts.append(str(experiment))
    for group in ROW_GROUPS:
        choice = choices.get(group)
        if choice is not None and not (experiment and row is not None and row.get(group) == choice):
            parts.append(NAME_PARTS[group].format(choice))
    if int(lora_rank or 0) > 0:
        parts.append("lora")
    if choices.get("dynamic_sampling") not in (None, NEUTRAL_CHOICES["dynamic_sampling"]):
        parts.append(NAME_PARTS["dynamic_sampling"])
    return "-".join(parts)


@functools.cache
def experiment_row_choices(experiment: str) -> dict[str, str]:
    """The group choices an experiment row makes (``override /<group>: <option>`` in configs/experiment/<row>.yaml);
    {} for a row this recipe does not ship (every row group is then named)."""
    import yaml

    path = EXPERIMENT_DIR / f"{experiment}.yaml"
    if not path.is_file():
        return {}
    row: dict[str, str] = {}
    for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults") or []:
        if isinstance(entry, dict):
            for key, option in entry.items():
                group = str(key).removeprefix("override").strip().lstrip("/")
                if group in ROW_GROUPS:
                    row[group] = str(option)
    return row


def resolve_run_name(choices: Any, lora_rank: Any) -> str:
    """The ``rewardmap_run_name`` resolver: ``run_name`` with the experiment row's choices read from its file."""
    choices = _plain(choices)
    experiment = choices.get("experiment")
    return run_name(
        choices, lora_rank=int(lora_rank or 0), row=experiment_row_choices(experiment) if experiment else None
    )


# -- the record beside each checkpoint ----------------------------------------------------------------------------
def run_record(config: Any) -> dict[str, Any] | None:
    """What this run trains, as recorded beside its checkpoints: the choices and the LoRA settings; None when the
    config has no ``rewardmap.run_choices`` (a config not composed by this recipe)."""
    choices = OmegaConf.select(config, "rewardmap.run_choices", default=None)
    if choices is None:
        return None
    model = OmegaConf.select(config, "actor_rollout_ref.model", default=None) or {}
    lora = {key: _plain(model.get(key)) for key in LORA_KEYS}
    if not int(lora["lora_rank"] or 0):
        lora = {"lora_rank": 0}  # the other LoRA keys train nothing without a rank
    return {"choices": dict(_plain(choices)), "lora": lora}


def record_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Readable differences between two ``run_record`` values (old = the checkpoint's, new = this run's).

    >>> record_differences({"choices": {"curriculum": "fine"}, "lora": {"lora_rank": 0}},
    ...                    {"choices": {"curriculum": "coarse", "adapter": "full"}, "lora": {"lora_rank": 0}})
    ['curriculum fine -> coarse']
    """
    diffs = []
    old_choices, new_choices = dict(old.get("choices") or {}), dict(new.get("choices") or {})
    for group in [*RUN_GROUPS, *sorted((set(old_choices) | set(new_choices)) - set(RUN_GROUPS))]:
        before = old_choices.get(group, NEUTRAL_CHOICES.get(group))
        after = new_choices.get(group, NEUTRAL_CHOICES.get(group))
        if before != after:
            diffs.append(f"{group} {before} -> {after}")
    old_lora, new_lora = dict(old.get("lora") or {"lora_rank": 0}), dict(new.get("lora") or {"lora_rank": 0})
    for key in LORA_KEYS:
        if old_lora.get(key) != new_lora.get(key):
            diffs.append(f"actor_rollout_ref.model.{key} {old_lora.get(key)} -> {new_lora.get(key)}")
    return diffs


def write_run_record(checkpoint_step_dir: str | os.PathLike, config: Any) -> Path | None:
    """Write ``run_choices.json`` (``run_record``) into a checkpoint's ``global_step_N`` folder, atomically."""
    record = run_record(config)
    if record is None:
        return None
    directory = Path(checkpoint_step_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RECORD_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def check_run_record(checkpoint_step_dir: str | os.PathLike, config: Any) -> bool:
    """Raise RunChoicesMismatchError when ``checkpoint_step_dir`` was written under other choices than ``config``'s.

    Returns False when the checkpoint has no record (written before records existed: nothing to compare) or the
    config has no choices, True when the record matches.
    """
    current = run_record(config)
    path = Path(checkpoint_step_dir) / RECORD_NAME
    if current is None or not path.is_file():
        return False
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunChoicesMismatchError(f"{path}: unreadable run record ({err})") from err
    diffs = record_differences(recorded, current)
    if diffs:
        root = Path(checkpoint_step_dir).parent
        raise RunChoicesMismatchError(
            f"refusing to resume {os.fspath(checkpoint_step_dir)}: it was written by a run with other training choices "
            f"({'; '.join(diffs)}), and resuming would continue that run's weights under this run's settings. "
            f"Either give this run its own folder (trainer.experiment_name=NAME) or delete {root} to start over."
        )
    return True


def resume_checkpoint_dir(trainer: Any) -> str | None:
    """The ``global_step_N`` folder verl's trainer will resume from (``trainer.resume_mode``), or None.

    Same resolution as verl's ``_load_checkpoint`` (its own ``find_latest_ckpt_path`` for ``auto``), asked before
    verl loads anything.
    """
    mode = str(trainer.get("resume_mode", "auto"))
    if mode == "resume_path":
        folder = str(trainer.get("resume_from_path") or "")
        return (folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)) if folder else None
    if mode != "auto":
        return None
    root = os.path.expanduser(str(trainer.default_local_dir))
    root = root if os.path.isabs(root) else os.path.join(os.getcwd(), root)
    if not os.path.isfile(os.path.join(root, TRACKER_NAME)):
        return None  # nothing saved yet (verl's lookup would only print that)
    from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

    return find_latest_ckpt_path(root)


def check_resume(config: Any) -> str | None:
    """Refuse (RunChoicesMismatchError) the checkpoint this run would resume when its choices differ; returns the
    folder it would resume (None: starts fresh)."""
    folder = resume_checkpoint_dir(config.trainer)
    if folder is not None:
        check_run_record(folder, config)
    return folder


def _option(value: Any) -> str | None:
    return None if value is None else str(value)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
