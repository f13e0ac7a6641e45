"""The stage plan's record beside a checkpoint, the check that refuses to resume under another plan, and the
dataloader state carried across a change of ``data.dataloader_num_workers``.

``write_plan_record`` writes ``global_step_N/stage_plan.json`` (``StagePlan.record()``: fingerprint and stage
table) before verl saves the step; ``check_plan_record`` / ``check_plan_state`` compare a recorded table with
the plan being trained and raise ``StagePlanMismatchError`` listing the differences: resuming onto another plan
would silently skip or repeat samples.

The record also says how the run draws from the plan (``sampling``: ``dynamic``, ``position`` = prompts drawn,
per-stage counts; ``recipe.dynamic_sampling``). verl's ``data.pt`` counts dataloader batches: whole plan steps
without dynamic sampling, single prompts with it, so ``recorded_sampling_position`` refuses to resume across a
change of ``algorithm.filter_groups.enable`` (the saved position would be read in the wrong unit) and gives a
dynamic run the position to continue its stage from. Records without ``sampling`` were written without dynamic
sampling.

``dataloader_state_for``: verl saves the StatefulDataLoader's state in ``global_step_N/data.pt``, and torchdata
writes it in a different shape for 0 workers (single process) than for N (a snapshot per worker); loading it
into a loader with another worker count fails with a bare AssertionError when iteration starts. For this
recipe's map-style dataset read in plan order, the position is the number of batches yielded plus the sampler's
own state, both present in either shape, and every worker holds the same dataset state (the plan record), so
the state converts exactly. What cannot convert exactly (a snapshot taken several steps back, iterable datasets,
workers with different states) is refused naming both worker counts.
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


class DataloaderStateError(StagePlanError):
    """A saved dataloader state that cannot continue exactly under the current ``data.dataloader_num_workers``."""


def write_plan_record(
    checkpoint_step_dir: str | os.PathLike, plan: StagePlan, *, sampling: Mapping[str, Any] | None = None
) -> Path:
    """Write ``stage_plan.json`` (fingerprint and stage table, and ``sampling`` when given: how far the run drew)
    into a checkpoint's ``global_step_N`` folder."""
    directory = Path(checkpoint_step_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PLAN_RECORD_NAME
    tmp = path.with_suffix(".json.tmp")
    record = plan.record() if sampling is None else {**plan.record(), "sampling": dict(sampling)}
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
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


def recorded_sampling_position(checkpoint_step_dir: str | os.PathLike, *, dynamic: bool) -> int | None:
    """Prompts drawn from the plan by the checkpoint's run, when it sampled dynamically as the current run does.

    Returns None for a run without dynamic sampling (its position is verl's step count). Raises
    StagePlanMismatchError when the checkpoint was written with dynamic sampling switched the other way, and
    StagePlanError when a dynamic checkpoint's record lacks its position.
    """
    path = Path(checkpoint_step_dir) / PLAN_RECORD_NAME
    try:  # no record: a checkpoint written without a plan (check_plan_record decides whether that may resume)
        sampling = (json.loads(path.read_text()).get("sampling") or {}) if path.is_file() else {}
    except (OSError, ValueError) as err:
        raise StagePlanError(f"{path}: unreadable stage plan record: {err}") from err
    recorded = bool(sampling.get("dynamic", False))
    if recorded != dynamic:
        raise StagePlanMismatchError(
            f"{_MISMATCH_PREFIX}it was written with dynamic sampling {'on' if recorded else 'off'}, the current "
            f"config has it {'on' if dynamic else 'off'}; verl's saved dataloader position counts "
            f"{'single prompts' if recorded else 'whole steps'} there, so it cannot continue exactly: resume with "
            f"dynamic_sampling={'on' if recorded else 'off'}"
        )
    if not dynamic:
        return None
    position = sampling.get("position")
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise StagePlanError(f"{path}: 'sampling.position' must be the number of prompts drawn, got {position!r}")
    return position


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
        if _contents(o.get("files")) != _contents(n.get("files")):  # by content: a moved copy is the same file
            diffs.append(f"{label} files {_short(o.get('files'))} -> {_short(n.get('files'))}")
        for key in ("epochs", "steps", "shuffle", "replay", "first_step", "num_steps"):
            if o.get(key) != n.get(key):
                diffs.append(f"{label} {key} {_short(o.get(key))} -> {_short(n.get(key))}")
    if not diffs:
        diffs.append(
            "same stage table but a different sample order (the plan algorithm or numpy's random streams changed)"
        )
    return diffs


def _contents(files: Any) -> list[tuple[Any, Any]]:
    """A stage's files as (content sha256, rows), the way the fingerprint identifies them (path when no hash)."""
    return [(f.get("sha256") or f"path:{f.get('path')}", f.get("rows")) for f in files or [] if isinstance(f, Mapping)]


def _short(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], Mapping):
        return "[" + ", ".join(_file_label(v) for v in value) + "]"
    return repr(value)


def _file_label(file: Mapping[str, Any]) -> str:
    sha = file.get("sha256")
    return f"{file.get('path')} ({file.get('rows')} rows" + (f", sha256 {sha[:12]})" if sha else ")")


def dataloader_state_for(state: Mapping[str, Any], *, num_workers: int) -> dict[str, Any]:
    """A StatefulDataLoader state saved with any worker count, reshaped for a loader with ``num_workers``.

    Unchanged when the counts agree (or the state is empty). Raises DataloaderStateError naming both counts when
    the position cannot be carried over exactly (see module doc).
    """
    from torchdata.stateful_dataloader import stateful_dataloader as sdl  # its state keys, by their own names

    position_keys = (
        sdl._SAMPLER_ITER_STATE,
        sdl._INDEX_SAMPLER_STATE,
        sdl._SAMPLER_ITER_YIELDED,
        sdl._ITERABLEDATASET_LEN_CALLED,
        sdl._SHARED_SEED,
    )  # the sampler's position: stored alike by single- and multi-process loaders
    multi = sdl._StatefulMultiProcessingDataLoaderIter
    single = sdl._StatefulSingleProcessDataLoaderIter
    state = dict(state or {})
    if not state:
        return state
    if multi._SNAPSHOT in state:
        snapshot = state[multi._SNAPSHOT]
        main = snapshot[multi._MAIN_SNAPSHOT]
        saved = int(main[multi._NUM_WORKERS])
    elif single._NUM_YIELDED in state:
        saved = 0
    else:
        raise DataloaderStateError(f"data.pt holds no dataloader state torchdata knows (keys {sorted(state)})")
    if saved == num_workers:
        return state

    def refuse(why: str) -> DataloaderStateError:
        return DataloaderStateError(
            f"data.dataloader_num_workers changed since this checkpoint was written: {saved} -> {num_workers}, "
            f"and its dataloader position cannot be carried over exactly ({why}); resume with "
            f"data.dataloader_num_workers={saved}"
        )

    if saved:  # position and dataset state out of the multi-process snapshot
        if state.get(multi._STEPS_SINCE_SNAPSHOT):
            raise refuse(f"the snapshot is {state[multi._STEPS_SINCE_SNAPSHOT]} steps older than the checkpoint")
        workers = list(snapshot.get(multi._WORKER_SNAPSHOTS, {}).values())
        if any(w.get(sdl._FETCHER_STATE) is not None for w in workers):
            raise refuse("an iterable dataset's fetcher state")
        dataset_states = [w.get(sdl._DATASET_STATE) for w in workers]
        if any(d != dataset_states[0] for d in dataset_states):
            raise refuse("the workers hold different dataset states")
        dataset_state = dataset_states[0] if dataset_states else None
        yielded = int(snapshot[multi._SNAPSHOT_STEP])
        position = {key: main[key] for key in position_keys}
        finished = state.get(sdl._ITERATOR_FINISHED, False)
    else:
        if state.get(sdl._FETCHER_STATE) is not None:
            raise refuse("an iterable dataset's fetcher state")
        dataset_state = state.get(sdl._DATASET_STATE)
        yielded = int(state[single._NUM_YIELDED])
        position = {key: state[key] for key in position_keys}
        finished = state.get(sdl._ITERATOR_FINISHED, False)

    if num_workers == 0:
        return {
            **position,
            single._NUM_YIELDED: yielded,
            sdl._FETCHER_STATE: None,
            sdl._DATASET_STATE: dataset_state,
            sdl._ITERATOR_FINISHED: finished,
        }
    import torch

    main = {
        multi._NUM_WORKERS: num_workers,
        **position,
        multi._BASE_SEED: main[multi._BASE_SEED] if saved else int(torch.empty((), dtype=torch.int64).random_().item()),
    }
    worker_states = {
        f"worker_{i}": {sdl._WORKER_ID: i, sdl._DATASET_STATE: dataset_state, sdl._FETCHER_STATE: None}
        for i in range(num_workers)
    }
    return {
        multi._SNAPSHOT: {
            multi._SNAPSHOT_STEP: yielded,
            multi._LAST_YIELDED_WORKER_ID: (yielded - 1) % num_workers,  # batch k went to worker k % n
            multi._MAIN_SNAPSHOT: main,
            multi._WORKER_SNAPSHOTS: worker_states,
        },
        multi._STEPS_SINCE_SNAPSHOT: 0,
        sdl._ITERATOR_FINISHED: finished,
    }
