"""The dry run's closing summary, read back from its run folder: verl's file logger (one JSON line per step:
``{"step": N, "data": {...}}``) and the rollout server's weight-sync log.

Each launch of the dry run writes its own metrics file (``metrics_file``), so a resumed run keeps the steps of
the launches before it; ``read_steps`` merges the files of a run folder (a later launch's record of a step wins).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reward_fns.benchmark import PLUS_READINGS, RULE_SETS

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from recipe.cpu.dry_run import ResumePoint
    from recipe.cpu.peak_memory import PeakMemory

METRICS_DIR = "metrics"
_VALIDATION_KEY = re.compile(r"^val-(?:aux|core)/(?P<source>[^/]+)/(?P<metric>[^/]+)/mean@(?P<n>\d+)$")
# The validation rows of the summary: a label and the metrics it shows (benchmark rows: one per rule set, or per
# ReasonMap-Plus reading: reward_fns.benchmark.VALIDATION_KEYS).
_VALIDATION_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward (mean)", ("reward",)),
    ("accuracy (the reward's)", ("acc",)),
    *(
        (f"ReasonMap {form} {label}", tuple(f"bench_{rules}_{form}_{metric}" for rules in RULE_SETS))
        for form in ("short", "long")
        for label, metric in (("accuracy", "acc"), ("weighted accuracy", "weighted_acc"), ("map score", "map_score"))
    ),
    *(
        (f"ReasonMap-Plus {label}", tuple(f"bench_{reading}_plus_{metric}" for reading in PLUS_READINGS))
        for label, metric in (("accuracy", "acc"), ("weighted accuracy", "weighted_acc"))
    ),
)
WEIGHT_SYNC_LOG = "weight_sync.jsonl"
REAL_RUN_HINT = (
    "To train the configured model, run the same command on a machine with CUDA GPUs (vLLM rollout):\n"
    "  python -m recipe.main_rewardmap --preflight       # checks config, data, stage plan, prompt budget, reward\n"
    "  python -m recipe.main_rewardmap preset=qwen2_5_vl_7b rewardmap.data_dir=DIR\n"
    "or submit it to a Ray cluster: RAY_ADDRESS=http://HEAD:8265 bash launch/run_rewardmap_qwen2_5_vl_7b.sh"
)


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


def training_entries(files: Iterable[str | Path]) -> dict[int, tuple[Path, dict[str, Any]]]:
    """``step -> (file, data)`` of the training steps logged in ``files`` (later files win), sorted by step; a
    validation's own entries (before training, after the last step) are not training steps."""
    steps: dict[int, tuple[Path, dict[str, Any]]] = {}
    for path, step, data in read_logged(files):
        if "rewardmap/stage" in data or "actor/pg_loss" in data:
            steps[step] = (path, data)
    return dict(sorted(steps.items()))


def read_steps(files: Iterable[str | Path]) -> dict[int, StepRecord]:
    """Per-step records from metrics files, in the order given (later files win); unreadable lines are skipped."""
    return {
        step: StepRecord.from_logged(step, data, path.name) for step, (path, data) in training_entries(files).items()
    }


def read_validation(files: Iterable[str | Path]) -> dict[int, dict[tuple[str, str], float]]:
    """Validation means by step: ``(data source, metric) -> value`` from verl's ``val-*/<source>/<metric>/mean@N``.

    The largest N is kept (verl logs mean@1..N; mean@N is over all N responses per prompt). Later files win.
    """
    validation: dict[int, dict[tuple[str, str], float]] = {}
    for _, step, data in read_logged(files):
        values: dict[tuple[str, str], float] = {}
        best: dict[tuple[str, str], int] = {}
        for key, value in data.items():
            match = _VALIDATION_KEY.match(key)
            if match is None:
                continue
            name, n = (match["source"], match["metric"]), int(match["n"])
            if n >= best.get(name, 0):
                best[name], values[name] = n, _float(value)
        if values:
            validation[step] = values
    return dict(sorted(validation.items()))


def read_logged(files: Iterable[str | Path]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """``(file, step, data)`` of every readable line of verl's file logger in ``files``, in order."""
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
            yield path, step, data


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


def validation_table(validation: dict[int, dict[tuple[str, str], float]]) -> list[str]:
    """Rows: the validation reward and accuracy, then each benchmark number under both rule sets (ReasonMap-Plus:
    both readings), by step; "-" where a number was not logged (a form the validation split lacks)."""
    if not validation:
        return ["  no validation was logged"]
    steps = list(validation)
    sources = sorted({source for values in validation.values() for source, _ in values})
    lines = [
        f"  validation: the benchmark numbers under the {' / '.join(RULE_SETS)} rules (ReasonMap-Plus: the "
        f"{' / '.join(PLUS_READINGS)} readings)",
        f"   {'':<44}" + "".join(f"{'step ' + str(s):>15}" for s in steps),
    ]
    for source in sources:
        present = {metric for values in validation.values() for src, metric in values if src == source}
        for label, metrics in _VALIDATION_ROWS:
            if not present.intersection(metrics):
                continue
            label = f"{source}: {label}" if len(sources) > 1 else label
            cells = [" / ".join(_cell(validation[step].get((source, m))) for m in metrics) for step in steps]
            lines.append(f"   {label:<44}" + "".join(f"{cell:>15}" for cell in cells))
    return lines


def _cell(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def render_summary(
    config: DictConfig,
    point: ResumePoint,
    files: list[Path],
    this_launch: set[int],
    started: float,
    memory: PeakMemory | None,
) -> str:
    """The closing summary: steps and stages, rewards per stage, checkpoint, time, memory, and what this was.

    ``started`` is the command's start as a ``time.time()`` value.
    """
    steps = read_steps(files)
    checkpoint = point.checkpoint_dir / f"global_step_{point.last_step}" if point.last_step else None
    lines = ["", "=" * 100, "RewardMap dry run on CPU: summary"]
    if this_launch:
        lines.append(f"  this launch trained steps {min(this_launch)}-{max(this_launch)} of {point.total_steps}")
    if steps:
        lines += step_table(steps, point.stage_names, this_launch)
        if set(steps) - this_launch:
            lines.append("  (* trained by an earlier launch, resumed from its checkpoint)")
        lines += ["", *stage_table(steps, point.stage_names)]
    else:
        lines.append("  no training step was logged")
    lines += ["", *validation_table(read_validation(files))]
    lines += [
        "",
        f"  checkpoint: {checkpoint if checkpoint else 'none'}",
        f"  wall time: {time.time() - started:.0f} s from the command's start (data, tiny model, pre-flight, Ray "
        "start-up, training)",
    ]
    syncs = _syncs_since(Path(os.path.expanduser(str(config.rewardmap.cpu_run.run_dir))) / WEIGHT_SYNC_LOG, started)
    lines += sync_lines(syncs)
    if memory is not None:
        lines.append(
            f"  peak memory: {memory.peak_gib:.1f} GiB (PSS of the driver and all Ray processes, "
            f"{memory.peak_processes} processes)"
        )
    lines += [
        "",
        "This was a CPU run of the whole RewardMap training loop with a tiny model warm-started briefly on this "
        "machine: its rewards say nothing about RewardMap.",
        REAL_RUN_HINT,
        "=" * 100,
    ]
    return "\n".join(lines)


def sync_lines(records: list[dict[str, Any]]) -> list[str]:
    """The rollout engine that ran and the weight updates it received, from this launch's weight-sync records.

    The log (``recipe.cpu.weight_sync``) holds three kinds of record: "server" (vLLM's server started: its class
    and vLLM's version), "actor" (what verl's actor sent) and "rollout" (what the engine received and now holds);
    an update counts once, by its rollout record. It matches the actor when its digest (a LoRA adapter's: the
    adapter's; a LoRA base's: the digest sent) is one an actor record names.

    >>> sync_lines([{"side": "server", "engine": "vllm", "version": "0.24.0", "server": "m.Server"},
    ...             {"side": "rollout", "engine": "vllm", "digest": "ab"},
    ...             {"side": "actor", "engine": "vllm", "digest": "ab", "global_steps": 0}])[0]
    '  rollout engine: vllm 0.24.0 (m.Server)'
    """
    if not records:
        return []
    servers = [r for r in records if r.get("side") == "server"]
    received = [r for r in records if r.get("side") == "rollout"]
    sent = [r for r in records if r.get("side") == "actor"]
    if servers:
        server = servers[-1]
        engine = f"{server.get('engine')} {server.get('version')} ({server.get('server')})"
    else:
        name = str(records[-1].get("engine"))
        engine = f"{name} {_version(name)} (the recipe's rollout server, recipe/cpu/rollout.py)"
    lines = [f"  rollout engine: {engine}"]
    if received:
        digests = {str(r.get("digest")) for r in sent}
        matched = sum(
            str(r.get("adapter_digest") or r.get("sent_digest") or r.get("digest")) in digests for r in received
        )
        last = sent[-1] if sent else received[-1]
        lines.append(
            f"  weight sync: {len(received)} updates reached the rollout engine, {matched} with the digest the actor "
            f"sent (last: step {last.get('global_steps')}, {str(received[-1].get('digest'))[:12]})"
        )
    return lines


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(version unknown)"


def _syncs_since(log: Path, started: float) -> list[dict[str, Any]]:
    """The weight-sync records (``recipe.cpu.weight_sync``) written since ``started``."""
    if not log.is_file():
        return []
    records = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if float(record.get("time", 0)) >= started:
            records.append(record)
    return records


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
