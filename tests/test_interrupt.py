"""Ctrl-C and kills, in pieces that need no Ray: the driver's handling (``recipe.interrupt``, in a subprocess that
signals itself), verl's tracker repaired after a kill, and the trainer mode's stop at a step boundary and step
metrics kept with each checkpoint (``recipe.trainer``, ``recipe.metrics_record``). The whole run under real
signals is ``tests/test_interrupts_cpu.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from recipe.interrupt import LATEST_CHECKPOINT, STOP_REQUEST_NAME, repair_tracker, stop_line
from recipe.metrics_record import LOGGED_NAME, PENDING_NAME, read_pending, write_pending

ROOT = Path(__file__).resolve().parents[1]

# A driver whose "training" plays the trainer's part: it presses Ctrl-C on itself, then acts as SCENARIO says.
DRIVER = """
import os, signal, sys, time
from pathlib import Path
from recipe.interrupt import run_stoppable
folder, scenario = Path(sys.argv[1]), sys.argv[2]
request = folder / "stop.request"

def train():
    if scenario == "sigterm":  # SLURM's or timeout's signal reaches training as before: nothing of the recipe's
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    os.kill(os.getpid(), signal.SIGINT)
    deadline = time.time() + 30
    while not request.exists() and time.time() < deadline:
        time.sleep(0.01)
    print("request seen:", request.exists(), flush=True)
    if scenario == "stops":  # the trainer finishes the step, checkpoints it and removes the request
        (folder / "global_step_2").mkdir()
        (folder / "latest_checkpointed_iteration.txt").write_text("2")
        request.unlink()
    elif scenario == "press twice":  # killed while verl rewrote the tracker: empty, step 3 complete
        (folder / "global_step_3").mkdir()
        (folder / "global_step_3" / "data.pt").write_text("")
        (folder / "latest_checkpointed_iteration.txt").write_text("")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)
    # "completes": the run ended before the trainer looked at the request

run_stoppable(train, folder)
print("completed", flush=True)
"""


def drive(folder: Path, scenario: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", DRIVER, str(folder), scenario]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_first_ctrl_c_asks_the_trainer_and_exits_130_with_one_line(tmp_path: Path) -> None:
    (tmp_path / STOP_REQUEST_NAME).write_text("")  # left by an earlier launch: must not stop this one at once
    done = drive(tmp_path, "stops")
    assert done.returncode == 130, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "request seen: True" in lines
    assert "Ctrl-C: stopping at the end of the current step" in done.stdout
    assert lines[-1] == stop_line(tmp_path, 2, "auto")
    assert "the same command resumes from it" in lines[-1] and str(tmp_path / "global_step_2") in lines[-1]
    assert "Traceback" not in done.stdout + done.stderr and "completed" not in done.stdout
    assert not (tmp_path / STOP_REQUEST_NAME).exists()


def test_a_run_that_completed_before_the_trainer_saw_the_request_exits_0(tmp_path: Path) -> None:
    done = drive(tmp_path, "completes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "completed"
    assert not (tmp_path / STOP_REQUEST_NAME).exists()


def test_second_ctrl_c_stops_at_once_and_leaves_a_tracker_verl_can_read(tmp_path: Path) -> None:
    done = drive(tmp_path, "press twice")
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stdout + done.stderr and "completed" not in done.stdout
    assert (tmp_path / LATEST_CHECKPOINT).read_text() == "3"
    assert done.stdout.strip().splitlines()[-1] == stop_line(tmp_path, 3, "auto")


def test_sigterm_is_left_alone(tmp_path: Path) -> None:
    """Ray's driver handles SIGTERM once ``ray.init`` ran; the recipe adds nothing: here, the default kills it."""
    done = drive(tmp_path, "sigterm")
    assert done.returncode == -signal.SIGTERM, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == "" and not (tmp_path / STOP_REQUEST_NAME).exists()


def test_tracker_repair_touches_only_an_empty_tracker(tmp_path: Path) -> None:
    assert repair_tracker(tmp_path) is None and not (tmp_path / LATEST_CHECKPOINT).exists()  # no tracker: none made
    for step, complete in ((1, True), (2, True), (3, False)):  # step 3: killed before its data.pt
        (tmp_path / f"global_step_{step}").mkdir()
        if complete:
            (tmp_path / f"global_step_{step}" / "data.pt").write_text("")
    tracker = tmp_path / LATEST_CHECKPOINT
    tracker.write_text("1")
    assert repair_tracker(tmp_path) == 1 and tracker.read_text() == "1"
    tracker.write_text("")
    assert repair_tracker(tmp_path) == 2 and tracker.read_text() == "2"


def test_stop_line_says_how_to_resume() -> None:
    assert stop_line(Path("/c"), None, "auto").endswith("the same command starts the run again.")
    assert "trainer.resume_from_path=/c/global_step_5" in stop_line(Path("/c"), 5, "disable")


# -- the trainer mode ---------------------------------------------------------------------------------------------


def bare_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, saved: int, step: int):
    """A RewardMapTrainer without verl's __init__: a config, a logger that records, verl's own hooks silenced."""
    from verl.trainer.ppo.v1 import PPOTrainer, PPOTrainerSync

    from recipe.trainer import RewardMapTrainer

    monkeypatch.setattr(PPOTrainerSync, "on_step_end", lambda self: None)  # verl's weight sync
    monkeypatch.setattr(PPOTrainer, "_save_checkpoint", lambda self: self.saves.append(self.global_steps))
    trainer = RewardMapTrainer.__new__(RewardMapTrainer)
    trainer.config = OmegaConf.create(
        {"trainer": {"default_local_dir": str(tmp_path), "save_freq": 10, "resume_mode": "auto"}}
    )
    trainer.train_dataset = SimpleNamespace()
    trainer.global_steps, trainer.total_training_steps, trainer.steps_per_epoch = step, 20, 20
    trainer.saves, trainer.logged = [], []
    trainer.logger = SimpleNamespace(log=lambda data, step: trainer.logged.append((step, data)))
    trainer._rewardmap_saved_step = saved
    return trainer


def test_a_stop_request_finishes_and_checkpoints_the_step_then_stops_before_the_next(tmp_path, monkeypatch) -> None:
    from recipe.trainer import StopRequested

    trainer = bare_trainer(tmp_path, monkeypatch, saved=0, step=3)
    trainer.on_step_begin()  # no request: step 3 runs
    (tmp_path / STOP_REQUEST_NAME).write_text("")
    trainer.on_step_end()  # save_freq 10 did not save step 3: the stop saves it
    assert trainer.saves == [3] and (tmp_path / STOP_REQUEST_NAME).exists(), "the request waits for the step's log"
    trainer.global_steps = 4  # verl logged step 3 and moves on
    with pytest.raises(StopRequested):
        trainer.on_step_begin()
    assert not (tmp_path / STOP_REQUEST_NAME).exists(), "removed: the driver reads that the trainer stopped"


def test_a_stop_request_between_steps_without_a_checkpoint_runs_one_more_step(tmp_path, monkeypatch) -> None:
    """Asked to stop after step 3 ended unsaved (during its validation or log): step 4 runs and is checkpointed."""
    from recipe.trainer import StopRequested

    trainer = bare_trainer(tmp_path, monkeypatch, saved=2, step=4)
    (tmp_path / STOP_REQUEST_NAME).write_text("")
    trainer.on_step_begin()  # step 3 is not checkpointed: stopping now would lose it
    trainer.on_step_end()
    assert trainer.saves == [4]
    trainer.global_steps = 5
    with pytest.raises(StopRequested):
        trainer.on_step_begin()


def test_fit_returns_when_a_stop_is_requested(tmp_path, monkeypatch) -> None:
    from verl.trainer.ppo.v1 import PPOTrainer

    from recipe.trainer import StopRequested

    trainer = bare_trainer(tmp_path, monkeypatch, saved=2, step=3)
    shut = []
    trainer._shutdown_dump_executor = lambda: shut.append(True)
    monkeypatch.setattr(PPOTrainer, "fit", lambda self, manager: (_ for _ in ()).throw(StopRequested("stop")))
    trainer.fit(None)
    assert shut == [True]


def test_the_step_metrics_reach_the_checkpoint_before_verl_saves_it(tmp_path, monkeypatch) -> None:
    from verl.trainer.ppo.v1 import PPOTrainer

    from recipe.trainer import RewardMapTrainer

    trainer = bare_trainer(tmp_path, monkeypatch, saved=2, step=3)
    folder = tmp_path / "global_step_3"
    seen = []
    monkeypatch.setattr(PPOTrainer, "_save_checkpoint", lambda self: seen.append(read_pending(folder)))
    monkeypatch.setattr(PPOTrainer, "step", lambda self, metrics, timing: metrics.update({"actor/pg_loss": 0.5}))

    def compute(self, batch, metrics, timing_raw, global_steps, epoch):
        metrics.update({"rewardmap/stage": 1.0, "timing_s/step": timing_raw["step"], "training/epoch": epoch})

    monkeypatch.setattr(RewardMapTrainer, "_compute_metrics", compute)
    trainer.on_step_begin()
    metrics: dict = {}
    trainer.step(metrics, {"gen": 1.0})
    trainer._save_checkpoint()
    [record] = seen
    assert record["actor/pg_loss"] == 0.5 and record["rewardmap/stage"] == 1.0 and record["training/epoch"] == 0
    assert record["timing_s/step"] >= 0.0
    assert metrics == {"actor/pg_loss": 0.5}, "verl's own metrics of the step are left as they were"
    assert trainer._rewardmap_saved_step == 3

    trainer.global_steps = 4
    trainer.on_step_begin()  # verl logged step 3 before step 4 began
    assert not (folder / PENDING_NAME).exists() and json.loads((folder / LOGGED_NAME).read_text()) == record


def test_a_resumed_run_logs_a_pending_step_once(tmp_path, monkeypatch) -> None:
    write_pending(tmp_path / "global_step_4", {"actor/pg_loss": 0.25, "rewardmap/stage": 3.0})
    trainer = bare_trainer(tmp_path, monkeypatch, saved=4, step=5)  # fit has moved on to step 5
    trainer.on_train_begin()
    trainer.on_train_begin()
    assert trainer.logged == [(4, {"actor/pg_loss": 0.25, "rewardmap/stage": 3.0})]
    write_pending(tmp_path / "global_step_2", {"actor/pg_loss": 1.0})
    bare_trainer(tmp_path, monkeypatch, saved=4, step=5).on_train_begin()  # only the resumed step can be pending
    assert read_pending(tmp_path / "global_step_2") is not None


def test_the_pause_hook_waits_only_after_its_steps_checkpoint(tmp_path, monkeypatch) -> None:
    import recipe.trainer as trainer_module
    from recipe.trainer import PAUSE_AFTER_SAVE_ENV, PAUSE_S, PAUSED_AFTER_SAVE_NAME

    waits = []
    monkeypatch.setattr(trainer_module.time, "sleep", waits.append)
    monkeypatch.setenv(PAUSE_AFTER_SAVE_ENV, "3")
    trainer = bare_trainer(tmp_path, monkeypatch, saved=1, step=2)
    trainer._save_checkpoint()
    assert waits == [] and not (tmp_path / PAUSED_AFTER_SAVE_NAME).exists()
    trainer.global_steps = 3
    trainer._save_checkpoint()
    assert trainer.saves == [2, 3], "it waits after verl's save"
    assert waits == [PAUSE_S] and (tmp_path / PAUSED_AFTER_SAVE_NAME).read_text() == "3\n"


def test_a_complete_dry_run_logs_its_last_pending_step_to_the_metrics_files(tmp_path: Path) -> None:
    """The plan is complete, so no trainer starts: the dry run writes the pending step where its file logger does."""
    from recipe.cpu.dry_run import ResumePoint, log_pending_step
    from recipe.cpu.run_summary import read_steps, run_files

    checkpoints, run_dir = tmp_path / "checkpoints", tmp_path / "run"
    write_pending(checkpoints / "global_step_4", {"rewardmap/stage": 3.0, "actor/pg_loss": 0.125})
    point = ResumePoint(checkpoints, 4, 4, ["torf", "counting", "counting_stops", "planning"])
    log_pending_step(point, run_dir)
    log_pending_step(point, run_dir)  # once
    [file] = run_files(run_dir)
    assert read_steps([file])[4].pg_loss == 0.125 and read_steps([file])[4].stage == 3
    assert read_pending(checkpoints / "global_step_4") is None
