"""What a dry run did, read back from verl's file logger (one JSON line per step: ``{"step": N, "data": {...}}``).

Each launch of the dry run writes its own metrics file (``metrics_file``), so a resumed run keeps the steps of
the launches before it; ``read_steps`` merges the files of a run folder (a later launch's record of a step wins).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRICS_DIR = "metrics"


@dataclass(frozen=True)
class StepRecord:
    """The metrics of one training step that the summary reports."""

    step: int
    stage: int | None
    reward: float
    acc: float
    samples: int
    probs_diff_max: float
    pg_loss: float
    grad_norm: float
    all_equal_groups: float
    seconds: float
    source: str  # the metrics file it was read from

    @staticmethod
    def from_logged(step: int, data: dict[str, Any], source: str) -> StepRecord:
        stage = data.get("rewardmap/stage")
        counts = [v for k, v in data.items() if k.startswith("rewardmap/count/stage=")]
        return StepRecord(
            step=step,
            stage=None if stage is None else int(stage),
            reward=_float(data.get("rewardmap/reward/score/mean")),
            acc=_float(data.get("rewardmap/reward/acc/mean")),
            samples=int(sum(counts)),
            probs_diff_max=_float(data.get("training/rollout_probs_diff_max")),
            pg_loss=_float(data.get("actor/pg_loss")),
            grad_norm=_float(data.get("actor/grad_norm")),
            all_equal_groups=_float(data.get("rewardmap/groups/all_equal_frac")),
            seconds=_float(data.get("timing_s/step")),
            source=source,
        )


def metrics_file(run_dir: str | Path) -> Path:
    """A new metrics file for this launch in ``run_dir/metrics`` (time-stamped, so launches never overwrite)."""
    folder = Path(run_dir) / METRICS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"launch-{stamp}.jsonl"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"launch-{stamp}-{n}.jsonl"
    return path


def read_steps(files: Iterable[str | Path]) -> dict[int, StepRecord]:
    """Per-step records from metrics files, in the order given (later files win); unreadable lines are skipped."""
    steps: dict[int, StepRecord] = {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                step, data = int(entry["step"]), dict(entry["data"])
            except (ValueError, KeyError, TypeError):
                continue
            if "rewardmap/stage" in data or "actor/pg_loss" in data:  # a training step, not validation only
                steps[step] = StepRecord.from_logged(step, data, path.name)
    return dict(sorted(steps.items()))


def run_files(run_dir: str | Path) -> list[Path]:
    """The metrics files of a run folder, oldest launch first."""
    return sorted((Path(run_dir) / METRICS_DIR).glob("launch-*.jsonl"), key=lambda p: p.stat().st_mtime)


def step_table(steps: dict[int, StepRecord], stage_names: Sequence[str] | None, this_launch: set[int]) -> list[str]:
    """Rows: step, stage, mean reward, accuracy, samples, max rollout/actor prob difference, pg loss, grad norm."""
    lines = [
        "   step  stage            reward    acc  samples  rollout-actor prob diff max   pg_loss  grad_norm",
    ]
    for record in steps.values():
        mark = " " if record.step in this_launch else "*"
        lines.append(
            f"  {mark}{record.step:>4}  {_stage_name(record.stage, stage_names):<15} {record.reward:>7.3f} "
            f"{record.acc:>6.2f} {record.samples:>8}  {record.probs_diff_max:>27.2e} {record.pg_loss:>9.4f} "
            f"{record.grad_norm:>10.4f}"
        )
    return lines


def stage_table(steps: dict[int, StepRecord], stage_names: Sequence[str] | None) -> list[str]:
    """Per stage: steps, samples, mean reward and accuracy (sample-weighted over its steps)."""
    by_stage: dict[int | None, list[StepRecord]] = {}
    for record in steps.values():
        by_stage.setdefault(record.stage, []).append(record)
    lines = ["   stage            steps  samples  mean reward  accuracy"]
    for stage, records in by_stage.items():
        samples = sum(r.samples for r in records) or len(records)
        weights = [r.samples or 1 for r in records]
        reward = sum(w * r.reward for w, r in zip(weights, records, strict=True)) / sum(weights)
        acc = sum(w * r.acc for w, r in zip(weights, records, strict=True)) / sum(weights)
        lines.append(
            f"   {_stage_name(stage, stage_names):<15} {len(records):>6} {samples:>8} {reward:>12.3f} {acc:>9.2f}"
        )
    return lines


def _stage_name(stage: int | None, names: Sequence[str] | None) -> str:
    if stage is None:
        return "?"
    if names is not None and 0 <= stage < len(names):
        return f"{stage} {names[stage]}"
    return str(stage)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
