"""The stage plan's record beside a checkpoint, and the check that refuses to resume under another plan.

``write_plan_record`` writes ``global_step_N/stage_plan.json`` (``StagePlan.record()``: fingerprint and stage
table) before verl saves the step; ``check_plan_record`` / ``check_plan_state`` compare a recorded table with
the plan being trained and raise ``StagePlanMismatchError`` listing the differences: resuming onto another plan
would silently skip or repeat samples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recipe.stages import StagePlan, StagePlanError

PLAN_RECORD_NAME = "stage_plan.json"
_MISMATCH_PREFIX = "the stage plan changed since this checkpoint was written: "


class StagePlanMismatchError(StagePlanError):
    """Resuming under a plan different from the checkpoint's; the message lists the differences."""


def write_plan_record(checkpoint_step_dir: str | os.PathLike, plan: StagePlan) -> Path:
    """Write ``stage_plan.json`` (fingerprint and stage table) into a checkpoint's ``global_step_N`` folder."""
    directory = Path(checkpoint_step_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PLAN_RECORD_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(plan.record(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def check_plan_record(checkpoint_step_dir: str | os.PathLike, plan: StagePlan, *, missing_ok: bool = False) -> None:
    """Refuse to resume under a plan other than the one recorded in ``checkpoint_step_dir``.

    Raises StagePlanMismatchError ("the stage plan changed since this checkpoint was written: ...") listing the
    differences, and StagePlanError when the record is missing (unless ``missing_ok``) or unreadable.
    """
    path = Path(checkpoint_step_dir) / PLAN_RECORD_NAME
    if not path.is_file():
        if missing_ok:
            return
        raise StagePlanError(
            f"no {PLAN_RECORD_NAME} in {os.fspath(checkpoint_step_dir)}: this checkpoint was not written with a stage "
            "plan, so resuming cannot be checked against data.stages"
        )
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise StagePlanError(f"{path}: unreadable stage plan record: {err}") from err
    check_plan_state(recorded, plan)


def check_plan_state(recorded: Mapping[str, Any] | None, plan: StagePlan | None) -> None:
    """Compare a recorded plan table (``StagePlan.record()`` or None) with the current plan (or None)."""
    recorded_fp = recorded.get("fingerprint") if recorded else None
    current_fp = plan.fingerprint if plan is not None else None
    if recorded_fp == current_fp:
        return
    if plan is None:
        raise StagePlanMismatchError(_MISMATCH_PREFIX + "it was written with data.stages, the current config has none")
    if not recorded:
        raise StagePlanMismatchError(
            _MISMATCH_PREFIX + "it was written without data.stages, the current config has some"
        )
    raise StagePlanMismatchError(_MISMATCH_PREFIX + "; ".join(plan_differences(recorded, plan.record())))


def plan_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two ``StagePlan.record()`` tables (old = checkpoint, new = now)."""
    diffs = []
    for key in ("version", "batch_size", "seed", "total_steps"):
        if old.get(key) != new.get(key):
            diffs.append(f"{key} {old.get(key)} -> {new.get(key)}")
    old_stages, new_stages = list(old.get("stages", [])), list(new.get("stages", []))
    if [s.get("name") for s in old_stages] != [s.get("name") for s in new_stages]:
        diffs.append(f"stages {[s.get('name') for s in old_stages]} -> {[s.get('name') for s in new_stages]}")
    for o, n in zip(old_stages, new_stages, strict=False):
        label = f"stage {n.get('name')!r}" if o.get("name") == n.get("name") else f"stage #{n.get('index')}"
        for key in ("files", "epochs", "steps", "shuffle", "replay", "first_step", "num_steps"):
            if o.get(key) != n.get(key):
                diffs.append(f"{label} {key} {_short(o.get(key))} -> {_short(n.get(key))}")
    if not diffs:
        diffs.append(
            "same stage table but a different sample order (the plan algorithm or numpy's random streams changed)"
        )
    return diffs


def _short(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], Mapping):
        return "[" + ", ".join(f"{v.get('path')} ({v.get('rows')} rows)" for v in value) + "]"
    return repr(value)
