"""Trainer mode ``rewardmap`` (``trainer.v1.trainer_mode=rewardmap``): verl's sync v1 trainer plus five hooks.

1. ``_compute_metrics`` (where verl assembles a step's metrics, just before logging them): adds
   ``recipe.step_metrics.reward_metrics`` of the step's samples, read from TransferQueue like verl's own metrics,
   and prints a line when the curriculum stage changes.
2. ``_save_checkpoint``: writes the stage-plan record (``recipe.plan_record.write_plan_record``) and the run's
   training choices (``recipe.run_name.write_run_record``) into ``global_step_N/`` before verl saves there, so
   they exist before ``latest_checkpointed_iteration.txt`` names the step.
3. ``_load_checkpoint``: first refuses a checkpoint written under other training choices
   (``recipe.run_name.check_resume``: preset, curriculum, reward mode, adapter, ...), before verl loads its
   weights; after verl restored ``global_step_N/data.pt`` (and set ``global_steps``), reshapes the
   dataloader state for the current ``data.dataloader_num_workers`` (``dataloader_state_for``: torchdata cannot
   load a state saved with another worker count) and checks that folder's record against the plan being trained
   (``check_plan_record``): resuming onto another plan would silently skip or repeat samples.
4. ``on_step_end`` (verl's hook after a step and its regular checkpoint): when ``save_now.request`` exists in
   ``trainer.default_local_dir``, saves a checkpoint now and removes the request. A cluster job about to reach its
   time limit writes it (launch/lib.sh, on SLURM's ``--signal``) and requeues once the checkpoint exists, so the
   next attempt loses no step; verl's v1 trainer itself only saves every ``trainer.save_freq`` steps.
5. ``_validate``: adds the benchmark's weighted accuracies (``reward_fns.benchmark.weighted_accuracies``, each a
   ratio of two of verl's averaged validation metrics) to verl's validation metrics.
6. Dynamic sampling (``algorithm.filter_groups.enable``, ``dynamic_sampling=on``; ``recipe.dynamic_sampling``):
   ``_build_replay_buffer`` installs ``PlanReplayBuffer``, ``prepare_step`` / ``_next_train_batch`` draw the
   step's prompts from the plan without crossing a stage's end, ``step`` logs what the step drew and ends the
   run when the plan is drawn, ``on_train_end`` saves and validates that last step, and ``_load_checkpoint``
   restores the plan position from the checkpoint's record.
7. ``on_step_begin`` / ``fit``: stop on request (Ctrl-C, ``recipe.interrupt``). When ``stop.request`` exists in
   ``trainer.default_local_dir``, the step in progress is finished and checkpointed (``on_step_end``, as for
   ``save_now.request``) and logged by verl; the next ``on_step_begin`` removes the request and ends ``fit``.
8. ``step`` / ``_save_checkpoint`` / ``on_train_begin``: the step's metrics kept with its checkpoint
   (``recipe.metrics_record``): verl saves a step before it logs it, so a run killed in between would never log
   it; a resumed run logs the record it finds pending. Test hook: with ``REWARDMAP_TEST_PAUSE_AFTER_SAVE=N`` in
   its environment the trainer waits right after step N's checkpoint, before verl logs the step, and says so in
   ``paused_after_save.test`` in ``trainer.default_local_dir`` (tests/test_interrupts_cpu.py stops it there).

The registry is per process and verl looks the mode up in its TaskRunner actor, so ``register_trainer_mode()`` is
called there (``recipe.task_runner.RewardMapTaskRunner``).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from typing import Any

import numpy as np
import transfer_queue as tq
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer

from recipe.dynamic_sampling import (
    DynamicSamplingError,
    DynamicSamplingSettings,
    PlanCursor,
    StepDraws,
    append_draw_log,
    plan_replay_buffer,
)
from recipe.interrupt import STOP_REQUEST_NAME
from recipe.metrics_record import mark_logged, read_pending, write_pending
from recipe.plan_record import (
    check_plan_record,
    dataloader_state_for,
    recorded_sampling_position,
    write_plan_record,
)
from recipe.run_name import check_resume, write_run_record
from recipe.step_metrics import PREFIX, reward_metrics, vision_token_ids, vision_tokens_sampled
from reward_fns.benchmark import weighted_accuracies

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

TRAINER_MODE = "rewardmap"
# Written into trainer.default_local_dir to ask for a checkpoint at the end of the current step (launch/lib.sh).
SAVE_REQUEST_NAME = "save_now.request"
METRIC_FIELDS = ["uid", "rm_scores", "extra_fields", "responses"]
# Tests only: the step after whose checkpoint the trainer waits (PAUSE_S), before verl logs it, and the file in
# trainer.default_local_dir that says it waits there; a test stops the run at that moment.
PAUSE_AFTER_SAVE_ENV = "REWARDMAP_TEST_PAUSE_AFTER_SAVE"
PAUSED_AFTER_SAVE_NAME = "paused_after_save.test"
PAUSE_S = 600


class StopRequested(Exception):
    """Raised at a step boundary when ``stop.request`` asks the run to stop; ``fit`` returns on it."""


class RewardMapTrainer(PPOTrainerSync):
    """The sync trainer with RewardMap's step metrics, stage logging and plan records on checkpoints."""

    # verl's base class branches on ``self.trainer_mode == "sync"`` (replay buffer, refill, checkpoints,
    # dispatch) and reads ``trainer.v1.<mode>``; this mode must behave as "sync" everywhere, so the
    # attribute the base sets from the config is pinned here. The configured name stays in registered_mode.
    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        self.registered_mode = value

    # -- metrics --------------------------------------------------------------------------------------------
    def _compute_metrics(self, batch: Any, metrics: dict, timing_raw: dict, global_steps: int, epoch: int) -> None:
        super()._compute_metrics(batch, metrics, timing_raw, global_steps, epoch)
        metrics.update(self.rewardmap_step_metrics(batch, global_steps))

    def rewardmap_step_metrics(self, batch: Any, global_steps: int) -> dict[str, float]:
        """RewardMap metrics of the step's (non-padding) samples; logs a stage change."""
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=METRIC_FIELDS)
        keep = [not tag.get("is_padding", False) for tag in batch.tags]
        uids = [uid for uid, k in zip(_as_list(data["uid"]), keep, strict=True) if k]
        scores = [float(s.sum()) for s, k in zip(_rows(data["rm_scores"]), keep, strict=True) if k]
        extra = [getattr(e, "data", e) for e, k in zip(_as_list(data["extra_fields"]), keep, strict=True) if k]
        infos_per_sample = [(e.get("reward_extra_info") or {}) if isinstance(e, dict) else {} for e in extra]
        keys = list(infos_per_sample[0]) if infos_per_sample else []
        infos = {key: np.array([info.get(key, np.nan) for info in infos_per_sample]) for key in keys}

        plan = self.stage_plan()
        metrics = reward_metrics((infos, np.array(scores), uids), stage_names=_stage_names(plan))
        responses = [r for r, k in zip(_rows(data["responses"]), keep, strict=True) if k]
        metrics[f"{PREFIX}/rollout/vision_tokens"] = float(
            vision_tokens_sampled(responses, vision_token_ids(self.tokenizer))
        )
        # With dynamic sampling steps do not follow the plan's step count: the stage is the batch's (one stage).
        self.log_stage_change(global_steps, metrics.get("rewardmap/stage"), plan, by_step=not self.sampling.enabled)
        return metrics

    def log_stage_change(
        self, global_steps: int, batch_stage: float | None, plan: Any, *, by_step: bool = True
    ) -> None:
        """Print (and log) the stage when it differs from the previous step's: the plan's for this step (unless
        ``by_step`` is false: dynamic sampling), else the batch's."""
        index = name = None
        if plan is not None and by_step:
            try:
                index, name = plan.stage_at_step(global_steps - 1)  # the plan counts steps from 0, verl from 1
            except IndexError:  # more steps than the plan (trainer.total_training_steps set larger)
                pass
        if index is None and batch_stage is not None:
            index = int(batch_stage)
            names = _stage_names(plan) or []
            name = names[index] if 0 <= index < len(names) else str(index)
        if index is not None and index != getattr(self, "_rewardmap_stage", None):
            message = f"[rewardmap] step {global_steps}: curriculum stage {index} ({name})"
            print(message, flush=True)
            logger.info(message)
            self._rewardmap_stage = index

    # -- checkpoint on request ------------------------------------------------------------------------------------
    def on_step_end(self) -> None:
        super().on_step_end()
        request = os.path.join(str(self.config.trainer.default_local_dir), SAVE_REQUEST_NAME)
        stopping = self.stop_requested()  # a stop checkpoints the step too, then waits for the step's log
        if not stopping and not os.path.exists(request):
            return
        save_freq = int(self.config.trainer.save_freq)
        saved_this_step = save_freq > 0 and (
            self.global_steps % save_freq == 0 or self.global_steps >= self.total_training_steps
        )
        if not saved_this_step:  # verl has just saved this step otherwise
            why = "stop requested" if stopping else f"checkpoint requested ({request})"
            message = f"[rewardmap] step {self.global_steps}: {why}, saving now"
            print(message, flush=True)
            logger.info(message)
            self._save_checkpoint()
        if os.path.exists(request):
            os.remove(request)

    # -- stop on request (Ctrl-C) ---------------------------------------------------------------------------------
    def fit(self, agent_loop_manager: Any) -> None:
        try:
            super().fit(agent_loop_manager)
        except StopRequested:
            self._shutdown_dump_executor()  # as verl does when fit ends
            return
        self.mark_step_logged(self.global_steps - 1)  # verl logs the last step, then returns

    def on_step_begin(self) -> None:
        super().on_step_begin()
        self._rewardmap_step_started = time.perf_counter()
        self.mark_step_logged(self.global_steps - 1)  # verl has just logged the previous step
        # Stop here only when the previous step is checkpointed (or nothing was trained yet); else the step runs,
        # and on_step_end checkpoints it.
        if self.stop_requested() and getattr(self, "_rewardmap_saved_step", 0) == self.global_steps - 1:
            request = os.path.join(str(self.config.trainer.default_local_dir), STOP_REQUEST_NAME)
            os.remove(request)  # tells the driver that the trainer stopped on it
            message = f"[rewardmap] stopping before step {self.global_steps}: stop requested ({request})"
            print(message, flush=True)
            logger.info(message)
            raise StopRequested(message)

    def stop_requested(self) -> bool:
        """Whether the driver asked the run to stop (``recipe.interrupt`` writes the request on Ctrl-C)."""
        return os.path.exists(os.path.join(str(self.config.trainer.default_local_dir), STOP_REQUEST_NAME))

    # -- step metrics kept with the checkpoint ------------------------------------------------------------------
    def step(self, metrics: dict, timing_raw: dict) -> Any:
        batch = super().step(metrics, timing_raw)
        if self.sampling.enabled:
            self.finish_sampling_step(metrics)  # recipe.dynamic_sampling: what the step drew
        self._rewardmap_step = (self.global_steps, batch, metrics, timing_raw)  # read by keep_step_metrics
        return batch

    def keep_step_metrics(self, folder: str) -> None:
        """Write the step's metrics, as verl will log them, into its checkpoint folder before verl saves it.

        Computed with ``_compute_metrics`` on copies (the step's data is in TransferQueue until the step is logged);
        ``timing_s/step`` is the time up to the save. A failure here is logged and never stops the checkpoint.
        """
        captured = getattr(self, "_rewardmap_step", None)
        if captured is None or captured[0] != self.global_steps:
            return
        _, batch, metrics, timing_raw = captured
        record = dict(metrics)
        timing = {**timing_raw, "step": time.perf_counter() - getattr(self, "_rewardmap_step_started", 0.0)}
        moe = getattr(self, "_rollout_moe_lb_metrics_accumulator", None)  # accumulates per call: use a copy
        try:
            if moe is not None:
                self._rollout_moe_lb_metrics_accumulator = copy.deepcopy(moe)
            epoch = (self.global_steps - 1) // self.steps_per_epoch
            self._compute_metrics(batch, record, timing, global_steps=self.global_steps, epoch=epoch)
            write_pending(folder, record)
        except Exception as err:  # the checkpoint matters more than its metrics record
            logger.warning(f"step {self.global_steps}: metrics not kept with the checkpoint: {err!r}")
        finally:
            if moe is not None:
                self._rollout_moe_lb_metrics_accumulator = moe

    def on_train_begin(self) -> None:
        super().on_train_begin()
        self.log_pending_step()

    def log_pending_step(self) -> None:
        """Log the resumed checkpoint's step if the run that saved it stopped before logging it (once)."""
        step = self.global_steps - 1  # fit has moved on to the first step to train
        if step <= 0:
            return
        folder = self.checkpoint_step_dir(step)
        record = read_pending(folder)
        if record is None:
            return
        message = f"[rewardmap] step {step}: logging its metrics from {folder} (the run that saved it stopped first)"
        print(message, flush=True)
        logger.info(message)
        numbers = {key: value for key, value in record.items() if isinstance(value, int | float)}  # as verl's scalars
        self.logger.log(data=numbers, step=step)
        mark_logged(folder)

    def mark_step_logged(self, step: int) -> None:
        if step > 0:
            mark_logged(self.checkpoint_step_dir(step))

    def checkpoint_step_dir(self, step: int) -> str:
        return os.path.join(str(self.config.trainer.default_local_dir), f"global_step_{step}")

    def after_save(self) -> None:
        """Remember the saved step (``on_step_begin`` stops only after one); the test hook ``PAUSE_AFTER_SAVE_ENV``."""
        self._rewardmap_saved_step = self.global_steps
        if os.environ.get(PAUSE_AFTER_SAVE_ENV) == str(self.global_steps):
            marker = os.path.join(str(self.config.trainer.default_local_dir), PAUSED_AFTER_SAVE_NAME)
            with open(marker, "w") as out:
                out.write(f"{self.global_steps}\n")
            time.sleep(PAUSE_S)

    # -- validation -----------------------------------------------------------------------------------------------
    def _validate(self) -> dict[str, float]:
        """verl's validation metrics plus the benchmark's weighted accuracies (``reward_fns.benchmark``): verl averages
        each key, and a weighted accuracy is a ratio of two of those means."""
        metrics = super()._validate()
        metrics.update(weighted_accuracies(metrics))
        return metrics

    # -- checkpoints ----------------------------------------------------------------------------------------
    def stage_plan(self) -> Any:
        """The training dataset's stage plan (``StagedRLHFDataset.plan``), or None for a plain dataset."""
        return getattr(getattr(self, "train_dataset", None), "plan", None)

    def _save_checkpoint(self) -> None:
        folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        plan = self.stage_plan()
        if plan is not None:
            write_plan_record(folder, plan, sampling=self.sampling_record())
        write_run_record(folder, self.config)  # the choices this run trains under (recipe.run_name)
        self.keep_step_metrics(folder)
        super()._save_checkpoint()
        self.after_save()

    def _load_checkpoint(self) -> None:
        check_resume(self.config)  # before verl loads another run's weights into this run's model
        super()._load_checkpoint()
        self._rewardmap_saved_step = self.global_steps  # the resumed step is checkpointed (0: fresh start)
        if not self.global_steps:
            return  # nothing resumed
        loader = getattr(self, "train_dataloader", None)
        if getattr(loader, "next_iter_state", None) is not None:  # verl restored data.pt into it
            loader.next_iter_state = dataloader_state_for(loader.next_iter_state, num_workers=loader.num_workers)
        # Raises on a different plan, on a staged run resuming a checkpoint without a record, and on a plain
        # run resuming a staged checkpoint; a plain run resuming a plain checkpoint passes.
        plan = self.stage_plan()
        check_plan_record(self.resumed_checkpoint_dir(), plan, missing_ok=plan is None)
        self.restore_sampling_position()

    def resumed_checkpoint_dir(self) -> str:
        """The ``global_step_N`` folder verl just resumed from (same resolution as verl's loader)."""
        trainer = self.config.trainer
        if trainer.resume_mode == "resume_path":
            folder = str(trainer.resume_from_path)
        else:
            folder = os.path.join(str(trainer.default_local_dir), f"global_step_{self.global_steps}")
        return folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)

    # -- dynamic sampling inside the stage plan (recipe.dynamic_sampling) -----------------------------------------
    @property
    def sampling(self) -> DynamicSamplingSettings:
        """Whether this run samples dynamically (verl's ``algorithm.filter_groups.enable``) and its knobs."""
        settings = getattr(self, "_sampling_settings", None)
        if settings is None:
            settings = self._sampling_settings = DynamicSamplingSettings.from_config(self.config)
        return settings

    @property
    def plan_cursor(self) -> PlanCursor:
        """Prompts drawn from the stage plan so far (restored from the checkpoint on resume)."""
        cursor = getattr(self, "_plan_cursor", None)
        if cursor is None:
            plan = self.stage_plan()
            if plan is None:
                raise DynamicSamplingError("dynamic sampling draws from the stage plan: set data.stages")
            cursor = self._plan_cursor = PlanCursor(plan)
        return cursor

    def _build_replay_buffer(self) -> Any:
        """verl's replay buffer, or with dynamic sampling the plan's (``PlanReplayBuffer``: verl's eviction, the
        plan's draws); called from verl's ``__init__``, before the dataset exists."""
        if not self.sampling.enabled:
            return super()._build_replay_buffer()
        sampler = self.config.trainer.v1.sampler
        if (sampler.get("custom_sampler") or {}).get("path"):
            raise ValueError("dynamic sampling brings its own replay buffer: unset trainer.v1.sampler.custom_sampler")
        if self.parameter_sync_step != 1:
            raise ValueError(
                "dynamic sampling draws one batch of kept groups per step: set trainer.v1.sync.parameter_sync_step=1"
            )
        limit = "no limit" if self.sampling.max_refills is None else f"at most {self.sampling.max_refills} per step"
        message = (
            f"[rewardmap] dynamic sampling: groups whose {self.sampling.metric!r} is equal across their rollouts are "
            f"dropped, refills ({limit}) come from the step's own stage"
        )
        print(message, flush=True)
        logger.info(message)
        return plan_replay_buffer(
            trainer_mode=self.trainer_mode,
            trainer_config=self.config.trainer.v1.get(self.trainer_mode, {}),
            max_off_policy_threshold=sampler.max_off_policy_threshold,
            max_off_policy_strategy=sampler.max_off_policy_strategy,
            sampler_kwargs=sampler.sampler_kwargs,
            refill_fn=self.refill_from_plan,
            filter_groups_metric=self._resolve_filter_groups_metric(),
            train_batch_size=self.config.data.train_batch_size,
            gen_batch_size=1,  # verl's _init_dataloader fetches single prompts when filter_groups is enabled
            sync_refill_failed_groups=bool(sampler.get("sync_refill_failed_groups", False)),
            draws=lambda: self.step_draws,
            max_refills=self.sampling.max_refills,
        )

    def prepare_step(self) -> dict:
        """Start the step's draws (dynamic sampling), then verl's first draw of the step."""
        if self.sampling.enabled:
            cursor = self.plan_cursor
            if cursor.done:
                raise DynamicSamplingError(f"step {self.global_steps}: every prompt of the stage plan is drawn")
            self.step_draws = StepDraws(self.global_steps, cursor.stage_index, int(self.config.data.train_batch_size))
        return super().prepare_step()

    def _next_train_batch(self, num_prompts: int | None = None) -> Any:
        """verl's next prompts; with dynamic sampling at most the current stage's rest, checked against the plan."""
        if not self.sampling.enabled:
            return super()._next_train_batch(num_prompts)
        cursor = self.plan_cursor
        wanted = self.config.data.train_batch_size if num_prompts is None else num_prompts
        count = cursor.take(wanted)
        if count == 0:
            raise DynamicSamplingError(f"step {self.global_steps}: no prompt left in the stage to draw")
        self.step_draws.stage_ran_out |= count < wanted
        batch = super()._next_train_batch(count)
        positions = [int(info["plan_index"]) for info in batch["extra_info"]]
        expected = list(range(cursor.position, cursor.position + count))
        if positions != expected:  # verl's restored dataloader and the checkpoint's record disagree
            raise DynamicSamplingError(
                f"step {self.global_steps}: the dataloader served plan positions {positions[:4]}... where the plan "
                f"record says {expected[:4]}...: the checkpoint's data.pt and stage_plan.json disagree"
            )
        self.step_draws.record([str(uid) for uid in batch["uid"]], positions)
        cursor.advance(count)
        return batch

    def refill_from_plan(self, wanted: int) -> int:
        """Draw up to ``wanted`` more prompts of the current stage for generation; returns how many (0: none left)."""
        count = self.plan_cursor.take(wanted, stage=self.step_draws.stage)
        self.step_draws.stage_ran_out |= count < wanted
        return self._add_prompts_to_generate(count) if count else 0

    def finish_sampling_step(self, metrics: dict) -> None:
        """Log what the step drew (metrics, ``dynamic_sampling.jsonl``); end the run once the plan is drawn."""
        draws, cursor = self.step_draws, self.plan_cursor
        metrics.update(draws.metrics(cursor))
        append_draw_log(str(self.config.trainer.default_local_dir), draws.log_record())
        if cursor.done and self.global_steps < self.total_training_steps:
            message = (
                f"[rewardmap] step {self.global_steps}: every prompt of the stage plan is drawn "
                f"({cursor.position}); training ends {self.total_training_steps - self.global_steps} steps before "
                f"the plan's {self.total_training_steps} (dynamic sampling refilled ahead)"
            )
            print(message, flush=True)
            logger.info(message)
            self.total_training_steps = self.global_steps  # verl's loop ends after this step, then on_train_end
            self._plan_ended_at = self.global_steps

    def on_train_end(self) -> None:
        """verl's hook; after a run that drew the whole plan before the plan's step count, save and validate its
        last step as verl does on the last step (verl only knows the last step before it starts)."""
        self._rewardmap_step = None  # verl logged every step of its loop: a save from here keeps no record
        super().on_train_end()
        last = getattr(self, "_plan_ended_at", None)
        if last is None:
            return
        trainer = self.config.trainer
        current, self.global_steps = self.global_steps, last
        try:
            saved = os.path.join(str(trainer.default_local_dir), f"global_step_{last}", "data.pt")
            if trainer.save_freq > 0 and not os.path.isfile(saved):
                self._save_checkpoint()
            if trainer.test_freq > 0 and last % trainer.test_freq != 0:
                self.on_validate_begin()
                val_metrics = self._validate()
                self.on_validate_end()
                self.logger.log(data=val_metrics, step=last)
        finally:
            self.global_steps = current

    def sampling_record(self) -> dict[str, Any]:
        """How far the run drew from the plan, for the checkpoint's plan record (``recipe.plan_record``)."""
        if self.sampling.enabled:
            return self.plan_cursor.record(dynamic=True)
        plan = self.stage_plan()
        steps = min(self.global_steps, plan.total_steps)
        return PlanCursor(plan, steps * plan.batch_size).record(dynamic=False)

    def restore_sampling_position(self) -> None:
        """After a resume: the plan position the checkpoint recorded; refuses a switch of dynamic sampling."""
        plan = self.stage_plan()
        if plan is None:
            return
        position = recorded_sampling_position(self.resumed_checkpoint_dir(), dynamic=self.sampling.enabled)
        if position is None:
            return
        self._plan_cursor = PlanCursor(plan, position)
        if self._plan_cursor.done:
            print(f"[rewardmap] step {self.global_steps}: the stage plan is drawn; nothing left to train", flush=True)
            self.total_training_steps = self.global_steps


def _as_list(values: Any) -> list[Any]:
    """A TransferQueue non-tensor field (numpy array, NonTensorStack or list) as a plain list."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _rows(values: Any) -> list[Any]:
    """Rows of a padded or jagged (nested) tensor."""
    return list(values.unbind(0)) if hasattr(values, "unbind") else list(values)


def _stage_names(plan: Any) -> list[str] | None:
    """Stage names by index from a plan (``plan.stages[i].name``), or None."""
    stages = getattr(plan, "stages", None)
    if not stages:
        return None
    names = [getattr(stage, "name", None) for stage in stages]
    return [str(name) for name in names] if all(names) else None


def register_trainer_mode() -> None:
    """Register ``RewardMapTrainer`` as verl's ``trainer.v1.trainer_mode=rewardmap`` in this process (idempotent)."""
    register_trainer(TRAINER_MODE)(RewardMapTrainer)
