"""Dynamic sampling (DAPO-style: drop GRPO groups without learning signal, refill) inside the curriculum's plan.

Switched on by verl's own key ``algorithm.filter_groups.enable`` (``dynamic_sampling=on``); verl's
``algorithm.filter_groups.metric`` decides "no signal" (the metric equal across all rollouts of a prompt;
``reward`` = the trained reward), ``rewardmap.dynamic_sampling.max_refills`` bounds the refills of one step.

Why not verl's own filter. verl 0.9.1's sync replay buffer (``verl/trainer/ppo/v1/replay_buffer.py``) and the
trainer's refill function cannot keep this recipe's stage plan (``recipe.stages``):

- it refills as groups finish, 2 prompts per dropped group up to the in-flight limit (replay_buffer.py:474-486),
  so how many prompts a step draws depends on timing, not only on rewards;
- it has no bound: it refills until ``data.train_batch_size`` groups are kept (replay_buffer.py:461-462, 487;
  ``max_num_gen_batches`` is ignored, trainer_base.py:205-211), and discards the kept groups beyond the batch
  (replay_buffer.py:493-500): prompts of the plan drawn and never trained;
- which kept groups train is ``sorted`` by step over a set of random uuid4 uids (replay_buffer.py:383-392,
  trainer_base.py:1476): not reproducible;
- the refill takes the dataloader's next prompts whatever their stage, and past the plan's end the dataloader
  restarts at its first prompt (trainer_base.py:1466-1474): a stage takes the next stage's prompts, and a run
  that refilled ends by training the first stage again (the CPU run in the README's "Dynamic sampling inside the
  curriculum"; ``tests/test_dynamic_sampling.py::test_verls_own_group_filter_breaks_the_plan``).

What stays verl's: the switch and the metric (and with them verl's single-prompt dataloader fetches,
trainer_base.py:727-739, and its check that the reward is known at sampling time), the group classification and
eviction (``ReplayBuffer._dapo_filtered_keys``, ``_clear_groups``), the batch hand-over (``_materialize_batch``),
the padding of a partial batch (``upsample_batch_to_divisible_size``; ``recipe.advantage`` keeps it out of its
batch scale) and the whole PPO step. ``PlanReplayBuffer``
replaces only the dispatch policy of ``ReplayBuffer.sample``; the trainer mode (``recipe.trainer``) draws the
prompts (``PlanCursor``) and records the position with each checkpoint (``recipe.plan_record``).

What a step is. A step trains one batch of kept groups, all from one stage, drawn in plan order:

1. it draws the next ``B = data.train_batch_size`` prompts of the current stage (fewer when fewer are left);
2. when every drawn group has finished, groups whose metric is equal across their rollouts are dropped; while
   fewer than B are kept, fewer than ``max_refills`` refills were made and the stage has prompts left, it
   draws exactly the missing number (a refill) and waits again. Decisions wait for every group, so what a step
   draws depends on the rewards only, never on timing, and no kept group is ever discarded;
3. it trains the kept groups: B of them, or fewer (a partial batch, padded by verl) when the stage ran out or
   the refills were spent. When none was kept it trains the first B drawn groups unfiltered (as plain GRPO
   would: no policy gradient from them, the KL term still applies), so every step trains something.

A stage ends when its prompts are drawn: its last step may be partial and never takes the next stage's prompts.
A stage has at most the plan's number of steps (``StagePlan``), fewer when refills drew ahead; the run ends when
the last stage's prompts are drawn (the trainer saves and validates that step as verl does its last one). The
plan and its fingerprint are unchanged: dynamic sampling changes where steps fall in the order, not the order.

Resume: each checkpoint records the number of prompts drawn (``stage_plan.json``, ``sampling``); the resumed run
checks that verl's restored dataloader serves exactly the next prompt (``plan_index``) and continues the stage
from there. A resumed run draws the same prompts in the same order as an uninterrupted one; where its later steps
begin depends on its rollouts' rewards, which match the uninterrupted run's only when its rollouts do.

Per-step metrics (``StepDraws.metrics``)::

    rewardmap/sampling/prompts_drawn         prompts the step drew from the plan (the first draw and refills)
    rewardmap/sampling/refills               refills made
    rewardmap/sampling/groups_dropped        drawn groups without signal (dropped_frac: their share)
    rewardmap/sampling/groups_trained        groups trained (partial_batch: 1 when fewer than B)
    rewardmap/sampling/unfiltered            1 when no group was kept and the first drawn ones trained
    rewardmap/sampling/stage_ran_out         1 when a draw asked for more prompts than the stage had left
    rewardmap/sampling/plan_position         prompts drawn from the plan so far
    rewardmap/sampling/progress/stage=<name> share of each stage's prompts drawn so far (0 to 1)

``rewardmap/groups/all_equal_frac`` (``recipe.step_metrics``) is then of the trained groups: 0 unless ``unfiltered``.
Each step's prompts (plan positions: drawn, dropped, trained) are appended to
``<trainer.default_local_dir>/dynamic_sampling.jsonl`` (a step trained again after a resume appends again; the
last line of a step wins).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipe.stages import StagePlan
from recipe.step_metrics import PREFIX

DRAW_LOG_NAME = "dynamic_sampling.jsonl"
METRIC_PREFIX = f"{PREFIX}/sampling"


class DynamicSamplingError(RuntimeError):
    """The trainer's draws and the plan disagree (a dataloader position that does not match the record)."""


@dataclass(frozen=True)
class DynamicSamplingSettings:
    """The switch and knobs (``configs/dynamic_sampling/on.yaml``); ``max_refills`` None: until full or stage end."""

    enabled: bool
    metric: str | None = None
    max_refills: int | None = None

    @staticmethod
    def from_config(config: Any) -> DynamicSamplingSettings:
        """From the composed config: verl's ``algorithm.filter_groups`` and ``rewardmap.dynamic_sampling``."""
        groups = (config.get("algorithm") or {}).get("filter_groups") or {}
        if not groups.get("enable", False):
            return DynamicSamplingSettings(enabled=False)
        knobs = (config.get("rewardmap") or {}).get("dynamic_sampling") or {}
        max_refills = knobs.get("max_refills")
        if max_refills is not None and (
            isinstance(max_refills, bool) or not isinstance(max_refills, int) or max_refills < 0
        ):
            raise ValueError(f"rewardmap.dynamic_sampling.max_refills: an integer >= 0 or null, not {max_refills!r}")
        return DynamicSamplingSettings(enabled=True, metric=groups.get("metric"), max_refills=max_refills)


@dataclass
class PlanCursor:
    """The position in the plan's order (prompts drawn so far) and the stage that holds it.

    >>> from recipe.stages import build_plan
    >>> plan = build_plan([{"name": "a", "files": ["a"], "steps": 2}, {"name": "b", "files": ["b"], "steps": 1}],
    ...                   batch_size=2, seed=0, count_rows=lambda path: 4)
    >>> cursor = PlanCursor(plan, position=3)
    >>> cursor.stage_index, cursor.available(), cursor.take(2)
    (0, 1, 1)
    >>> cursor.advance(1); cursor.stage_index, cursor.available(), cursor.take(2, stage=0)
    (1, 2, 0)
    """

    plan: StagePlan
    position: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.position <= self.plan.num_samples:
            raise DynamicSamplingError(f"plan position {self.position} is outside 0..{self.plan.num_samples}")

    def stage_range(self, index: int) -> tuple[int, int]:
        """[start, end) positions of stage ``index`` in the order."""
        stage = self.plan.stages[index]
        size = self.plan.batch_size
        return stage.first_step * size, (stage.first_step + stage.num_steps) * size

    @property
    def done(self) -> bool:
        """Every prompt of the plan has been drawn."""
        return self.position >= self.plan.num_samples

    @property
    def stage_index(self) -> int:
        """The stage the next prompt belongs to (the last stage once the plan is done)."""
        if self.done:
            return len(self.plan.stages) - 1
        return self.plan.stage_of_sample(self.position)[0]

    def available(self) -> int:
        """Prompts left in the current stage (0 once the plan is done)."""
        return 0 if self.done else self.stage_range(self.stage_index)[1] - self.position

    def take(self, wanted: int, *, stage: int | None = None) -> int:
        """How many of ``wanted`` prompts the current stage can give: never beyond its end, and none once the
        cursor has left ``stage`` (a step's refills stay in the stage the step started)."""
        if stage is not None and (self.done or self.stage_index != stage):
            return 0
        return max(0, min(int(wanted), self.available()))

    def advance(self, count: int) -> None:
        """Record ``count`` drawn prompts; a draw never crosses into the next stage."""
        if not 0 <= count <= self.available():
            raise DynamicSamplingError(
                f"drawing {count} prompts at plan position {self.position} would cross the end of stage "
                f"{self.plan.stages[self.stage_index].name!r} ({self.available()} left)"
            )
        self.position += count

    def record(self, *, dynamic: bool) -> dict[str, Any]:
        """The ``sampling`` entry of a checkpoint's plan record (``recipe.plan_record``)."""
        return {
            "dynamic": dynamic,
            "position": self.position,
            "complete": self.done,
            "stages": [{"name": n, "drawn": d, "prompts": t} for n, d, t in self.consumed()],
        }

    def consumed(self) -> list[tuple[str, int, int]]:
        """(stage name, prompts drawn, prompts in the stage) for every stage."""
        rows = []
        for stage in self.plan.stages:
            start, end = self.stage_range(stage.index)
            rows.append((stage.name, min(max(self.position - start, 0), end - start), end - start))
        return rows


def refill_size(kept: int, batch_size: int, refills: int, max_refills: int | None) -> int:
    """Prompts the next refill asks for (0: the step trains what it has); the stage may give fewer (``take``).

    >>> refill_size(kept=1, batch_size=4, refills=0, max_refills=2)
    3
    >>> refill_size(kept=1, batch_size=4, refills=2, max_refills=2)  # refills spent
    0
    >>> refill_size(kept=4, batch_size=4, refills=0, max_refills=None)  # the batch is full
    0
    """
    if kept >= batch_size or (max_refills is not None and refills >= max_refills):
        return 0
    return batch_size - kept


@dataclass
class StepDraws:
    """The prompts one step drew (plan positions in draw order, by uid) and what became of their groups."""

    step: int
    stage: int
    batch_size: int
    positions: dict[str, int] = field(default_factory=dict)  # uid -> plan position, in draw order
    draws: list[int] = field(default_factory=list)  # prompts per draw: the first, then each refill
    dropped: list[int] = field(default_factory=list)  # positions of groups without signal
    trained: list[int] = field(default_factory=list)  # positions of the groups the step trains
    unfiltered: bool = False  # nothing was kept: the step trains the first drawn groups unfiltered
    stage_ran_out: bool = False  # a draw asked for more prompts than the stage had left

    def record(self, uids: list[str], positions: list[int]) -> None:
        """One draw of the step (the first or a refill)."""
        self.positions.update(zip(uids, positions, strict=True))
        self.draws.append(len(uids))

    def in_draw_order(self, uids: set[str] | list[str]) -> list[str]:
        """``uids`` sorted by their plan position (uids this step did not draw are an error)."""
        unknown = [uid for uid in uids if uid not in self.positions]
        if unknown:
            raise DynamicSamplingError(f"groups {unknown[:3]} were not drawn by step {self.step}")
        return sorted(uids, key=self.positions.__getitem__)

    @property
    def refills(self) -> int:
        return max(0, len(self.draws) - 1)

    def metrics(self, cursor: PlanCursor) -> dict[str, float]:
        """``rewardmap/sampling/...`` for this step; ``progress/stage=<name>``: share of the stage's prompts drawn."""
        drawn = len(self.positions)
        values = {
            f"{METRIC_PREFIX}/prompts_drawn": float(drawn),
            f"{METRIC_PREFIX}/refills": float(self.refills),
            f"{METRIC_PREFIX}/groups_dropped": float(len(self.dropped)),
            f"{METRIC_PREFIX}/dropped_frac": len(self.dropped) / drawn if drawn else 0.0,
            f"{METRIC_PREFIX}/groups_trained": float(len(self.trained)),
            f"{METRIC_PREFIX}/partial_batch": float(len(self.trained) < self.batch_size),
            f"{METRIC_PREFIX}/unfiltered": float(self.unfiltered),
            f"{METRIC_PREFIX}/stage_ran_out": float(self.stage_ran_out),
            f"{METRIC_PREFIX}/plan_position": float(cursor.position),
        }
        for name, consumed, total in cursor.consumed():
            values[f"{METRIC_PREFIX}/progress/stage={name}"] = consumed / total
        return values

    def log_record(self) -> dict[str, Any]:
        """The step's line in ``dynamic_sampling.jsonl``."""
        return {
            "step": self.step,
            "stage": self.stage,
            "drawn": sorted(self.positions.values()),
            "draws": self.draws,
            "dropped": sorted(self.dropped),
            "trained": sorted(self.trained),
            "unfiltered": self.unfiltered,
            "stage_ran_out": self.stage_ran_out,
            "time": time.time(),
        }


def append_draw_log(folder: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Append one step's draws to ``folder/dynamic_sampling.jsonl`` (one JSON line, flushed)."""
    path = Path(folder) / DRAW_LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log:
        log.write(json.dumps(dict(record), sort_keys=True) + "\n")
    return path


def read_draw_log(folder: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """Step -> its last record in ``folder/dynamic_sampling.jsonl`` (a step trained again after a resume wins)."""
    path = Path(folder) / DRAW_LOG_NAME
    steps: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                steps[int(record["step"])] = record
            except (ValueError, KeyError, TypeError):
                continue
    return steps


def _replay_buffer_class() -> type:
    """verl's sync ``ReplayBuffer`` with the plan's dispatch policy (imported lazily: it needs TransferQueue)."""
    from verl.trainer.ppo.v1.replay_buffer import DAPO_FILTERED_REWARD_COUNTS_KEY, ReplayBuffer

    class PlanReplayBuffer(ReplayBuffer):
        """``ReplayBuffer.sample`` for the training partition in rounds that wait for every group (module doc).

        ``refill_fn(n)`` (the trainer's) draws up to ``n`` prompts of the current stage and returns how many it
        drew; ``draws()`` returns the step's ``StepDraws``. Validation is verl's own ``sample``.
        """

        def __init__(
            self, *, draws: Callable[[], StepDraws], max_refills: int | None, refill_fn: Callable[[int], int], **kw: Any
        ):
            super().__init__(refill_fn=refill_fn, **kw)
            self.draws = draws
            self.max_refills = max_refills

        def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[Any, dict]:
            if partition_id == "val":
                return super().sample(global_steps, partition_id, batch_size)
            step = self.draws()
            last_debug_time = time.time()
            while True:
                self._sync_metadata_from_transfer_queue()
                if self.pending_keys[partition_id] or self.running_keys[partition_id]:
                    last_debug_time = self._wait_for_next_poll(partition_id, last_debug_time)
                    continue
                reasons = self._terminal_eviction_reasons(global_steps, partition_id)
                kept = self._sampleable_terminal_keys(partition_id, reasons)
                wanted = refill_size(len(kept), batch_size, step.refills, self.max_refills)
                if wanted and self.refill_fn(wanted):
                    continue  # a refill was drawn (the trainer clips it to the stage): wait for its groups
                break
            dropped = step.in_draw_order(reasons[1])
            trained = step.in_draw_order(kept)[:batch_size]  # never more than B: refills ask for the missing
            if not trained:
                trained = dropped[:batch_size]
                step.unfiltered = True
            step.dropped = [step.positions[uid] for uid in dropped]
            step.trained = [step.positions[uid] for uid in trained]
            surplus = (set(kept) | set(dropped) | set(reasons[2])) - set(trained)
            metrics: dict[str, Any] = {}
            if surplus:
                self._clear_groups(partition_id, surplus)
                metrics["training/filter_groups/evicted_samples"] = len(surplus)
            if reasons[3]:
                metrics[DAPO_FILTERED_REWARD_COUNTS_KEY] = dict(reasons[3])
            snapshot = dict(self.partitions[partition_id])
            if not any(key.split("_")[0] in set(trained) for key in snapshot):
                raise RuntimeError("the step's groups have no trajectories (every rollout failed)")
            return self._materialize_batch(partition_id, trained, snapshot), metrics

    return PlanReplayBuffer


def plan_replay_buffer(**kwargs: Any) -> Any:
    """A ``PlanReplayBuffer`` (verl's ``ReplayBuffer`` keyword arguments plus ``draws`` and ``max_refills``)."""
    return _replay_buffer_class()(**kwargs)
