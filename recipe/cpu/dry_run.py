"""The dry run (configs/dry_run/cpu.yaml): verl's real trainer on CPU with a tiny model, then its summary
(``recipe.cpu.run_summary``).

``python -m recipe.main_rewardmap`` selects it on a machine without CUDA (and ``--dry-run`` anywhere). The entry
point calls ``prepare_dry_run`` before the pre-flight (which loads the tiny model's processor) and ``run_dry_run``
after it. A second launch resumes from the run's latest checkpoint (verl's ``trainer.resume_mode=auto``); when the
plan is already complete it says so instead of training.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from recipe.cpu import CPU_ENV
from recipe.cpu.peak_memory import PeakMemory
from recipe.cpu.run_summary import WEIGHT_SYNC_LOG, metrics_file, read_steps, render_summary, run_files
from recipe.cpu.weight_sync import WEIGHT_SYNC_LOG_ENV
from recipe.interrupt import latest_step, run_stoppable
from recipe.metrics_record import mark_logged, read_pending


def announce(reason: str) -> None:
    """Say plainly, before anything runs, what this launch is."""
    print(
        f"[rewardmap] {reason}: a CPU dry run of the whole training loop (verl's trainer, Ray workers, FSDP2 actor "
        "and reference, a transformers rollout server, the recipe's curriculum, reward manager and estimator) with "
        "a tiny model built on this machine. It checks the loop; it trains nothing useful.",
        flush=True,
    )


def prepare_dry_run(config: DictConfig) -> None:
    """Build (or reuse) the warm-started tiny model and point the run at it, then check that its samples reach
    every reward component (``recipe.cpu.warm_start``); any other model path is used as is.

    The model lives in a folder under ``rewardmap.cpu_run.tiny_model_dir`` named by everything that shapes it, so
    every curriculum and reward mode over the same data starts from the same weights.
    """
    from recipe.cpu.warm_start import WarmStartSettings, precheck_rows, prepare_tiny_model, reachability

    settings = config.rewardmap.cpu_run
    model_root = Path(os.path.expanduser(str(settings.tiny_model_dir)))
    if Path(os.path.expanduser(str(config.actor_rollout_ref.model.path))) != model_root:
        return
    start = time.monotonic()
    model_dir, built, rows = prepare_tiny_model(
        WarmStartSettings.from_config(config),
        model_root=model_root,
        data_dir=str(config.rewardmap.data_dir),
        cache_dir=str(config.rewardmap.cache_dir),
    )
    with open_dict(config):
        config.actor_rollout_ref.model.path = str(model_dir)
    how = (
        f"built and warm-started on {rows} questions of held-out cities in {time.monotonic() - start:.0f} s"
        if built
        else "cached"
    )
    print(f"[rewardmap] tiny Qwen2.5-VL at {model_dir} ({how})", flush=True)

    check = settings.precheck
    if int(check.prompts) <= 0:
        return
    stage_files = [f for stage in config.data.stages for f in stage.files]
    found = reachability(
        model_dir,
        precheck_rows(stage_files, int(check.prompts)),
        samples=int(config.actor_rollout_ref.rollout.n),
        temperature=float(config.actor_rollout_ref.rollout.temperature),
        max_new_tokens=int(config.data.max_response_length),
    )
    print(f"[rewardmap] {found.line()}", flush=True)
    problems = found.problems()
    if problems:
        message = f"the tiny model cannot earn every reward component at step 0: {'; '.join(problems)}"
        if str(check.on_failure) == "fail":
            raise SystemExit(f"[rewardmap] {message} (rewardmap.cpu_run.warm_start sets its warm start)")
        print(f"[rewardmap] WARNING: {message}; GRPO gets no signal for it", flush=True)


def external_modules(configured: str | None, cpu_env: dict[str, str]) -> str:
    """``VERL_USE_EXTERNAL_MODULES`` for a CPU run: the configured modules, then the CPU package's."""
    names = [m for m in (configured or "").split(",") if m]
    names += [m for m in cpu_env["VERL_USE_EXTERNAL_MODULES"].split(",") if m not in names]
    return ",".join(names)


@dataclass(frozen=True)
class ResumePoint:
    """Where a launch starts: the run's latest checkpointed step (0: none) and the steps the run trains."""

    checkpoint_dir: Path
    last_step: int
    total_steps: int  # at most this many under dynamic sampling, which ends the run once the plan is drawn
    stage_names: list[str]
    plan_drawn: bool = False  # the last checkpoint's sampling record says every prompt of the plan was drawn

    @property
    def complete(self) -> bool:
        return self.plan_drawn or self.last_step >= self.total_steps


def resume_point(config: DictConfig) -> ResumePoint:
    """Read the run's checkpoint tracker and the plan's length (or ``trainer.total_training_steps`` when set)."""
    from recipe.stages import plan_from_data_config

    plan = plan_from_data_config(config.data)
    total = config.trainer.get("total_training_steps") or plan.total_steps
    folder = Path(os.path.expanduser(str(config.trainer.default_local_dir)))
    last = (latest_step(folder) or 0) if config.trainer.resume_mode == "auto" else 0
    drawn = bool(last) and plan_drawn(folder / f"global_step_{last}")
    total = last if drawn else int(total)  # dynamic sampling drew the plan in fewer steps: those are the run's
    return ResumePoint(folder, last, total, [stage.name for stage in plan.stages], drawn)


def plan_drawn(step_dir: Path) -> bool:
    """Whether a checkpoint's plan record (``recipe.plan_record``) says the run drew every prompt of the plan.

    Only dynamic sampling (``recipe.dynamic_sampling``) ends a run before the plan's step count; its record says
    so in ``sampling.complete``. An unreadable or missing record counts as not drawn (verl's resume reports it).
    """
    import json

    from recipe.plan_record import PLAN_RECORD_NAME

    try:
        sampling = json.loads((step_dir / PLAN_RECORD_NAME).read_text()).get("sampling") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return bool(sampling.get("dynamic")) and sampling.get("complete") is True


def run_dry_run(config: DictConfig, task_runner_class: Any) -> None:
    """Train (or resume) the dry run with verl's ``run_ppo``, then print the summary."""
    import psutil
    import ray
    from verl.trainer.main_ppo import run_ppo

    started = psutil.Process().create_time()  # wall time counts from the command's start, imports included

    point = resume_point(config)
    run_dir = Path(os.path.expanduser(str(config.rewardmap.cpu_run.run_dir)))
    drawn = " (dynamic sampling drew every prompt of the plan)" if point.plan_drawn else ""
    at_most = ""
    if (config.algorithm.get("filter_groups") or {}).get("enable"):
        at_most = " at most (dynamic sampling ends the run once every prompt of the plan is drawn)"
    if point.complete:
        print(
            f"[rewardmap] the dry run's plan is already complete: {point.total_steps} steps{drawn}, checkpoint "
            f"{point.checkpoint_dir / f'global_step_{point.last_step}'}. Nothing to train. To start it fresh, delete "
            f"{run_dir} (or give another trainer.default_local_dir).",
            flush=True,
        )
        log_pending_step(point, run_dir)
        print(render_summary(config, point, run_files(run_dir), set(), started, None), flush=True)
        return
    if point.last_step:
        print(
            f"[rewardmap] resuming the dry run from {point.checkpoint_dir / f'global_step_{point.last_step}'}: "
            f"steps {point.last_step + 1}-{point.total_steps} of {point.total_steps}{at_most}",
            flush=True,
        )
    else:
        print(
            f"[rewardmap] dry run: {point.total_steps} steps{at_most}, checkpoints in {point.checkpoint_dir}",
            flush=True,
        )

    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = metrics_file(run_dir)
    with open_dict(config):
        runtime_env = config.ray_kwargs.ray_init.runtime_env
        env = dict(runtime_env.get("env_vars") or {})
        env.update(
            CPU_ENV,
            VERL_USE_EXTERNAL_MODULES=external_modules(env.get("VERL_USE_EXTERNAL_MODULES"), CPU_ENV),
            VERL_FILE_LOGGER_PATH=str(metrics),
            **{WEIGHT_SYNC_LOG_ENV: str(run_dir / WEIGHT_SYNC_LOG)},
        )
        runtime_env.env_vars = env
    with PeakMemory() as memory, _ray_can_count_logical_gpus():
        try:
            run_stoppable(
                lambda: run_ppo(config, task_runner_class=task_runner_class),
                point.checkpoint_dir,
                resume_mode=str(config.trainer.resume_mode),
            )
        finally:
            ray.shutdown()
    files = run_files(run_dir) if point.last_step else [metrics]
    this_launch = {step for step in read_steps([metrics]) if step > point.last_step}  # not a step it only logged
    print(render_summary(config, resume_point(config), files, this_launch, started, memory), flush=True)


def log_pending_step(point: ResumePoint, run_dir: Path) -> None:
    """Log the last checkpoint's step into a new metrics file when the launch that saved it was killed first.

    A launch that trains does this in the trainer mode (``recipe.trainer``, ``log_pending_step``); a complete plan
    starts no trainer, so here the step goes where the dry run's only file logger writes (one JSON line, verl's
    ``FileLogger`` format).
    """
    import json

    step_dir = point.checkpoint_dir / f"global_step_{point.last_step}"
    record = read_pending(step_dir)
    if record is None:
        return
    metrics_file(run_dir).write_text(json.dumps({"step": point.last_step, "data": record}) + "\n")
    mark_logged(step_dir)
    print(f"[rewardmap] step {point.last_step}: logged its metrics from {step_dir} (its launch stopped first)")


@contextmanager
def _ray_can_count_logical_gpus() -> Iterator[None]:
    """Let Ray start with the config's logical GPU while the driver's ``CUDA_VISIBLE_DEVICES`` is empty.

    Ray refuses ``num_gpus=1`` when ``CUDA_VISIBLE_DEVICES`` lists none; the variable is set aside for ``ray.init``
    (the Ray workers get ``CUDA_VISIBLE_DEVICES=""`` from ``CPU_ENV`` in the runtime env) and restored after.
    """
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and not hidden.strip():
        del os.environ["CUDA_VISIBLE_DEVICES"]
    try:
        yield
    finally:
        if hidden is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = hidden
