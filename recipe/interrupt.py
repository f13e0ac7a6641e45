"""Ctrl-C during training: the first press stops the run at the end of the current step, the second at once.

Either way Ray is shut down, no process the run started is left behind, and the command exits with status 130 and
one line naming the last checkpoint and saying that the same command resumes from it. SIGTERM (SLURM, ``timeout``)
is left to Ray's driver, as before.

Who gets the signal. Ctrl-C signals the terminal's foreground process group: the driver and the Ray processes it
started (gcs_server, raylet, dashboard, log monitor, agents). Ray starts those with SIGINT blocked
(``ray/_private/services.py``, ``start_ray_process``: ``pthread_sigmask(SIG_BLOCK, {SIGINT})``), a mask their own
children inherit, and Ray's workers (the TaskRunner, FSDP, rollout and reward workers, and the engine processes a
rollout server starts, such as vLLM's) run in process groups of their own. Only the driver acts on it, so:

- first press: the driver writes ``stop.request`` in ``trainer.default_local_dir``; the trainer mode
  (``recipe.trainer``) finishes the step, checkpoints it if ``trainer.save_freq`` did not, logs it, and returns
  from ``fit`` before the next step; verl's ``run_ppo`` returns.
- second press: ``KeyboardInterrupt`` in the driver's ``ray.get`` (``verl/trainer/main_ppo.py``, line 93); Ray is
  shut down mid-step. verl writes ``latest_checkpointed_iteration.txt`` after the step's folder, so the tracker
  still names a complete checkpoint (``repair_tracker`` covers the instant in which verl's write has emptied it).

On a cluster the request goes where the checkpoints go, a folder the node running the TaskRunner sees anyway.

>>> stop_line(Path("/runs/x"), 4, "auto")
'[rewardmap] stopped by Ctrl-C: the last checkpoint is /runs/x/global_step_4; the same command resumes from it.'
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

STOP_REQUEST_NAME = "stop.request"  # in trainer.default_local_dir; read by recipe.trainer at each step boundary
LATEST_CHECKPOINT = "latest_checkpointed_iteration.txt"  # verl's tracker, written after each checkpoint
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C
CHILD_EXIT_WAIT_S = 10.0  # after ray.shutdown, how long the run's processes get to exit before they are killed
ACKNOWLEDGED = (
    "\n[rewardmap] Ctrl-C: stopping at the end of the current step (it is checkpointed); "
    "press Ctrl-C again to stop now.\n"
)


def run_stoppable(train: Callable[[], None], checkpoint_dir: str | os.PathLike, *, resume_mode: str = "auto") -> None:
    """Run ``train`` (verl's ``run_ppo``) so that Ctrl-C stops it cleanly; returns when it completed.

    Args:
        train: runs the training to its end (Ray is initialised inside).
        checkpoint_dir: ``trainer.default_local_dir``, where the stop request goes and the tracker is read.
        resume_mode: ``trainer.resume_mode``, for the line that says how to resume.

    Raises:
        SystemExit: status 130 after a stop by Ctrl-C, once Ray is down and the line is printed.
    """
    folder = Path(os.path.abspath(os.path.expanduser(os.fspath(checkpoint_dir))))
    request = folder / STOP_REQUEST_NAME
    request.unlink(missing_ok=True)  # an earlier launch's request must not stop this one
    presses = 0

    def on_ctrl_c(signum: int, frame: FrameType | None) -> None:
        nonlocal presses
        presses += 1
        if presses > 1:
            raise KeyboardInterrupt
        folder.mkdir(parents=True, exist_ok=True)
        request.touch()
        os.write(sys.stdout.fileno(), ACKNOWLEDGED.encode())  # no buffered print inside a signal handler

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    forced = False
    try:
        train()
    except KeyboardInterrupt:
        forced = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the shutdown finish
        shut_down_ray()
        signal.signal(signal.SIGINT, previous)
    stopped = forced or (presses > 0 and not request.exists())  # the trainer removes the request when it stops
    request.unlink(missing_ok=True)
    if not stopped:
        return
    if forced:
        repair_tracker(folder)
    print(stop_line(folder, latest_step(folder), resume_mode), flush=True)
    raise SystemExit(EXIT_INTERRUPTED)


def exit_on_ctrl_c() -> None:
    """Outside training (data, tiny model, pre-flight, summary): Ctrl-C exits with one line, no traceback."""

    def on_ctrl_c(signum: int, frame: FrameType | None) -> None:
        print("\n[rewardmap] stopped by Ctrl-C while no training step was running.", flush=True)
        raise SystemExit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, on_ctrl_c)


def shut_down_ray() -> None:
    """``ray.shutdown()``, then wait for every process the driver started (Ray's and theirs) and kill the rest.

    ``ray.shutdown`` stops the local cluster's own processes; its workers follow when they notice, seconds later,
    and a worker's children (a vLLM engine) only if they watch their parent. The process tree is read first, while
    it still hangs together.
    """
    import psutil
    import ray

    children = psutil.Process().children(recursive=True)
    ray.shutdown()
    _, alive = psutil.wait_procs(children, timeout=CHILD_EXIT_WAIT_S)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=CHILD_EXIT_WAIT_S)


def latest_step(checkpoint_dir: str | os.PathLike) -> int | None:
    """The step verl's tracker names, or None (no tracker, or not a number)."""
    try:
        return int((Path(checkpoint_dir) / LATEST_CHECKPOINT).read_text().strip())
    except (OSError, ValueError):
        return None


def repair_tracker(checkpoint_dir: str | os.PathLike) -> int | None:
    """Rewrite verl's tracker when a kill left it empty; returns the step it names afterwards.

    verl opens the tracker with ``"w"`` and then writes the step (``verl/trainer/ppo/v1/trainer_base.py``, line
    1022), after the step's ``data.pt``, its last file: a kill in between leaves an empty tracker, on which verl's
    resume fails (``find_latest_ckpt_path``: ``int('')``). The step being written is then the newest folder with a
    ``data.pt``. A tracker that names a step, or no tracker, is left as it is.
    """
    folder = Path(checkpoint_dir)
    tracker = folder / LATEST_CHECKPOINT
    if not tracker.is_file() or latest_step(folder) is not None:
        return latest_step(folder)
    names = (d.name.removeprefix("global_step_") for d in folder.glob("global_step_*") if (d / "data.pt").is_file())
    steps = sorted(int(n) for n in names if n.isdigit())
    if not steps:
        tracker.unlink()
        return None
    tmp = tracker.with_name(tracker.name + ".tmp")
    tmp.write_text(str(steps[-1]))
    os.replace(tmp, tracker)
    return steps[-1]


def stop_line(checkpoint_dir: Path, step: int | None, resume_mode: str) -> str:
    """The one line printed after a stop: where the last checkpoint is and how to resume from it."""
    if not step:
        where = f"before the first checkpoint ({checkpoint_dir})"
        return f"[rewardmap] stopped by Ctrl-C {where}; the same command starts the run again."
    checkpoint = checkpoint_dir / f"global_step_{step}"
    if resume_mode == "auto":
        return f"[rewardmap] stopped by Ctrl-C: the last checkpoint is {checkpoint}; the same command resumes from it."
    return (
        f"[rewardmap] stopped by Ctrl-C: the last checkpoint is {checkpoint}; resume from it with the same command "
        f"and trainer.resume_mode=resume_path trainer.resume_from_path={checkpoint}."
    )
