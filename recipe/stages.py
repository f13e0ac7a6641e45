"""Curriculum stages turned into ONE deterministic sample order (``recipe.plan_record`` pins it to checkpoints).

The stages are a Hydra list under ``data.stages``; each entry::

    name:    str                 unique, e.g. "torf"
    files:   [parquet, ...]      one or more; a file may appear in several stages, but once per stage
    epochs:  float | null        passes over the stage's rows (fractions allowed) ...
    steps:   int | null          ... or a number of training steps; exactly one of the two
    shuffle: bool = true         shuffle inside the stage (a fresh permutation per epoch)
    replay:  float = 0.0         fraction of each batch drawn from the rows of all earlier stages

``build_plan`` is a pure function of (the stage list, each file's identity, batch size, seed). A file's identity
is its CONTENT: the sha256 of its bytes plus its row count (from the Parquet footer), not its path. So the same
data copied to node-local scratch, or named by an absolute instead of a relative path, plans identically and
resumes; a file rewritten with other rows (even as many) is a different plan. The sha256 comes from the data
folder's manifest when it lists the file at that size and the file is older than the manifest, else from
hashing the file (``data_prep.writer.content_sha256``). The plan record keeps each file's path for people to
read; comparisons use the content.

Rules, in order:

- Batches: every step is one batch of ``batch_size`` samples, and each stage covers whole batches, so a stage
  boundary is always a step boundary. A batch of stage s holds ``k = round(replay x batch_size)`` replayed
  samples (halves round up) after ``batch_size - k`` of the stage's own samples.
- Own samples: the stage's rows (files in order, rows in order) form a stream of epochs, each epoch a fresh
  seeded permutation when ``shuffle`` (else the file order). ``steps=n`` takes the first ``n x (batch_size - k)``
  samples of that stream. ``epochs=e`` wants ``floor(e x rows)`` samples and DROPS THE REMAINDER: the stage gets
  ``floor(floor(e x rows) / (batch_size - k))`` steps, so no sample appears twice within one epoch and the
  dropped count (< one batch) is reported by ``describe()``; with ``shuffle`` each epoch drops different rows.
  A stage that gets no full batch is an error.
- Replay: the pool is every row of every earlier stage (deduplicated, sorted); it is drawn as a stream of seeded
  permutations, so replayed rows are spread evenly before any repeats.
- Randomness: numpy ``Generator`` (PCG64) per (seed, stage index, purpose). numpy does not promise the same
  stream across versions, so the fingerprint also hashes the resulting order: a numpy upgrade that changes the
  order changes the fingerprint and resume refuses instead of silently reordering.

Steps here are 0-based batch indices: step k serves samples ``k*B .. (k+1)*B - 1``. verl's ``global_steps`` is
1-based (the first batch trains as global step 1), so the stage of verl's global step g is ``stage_at_step(g - 1)``,
and checkpoint ``global_step_N`` has consumed steps ``0 .. N-1``.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PLAN_VERSION = 2  # 2: files identified by content (sha256 + rows), not by path
_STAGE_KEYS = ("name", "files", "epochs", "steps", "shuffle", "replay")


class StagePlanError(ValueError):
    """A stage list that cannot be planned; the message names the stage and, where relevant, the file."""


@dataclass(frozen=True)
class StageSpec:
    """One validated ``data.stages`` entry."""

    name: str
    files: tuple[str, ...]
    epochs: float | None = None
    steps: int | None = None
    shuffle: bool = True
    replay: float = 0.0

    @staticmethod
    def from_config(raw: Any, index: int) -> StageSpec:
        """Validate one raw entry (dict or OmegaConf node); errors name ``data.stages[index]``."""
        raw = _to_container(raw)
        where = f"data.stages[{index}]"
        if not isinstance(raw, Mapping):
            raise StagePlanError(f"{where}: must be a mapping with keys {_STAGE_KEYS}, got {type(raw).__name__}")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise StagePlanError(f"{where}: 'name' must be a non-empty string")
        where = f"stage {name!r} ({where})"
        unknown = sorted(set(raw) - set(_STAGE_KEYS))
        if unknown:
            raise StagePlanError(f"{where}: unknown keys {unknown}; allowed: {list(_STAGE_KEYS)}")
        files = raw.get("files")
        if isinstance(files, str | os.PathLike):
            files = [files]
        if not files:
            raise StagePlanError(f"{where}: 'files' is empty; a stage needs at least one parquet file")
        if not all(isinstance(f, str | os.PathLike) for f in files):
            raise StagePlanError(f"{where}: 'files' must be a list of paths")
        paths = tuple(os.path.normpath(os.fspath(f)) for f in files)
        duplicates = sorted({p for p in paths if paths.count(p) > 1})
        if duplicates:
            raise StagePlanError(f"{where}: file {duplicates[0]!r} is listed twice; use epochs to repeat it")
        epochs, steps = raw.get("epochs"), raw.get("steps")
        if (epochs is None) == (steps is None):
            raise StagePlanError(
                f"{where}: set exactly one of 'epochs' and 'steps' (got epochs={epochs}, steps={steps})"
            )
        if epochs is not None:
            if (
                isinstance(epochs, bool)
                or not isinstance(epochs, int | float)
                or not math.isfinite(epochs)
                or epochs <= 0
            ):
                raise StagePlanError(f"{where}: 'epochs' must be a positive number, got {epochs!r}")
            epochs = float(epochs)
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise StagePlanError(f"{where}: 'steps' must be a positive integer, got {steps!r}")
        shuffle = raw.get("shuffle", True)
        if not isinstance(shuffle, bool):
            raise StagePlanError(f"{where}: 'shuffle' must be true or false, got {shuffle!r}")
        replay = raw.get("replay", 0.0)
        replay = 0.0 if replay is None else replay
        if isinstance(replay, bool) or not isinstance(replay, int | float) or not 0.0 <= replay < 1.0:
            raise StagePlanError(f"{where}: 'replay' must be a fraction in [0, 1), got {replay!r}")
        return StageSpec(name, paths, epochs, steps, shuffle, float(replay))


@dataclass(frozen=True)
class PlanFile:
    """A distinct stage file: its path as configured, its row count, its first global row id, and its content's
    sha256 (None when the plan was given row counts only; the path then stands for the content)."""

    path: str
    rows: int
    offset: int
    sha256: str | None = None

    @property
    def identity(self) -> list[Any]:
        """What the fingerprint hashes for this file: its content and row count (its path without a hash)."""
        return [self.sha256 or f"path:{self.path}", self.rows]


@dataclass(frozen=True)
class PlannedStage:
    """A stage as planned: its spec, its place in the step sequence and its batch composition."""

    index: int
    spec: StageSpec
    file_indices: tuple[int, ...]
    rows: int
    first_step: int
    num_steps: int
    own_per_batch: int
    replay_per_batch: int
    dropped: int  # samples the epoch count asked for that did not fill a whole batch

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, eq=False)
class StagePlan:
    """The planned sample order (global row ids into the stage files concatenated in ``files`` order)."""

    batch_size: int
    seed: int
    files: tuple[PlanFile, ...]
    stages: tuple[PlannedStage, ...]
    order: np.ndarray = field(repr=False)
    fingerprint: str

    @property
    def total_steps(self) -> int:
        """Number of batches (training steps) in the plan."""
        return sum(s.num_steps for s in self.stages)

    @property
    def num_samples(self) -> int:
        """Length of the sample order: ``total_steps x batch_size``."""
        return int(self.order.shape[0])

    @property
    def num_rows(self) -> int:
        """Rows in the distinct stage files together (the dataset the order indexes)."""
        return sum(f.rows for f in self.files)

    @property
    def boundaries(self) -> tuple[int, ...]:
        """First (0-based) step of each stage."""
        return tuple(s.first_step for s in self.stages)

    def stage_at_step(self, step: int) -> tuple[int, str]:
        """(index, name) of the stage that owns 0-based ``step`` (verl's global step g is step g - 1)."""
        if not 0 <= step < self.total_steps:
            raise IndexError(f"step {step} is outside the plan's steps 0..{self.total_steps - 1}")
        index = bisect.bisect_right(self.boundaries, step) - 1
        return index, self.stages[index].name

    def stage_of_sample(self, position: int) -> tuple[int, str]:
        """(index, name) of the stage that serves sample ``position`` of the order."""
        return self.stage_at_step(position // self.batch_size)

    def record(self) -> dict[str, Any]:
        """The JSON-able stage table written beside checkpoints (and compared on resume)."""
        return {
            "format": "rewardmap-stage-plan",
            "version": PLAN_VERSION,
            "fingerprint": self.fingerprint,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "total_steps": self.total_steps,
            "num_samples": self.num_samples,
            "stages": [
                {
                    "index": s.index,
                    "name": s.name,
                    "files": [
                        {"path": self.files[i].path, "rows": self.files[i].rows, "sha256": self.files[i].sha256}
                        for i in s.file_indices
                    ],
                    "epochs": s.spec.epochs,
                    "steps": s.spec.steps,
                    "shuffle": s.spec.shuffle,
                    "replay": s.spec.replay,
                    "first_step": s.first_step,
                    "num_steps": s.num_steps,
                    "own_per_batch": s.own_per_batch,
                    "replay_per_batch": s.replay_per_batch,
                }
                for s in self.stages
            ],
        }

    def describe(self) -> str:
        """A readable stage table for the pre-flight and the logs."""
        header = (
            f"stage plan: {len(self.stages)} stages, {self.total_steps} steps x batch {self.batch_size} = "
            f"{self.num_samples} samples, seed {self.seed}, fingerprint {self.fingerprint[:16]}"
        )
        columns = ("#", "stage", "rows", "schedule", "shuffle", "own+replay", "steps", "first..last", "dropped")
        table = [columns]
        for s in self.stages:
            if s.spec.steps is not None:
                schedule = f"{s.spec.steps} steps"
            else:
                schedule = f"{s.spec.epochs:g} epoch" + ("" if s.spec.epochs == 1 else "s")
            table.append(
                (
                    str(s.index),
                    s.name,
                    str(s.rows),
                    schedule,
                    "yes" if s.spec.shuffle else "no",
                    f"{s.own_per_batch}+{s.replay_per_batch}",
                    str(s.num_steps),
                    f"{s.first_step}..{s.first_step + s.num_steps - 1}",
                    str(s.dropped),
                )
            )
        widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
        lines = [header]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
        lines.append("files:")
        for s in self.stages:
            for i in s.file_indices:
                lines.append(f"  {s.name}: {self.files[i].path} ({self.files[i].rows} rows)")
        return "\n".join(lines)


def parquet_row_count(path: str) -> int:
    """Rows of a local Parquet file, from its footer (no data read)."""
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(os.path.expanduser(path)).metadata.num_rows)


def local_file_identity(path: str) -> tuple[int, str]:
    """(rows, content sha256) of a local Parquet stage file (see module doc for where the sha256 comes from)."""
    from data_prep.writer import content_sha256

    local = os.path.expanduser(path)
    if not os.path.isfile(local):
        raise FileNotFoundError(local)
    if not local.endswith(".parquet"):
        raise StagePlanError(f"only .parquet stage files are supported, got {path!r}")
    return parquet_row_count(local), content_sha256(local)


def build_plan(
    stages: Sequence[Any],
    *,
    batch_size: int,
    seed: int,
    count_rows: Callable[[str], int] | None = None,
) -> StagePlan:
    """Plan the sample order of ``stages`` (see the module docstring for the rules).

    By default each file is read locally for its row count and content hash (``local_file_identity``).
    ``count_rows(path)`` instead gives row counts only, for files this machine cannot read (the path then
    stands for the content in the fingerprint). Raises StagePlanError naming the stage and file on any problem.
    """
    stages = _to_container(stages)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise StagePlanError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise StagePlanError(f"seed must be a non-negative integer, got {seed!r}")
    if not stages:
        raise StagePlanError("data.stages is empty: give at least one stage")
    specs = [StageSpec.from_config(raw, i) for i, raw in enumerate(stages)]
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise StagePlanError(f"stage {name!r}: the name is used by more than one stage")

    identify = (lambda p: (count_rows(p), None)) if count_rows is not None else local_file_identity
    files: list[PlanFile] = []
    file_index: dict[str, int] = {}
    for spec in specs:
        for path in spec.files:
            if path in file_index:
                continue
            try:
                rows, sha256 = identify(path)
            except FileNotFoundError as err:
                raise StagePlanError(f"stage {spec.name!r}: file {path!r} does not exist") from err
            except StagePlanError as err:
                raise StagePlanError(f"stage {spec.name!r}: {err}") from err
            except Exception as err:  # an unreadable file: name it
                raise StagePlanError(f"stage {spec.name!r}: file {path!r} cannot be read: {err}") from err
            if rows < 1:
                raise StagePlanError(f"stage {spec.name!r}: file {path!r} has no rows")
            file_index[path] = len(files)
            files.append(PlanFile(path, int(rows), sum(f.rows for f in files), sha256))

    planned: list[PlannedStage] = []
    chunks: list[np.ndarray] = []
    earlier_rows: list[np.ndarray] = []
    first_step = 0
    for index, spec in enumerate(specs):
        where = f"stage {spec.name!r} (data.stages[{index}])"
        indices = tuple(file_index[p] for p in spec.files)
        rows = np.concatenate([np.arange(files[i].offset, files[i].offset + files[i].rows) for i in indices])
        replay_k = math.floor(spec.replay * batch_size + 0.5)
        if spec.replay > 0 and index == 0:
            raise StagePlanError(f"{where}: replay {spec.replay} needs earlier stages; the first stage has none")
        if spec.replay > 0 and replay_k == 0:
            raise StagePlanError(f"{where}: replay {spec.replay} x batch {batch_size} rounds to 0 samples per batch")
        own_k = batch_size - replay_k
        if own_k < 1:
            raise StagePlanError(f"{where}: replay {spec.replay} x batch {batch_size} leaves no own samples")
        dropped = 0
        if spec.steps is not None:
            num_steps = spec.steps
        else:
            assert spec.epochs is not None
            wanted = math.floor(spec.epochs * len(rows) + 1e-9)
            num_steps = wanted // own_k
            dropped = wanted - num_steps * own_k
            if num_steps == 0:
                raise StagePlanError(
                    f"{where}: {len(rows)} rows x {spec.epochs:g} epochs = {wanted} samples, fewer than one batch "
                    f"of {own_k} own samples (batch {batch_size}, {replay_k} replayed); files: {list(spec.files)}"
                )
        own = _permutation_stream(rows, num_steps * own_k, shuffle=spec.shuffle, seed=(seed, index, 0))
        own = own.reshape(num_steps, own_k)
        if replay_k:
            pool = np.unique(np.concatenate(earlier_rows))
            replay = _permutation_stream(pool, num_steps * replay_k, shuffle=True, seed=(seed, index, 1))
            own = np.concatenate([own, replay.reshape(num_steps, replay_k)], axis=1)
        chunks.append(own.reshape(-1))
        earlier_rows.append(rows)
        planned.append(PlannedStage(index, spec, indices, len(rows), first_step, num_steps, own_k, replay_k, dropped))
        first_step += num_steps

    order = np.concatenate(chunks).astype(np.int64)
    order.setflags(write=False)
    fingerprint = _fingerprint(planned, files, batch_size, seed, order)
    return StagePlan(batch_size, seed, tuple(files), tuple(planned), order, fingerprint)


def plan_from_data_config(data_config: Any, *, count_rows: Callable[[str], int] | None = None) -> StagePlan:
    """``build_plan`` from verl's ``data`` config: ``stages``, ``train_batch_size`` and ``seed`` (null -> 0)."""
    seed = data_config.get("seed")
    return build_plan(
        data_config.get("stages"),
        batch_size=data_config.get("train_batch_size"),
        seed=0 if seed is None else seed,
        count_rows=count_rows,
    )


def _permutation_stream(rows: np.ndarray, count: int, *, shuffle: bool, seed: tuple[int, int, int]) -> np.ndarray:
    """The first ``count`` items of rows' epochs back to back (each a fresh seeded permutation when shuffling)."""
    rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
    epochs = []
    total = 0
    while total < count:
        epochs.append(rng.permutation(rows) if shuffle else rows)
        total += len(rows)
    return np.concatenate(epochs)[:count] if epochs else rows[:0]


def _fingerprint(
    stages: list[PlannedStage], files: list[PlanFile], batch_size: int, seed: int, order: np.ndarray
) -> str:
    description = {
        "version": PLAN_VERSION,
        "batch_size": batch_size,
        "seed": seed,
        "stages": [
            {
                "name": s.name,
                "files": [files[i].identity for i in s.file_indices],
                "epochs": s.spec.epochs,
                "steps": s.spec.steps,
                "shuffle": s.spec.shuffle,
                "replay": s.spec.replay,
            }
            for s in stages
        ],
        "order_sha256": hashlib.sha256(order.astype("<i8").tobytes()).hexdigest(),
    }
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _to_container(value: Any) -> Any:
    """OmegaConf nodes to plain Python (resolved); anything else unchanged."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        return value
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value
