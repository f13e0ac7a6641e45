"""Ctrl-C and a kill between a step's checkpoint and its log, on the CPU run, as a user meets them.

Each launch is the main command in a session of its own (``start_new_session``), as a terminal starts a job, and
signals go to its process group, as Ctrl-C sends them. One run folder, the plan's four steps, three launches:

1. Ctrl-C while step 2 runs: step 2 finishes and is checkpointed, exit 130, one line naming global_step_2, no
   traceback, no process of the run left.
2. The trainer paused right after step 3's checkpoint, before verl logs the step (the test hook
   ``REWARDMAP_TEST_PAUSE_AFTER_SAVE``), and Ctrl-C twice there: the second press stops the run at once, so step 3
   is checkpointed and never logged (as after a kill); exit 130, the line, no process left; its metrics wait in
   the checkpoint.
3. Resumed: step 3's metrics are logged, once; Ctrl-C while the last step is being checkpointed lets the run
   complete. Every step of the plan is logged exactly once across the launches' metrics files.

SIGTERM is left to Ray's driver (``tests/test_interrupt.py``, without Ray). Python runs a signal handler once for
signals that arrive before the main thread gets to it, so the test presses a second time after the first press is
acknowledged, as a user who reads the acknowledgement does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from recipe.cpu.run_summary import read_logged, read_steps, run_files
from recipe.interrupt import EXIT_INTERRUPTED, latest_step, stop_line
from recipe.metrics_record import read_pending
from recipe.trainer import PAUSE_AFTER_SAVE_ENV, PAUSED_AFTER_SAVE_NAME

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT_S = 900  # a hang guard: one launch took over 7 minutes on this 2-core machine under load
EXIT_TIMEOUT_S = 180  # from a signal to the command's exit: a step on a loaded machine, then Ray's shutdown


class Launch:
    """The CPU run started the way a terminal starts a job: its own session and process group."""

    def __init__(self, cache: Path, name: str, overrides: tuple[str, ...] = (), **env: str) -> None:
        self.log = cache / f"{name}.log"
        environment = {**os.environ, "REWARDMAP_CACHE": str(cache), "PYTHONPATH": str(ROOT), **env}
        environment.pop("RAY_ADDRESS", None)
        environment["CUDA_VISIBLE_DEVICES"] = ""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recipe.main_rewardmap", "--dry-run", *overrides],
            cwd=cache,
            env=environment,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        while not condition():
            assert self.process.poll() is None, f"exited {self.process.returncode} before {what}\n{self.tail()}"
            assert time.monotonic() < deadline, f"no {what} in {LAUNCH_TIMEOUT_S} s\n{self.tail()}"
            time.sleep(0.05)

    def press(self, sig: signal.Signals = signal.SIGINT) -> None:
        os.killpg(self.process.pid, sig)

    def finish(self, timeout_s: float = EXIT_TIMEOUT_S) -> tuple[int, str]:
        return self.process.wait(timeout=timeout_s), self.log.read_text()

    def processes(self) -> list[psutil.Process]:
        """Every live process of the launch's session (the driver's, Ray's, and the workers' own groups)."""
        found = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == self.process.pid and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (OSError, psutil.Error):
                continue
        return found

    def kill_leftovers(self) -> None:
        for process in self.processes():
            process.kill()

    def tail(self) -> str:
        return self.log.read_text()[-6000:]


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def training_records(run_dir: Path) -> Counter:
    """How many times each step's training metrics were logged, across the run's metrics files."""
    return Counter(step for _, step, data in read_logged(run_files(run_dir)) if "actor/pg_loss" in data)


def test_ctrl_c_and_a_stop_between_save_and_log_leave_a_run_that_logs_every_step(
    tmp_path: Path, shared_tiny_models: str
) -> None:
    run_dir = tmp_path / "cpu_dry_run" / "cpu_dry_run-fine_curriculum-fixed_reward"
    checkpoints = run_dir / "checkpoints"
    launches: list[Launch] = []

    def launch(name: str, **env: str) -> Launch:
        launches.append(Launch(tmp_path, name, (shared_tiny_models,), **env))
        return launches[-1]

    try:
        # 1. Ctrl-C while step 2 runs: step 2 finishes, is checkpointed and logged, then the run stops
        run = launch("ctrl-c")
        run.wait_for(lambda: 1 in read_steps(run_files(run_dir)), "step 1 logged")
        run.press()
        code, output = run.finish()
        assert code == EXIT_INTERRUPTED, f"exit {code}\n{output[-4000:]}"
        assert last_line(output) == stop_line(checkpoints, 2, "auto")
        assert "Traceback" not in output and "KeyboardInterrupt" not in output
        assert run.processes() == [], "processes of the run outlived its exit"
        assert latest_step(checkpoints) == 2 and sorted(training_records(run_dir)) == [1, 2]

        # 2. Ctrl-C twice while the trainer waits between step 3's checkpoint and its log: stops at once there
        run = launch("ctrl-c-twice-after-save", **{PAUSE_AFTER_SAVE_ENV: "3"})
        run.wait_for(lambda: (checkpoints / PAUSED_AFTER_SAVE_NAME).is_file(), "step 3 checkpointed, not yet logged")
        assert latest_step(checkpoints) == 3 and sorted(training_records(run_dir)) == [1, 2]
        run.press()
        run.wait_for(lambda: "press Ctrl-C again to stop now" in run.log.read_text(), "the first press acknowledged")
        run.press()
        code, output = run.finish()
        assert code == EXIT_INTERRUPTED, f"exit {code}\n{output[-4000:]}"
        assert last_line(output) == stop_line(checkpoints, 3, "auto")
        assert "Traceback" not in output and "KeyboardInterrupt" not in output
        assert run.processes() == [], "processes of the run outlived its exit"
        assert sorted(training_records(run_dir)) == [1, 2], "step 3 was never logged"
        assert read_pending(checkpoints / "global_step_3")["rewardmap/stage"] == 2.0  # counting_stops

        # 3. resumed: step 3 logged from its checkpoint, once; Ctrl-C while the last step is checkpointed lets the
        # run complete (exit 0, summary): every step of the plan logged exactly once across the launches
        run = launch("complete")
        run.wait_for(lambda: (checkpoints / "global_step_4").is_dir(), "the last step's checkpoint begun")
        run.press()
        code, output = run.finish(LAUNCH_TIMEOUT_S)
        assert code == 0, f"exit {code}\n{output[-4000:]}"
        assert "press Ctrl-C again to stop now" in output and "RewardMap dry run on CPU: summary" in output
        assert "step 3: logging its metrics from" in output
        assert latest_step(checkpoints) == 4
        assert training_records(run_dir) == {1: 1, 2: 1, 3: 1, 4: 1}
        assert read_pending(checkpoints / "global_step_4") is None
        assert not (checkpoints / "stop.request").exists()
    finally:
        for run in launches:
            if run.process.poll() is None:
                run.press(signal.SIGKILL)
            run.kill_leftovers()
