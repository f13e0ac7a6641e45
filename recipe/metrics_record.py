"""A step's metrics kept with its checkpoint until they are logged, so that a kill between the two loses none.

verl's trainer saves step N's checkpoint (``latest_checkpointed_iteration.txt`` last) before it logs step N
(``verl/trainer/ppo/v1/trainer_base.py``, ``fit``: "2. save checkpoint" comes before "5. record metrics"). A run
killed in between resumes after step N, and step N's metrics reach no logger. The trainer mode therefore writes
``global_step_N/step_metrics.pending.json`` before verl saves the step, renames it to ``step_metrics.json`` once the
step is logged, and a resumed run logs a pending record it finds in the checkpoint it resumed from (once: it
renames it after logging). Steps are logged in order, so only the checkpoint a run resumes from can be pending.

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> write_pending(folder, {"actor/pg_loss": 0.5})
>>> read_pending(folder)
{'actor/pg_loss': 0.5}
>>> mark_logged(folder)
>>> read_pending(folder) is None
True
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PENDING_NAME = "step_metrics.pending.json"  # written before verl saves the step
LOGGED_NAME = "step_metrics.json"  # the same record once the step was logged


def write_pending(step_dir: str | os.PathLike, metrics: Mapping[str, Any]) -> None:
    """Write a step's metrics into its checkpoint folder as not yet logged (atomically: temporary file, rename).

    Values are stored as numbers where they are numbers (numpy and torch scalars included), else as text.
    """
    folder = Path(step_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PENDING_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({str(k): _number(v) for k, v in metrics.items()}, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_pending(step_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The record of a step whose checkpoint was saved but whose metrics were never logged, else None."""
    path = Path(step_dir) / PENDING_NAME
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as err:  # written atomically, so only a hand-edited file gets here
        raise ValueError(f"{path}: unreadable step metrics record: {err}") from err
    return record if isinstance(record, dict) else None


def mark_logged(step_dir: str | os.PathLike) -> None:
    """Record that the step's metrics were logged (a rename; nothing when there is no pending record)."""
    folder = Path(step_dir)
    try:
        os.replace(folder / PENDING_NAME, folder / LOGGED_NAME)
    except FileNotFoundError:
        pass


def _number(value: Any) -> Any:
    """A JSON value for a metric: numpy and torch scalars as Python numbers (NaN too), anything else as text."""
    if hasattr(value, "item"):
        try:
            value = value.item()
        except (TypeError, ValueError):  # not a one-element array
            pass
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)
