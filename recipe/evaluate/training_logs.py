"""Scalar series of a training run, from its TensorBoard event files (verl's default logger) or verl's file logger.

``read_training_log(path)`` accepts a folder holding ``events.out.tfevents.*`` files anywhere below it (verl's
``TENSORBOARD_DIR``, default ``tensorboard_log/<project>/<experiment>``), a single event file, or a JSONL written
by verl's ``file`` logger (one ``{"step": int, "data": {name: value}}`` per line). TensorBoard files are read with
TensorBoard's own ``EventAccumulator``. Returns name -> [(step, value)] sorted by step (the last value wins when a
step repeats, as after a resume).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from recipe.evaluate.files import EvalInputError, read_jsonl

Series = dict[str, list[tuple[int, float]]]

REWARD_PREFIX = "rewardmap/reward/"  # recipe.step_metrics: the training reward's components per step
VALIDATION_PREFIXES = ("val-core/", "val-aux/")


def _merge(into: dict[str, dict[int, float]], name: str, step: int, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return
    into.setdefault(name, {})[int(step)] = float(value)


def _event_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("events.out.tfevents.*") if p.is_file())


def _read_tensorboard(files: list[Path], into: dict[str, dict[int, float]]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for file in files:
        accumulator = EventAccumulator(str(file), size_guidance={"scalars": 0})
        try:
            accumulator.Reload()
        except Exception as err:  # a corrupt or foreign file: name it
            raise EvalInputError(f"{file}: not a readable TensorBoard event file ({err})") from err
        for tag in accumulator.Tags().get("scalars", []):
            for event in accumulator.Scalars(tag):
                _merge(into, tag, event.step, event.value)


def _read_file_logger(path: Path, into: dict[str, dict[int, float]]) -> None:
    for number, record in read_jsonl(path).records:
        step, data = record.get("step"), record.get("data")
        if not isinstance(step, int) or not isinstance(data, dict):
            raise EvalInputError(f"{path}:{number}: not a verl file-logger line ({{'step': int, 'data': {{...}}}})")
        for name, value in data.items():
            _merge(into, str(name), step, value)


def read_training_log(path: str | os.PathLike[str]) -> Series:
    """Every scalar series of a run (module docstring); EvalInputError when ``path`` holds none."""
    path = Path(path)
    if not path.exists():
        raise EvalInputError(f"--training-log {path}: not found")
    raw: dict[str, dict[int, float]] = {}
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        _read_file_logger(path, raw)
    else:
        files = _event_files(path)
        if not files:
            raise EvalInputError(f"--training-log {path}: no TensorBoard event files (events.out.tfevents.*)")
        _read_tensorboard(files, raw)
    if not raw:
        raise EvalInputError(f"--training-log {path}: no scalar values")
    return {name: sorted(steps.items()) for name, steps in sorted(raw.items())}


def reward_series(series: Series) -> Series:
    """The training reward's per-step components (``rewardmap/reward/<component>/mean``)."""
    return {k: v for k, v in series.items() if k.startswith(REWARD_PREFIX) and k.endswith("/mean")}


def validation_series(series: Series) -> Series:
    """Validation metrics: the benchmark numbers (``bench_*`` keys of ``reward_fns.benchmark.validation_metrics``)
    when logged, else verl's core validation metrics."""
    bench = {
        k: v
        for k, v in series.items()
        if k.startswith(VALIDATION_PREFIXES) and "/bench_" in k and ("_acc/" in k or "_weighted_acc/" in k)
    }
    if bench:
        return bench
    return {k: v for k, v in series.items() if k.startswith("val-core/")}
