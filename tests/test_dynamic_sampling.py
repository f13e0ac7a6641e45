"""Dynamic sampling inside the stage plan (``recipe.dynamic_sampling``), without Ray: the arithmetic, and the
trainer mode's real draw and sample code driven step by step against an in-memory TransferQueue.

The harness (``Harness``) is the part of verl's v1 loop that decides what a step trains: ``prepare_step``, the
replay buffer's ``sample`` with its refills, the step's end, and ``global_step_N`` checkpoints made of verl's
StatefulDataLoader state (``data.pt``) and the plan record. Rollouts are replaced by a reward that is a pure
function of (plan position, rollout): the groups of positions in ``NO_SIGNAL`` get equal rewards. So what each
step draws is determined, and a resumed run can be compared step by step with an uninterrupted one.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset, SequentialSampler
from torchdata.stateful_dataloader import StatefulDataLoader
from verl.trainer.ppo.v1 import replay_buffer as verl_replay_buffer
from verl.utils.dataset.rl_dataset import collate_fn

from recipe.dynamic_sampling import (
    DynamicSamplingError,
    DynamicSamplingSettings,
    PlanCursor,
    read_draw_log,
    refill_size,
)
from recipe.plan_record import StagePlanMismatchError, recorded_sampling_position, write_plan_record
from recipe.stages import build_plan
from recipe.trainer import RewardMapTrainer

BATCH, ROLLOUTS = 4, 3
ROWS = {"torf": 12, "counting": 8, "planning": 8}  # 3, 2 and 2 plan steps of 4 prompts
NO_SIGNAL = {1, 2, 5, 9, 10, 11, 13, 18, 19, 20, 22, 23, 25}  # plan positions whose groups have equal rewards


def stage_plan(rows: dict[str, int] = ROWS):
    stages = [{"name": name, "files": [name], "epochs": 1, "shuffle": True} for name in rows]
    return build_plan(stages, batch_size=BATCH, seed=5, count_rows=rows.__getitem__)


# -- arithmetic ------------------------------------------------------------------------------------------------


def test_the_cursor_never_draws_past_the_end_of_its_stage() -> None:
    plan = stage_plan()
    cursor = PlanCursor(plan)
    assert [cursor.stage_range(s.index) for s in plan.stages] == [(0, 12), (12, 20), (20, 28)]
    cursor.advance(10)
    assert (cursor.stage_index, cursor.available(), cursor.take(4)) == (0, 2, 2)
    with pytest.raises(DynamicSamplingError, match="cross the end of stage 'torf'"):
        cursor.advance(3)
    cursor.advance(2)  # the stage's last prompts: the next draw is the next stage's
    assert (cursor.stage_index, cursor.available(), cursor.take(9), cursor.take(4, stage=0)) == (1, 8, 8, 0)
    assert cursor.consumed() == [("torf", 12, 12), ("counting", 0, 8), ("planning", 0, 8)]
    cursor.advance(8)
    cursor.advance(8)
    assert cursor.done and cursor.available() == 0 and cursor.take(4) == 0
    assert cursor.record(dynamic=True)["complete"] is True
    with pytest.raises(DynamicSamplingError, match="outside 0..28"):
        PlanCursor(plan, 29)


@pytest.mark.parametrize(
    ("kept", "refills", "max_refills", "wanted"),
    [(0, 0, 2, 4), (3, 0, 2, 1), (4, 0, 2, 0), (1, 2, 2, 0), (1, 9, None, 3), (2, 0, 0, 0)],
)
def test_a_refill_asks_for_exactly_the_missing_groups(kept: int, refills: int, max_refills: Any, wanted: int) -> None:
    assert refill_size(kept, BATCH, refills, max_refills) == wanted


def test_settings_come_from_verls_switch_and_the_recipes_knob() -> None:
    off = OmegaConf.create({"algorithm": {"filter_groups": {"enable": False, "metric": "reward"}}})
    assert DynamicSamplingSettings.from_config(off) == DynamicSamplingSettings(enabled=False)
    on = OmegaConf.create(
        {"algorithm": {"filter_groups": {"enable": True, "metric": "acc"}}, "rewardmap": {"dynamic_sampling": {}}}
    )
    assert DynamicSamplingSettings.from_config(on) == DynamicSamplingSettings(True, "acc", None)
    on.rewardmap.dynamic_sampling.max_refills = -1
    with pytest.raises(ValueError, match="max_refills"):
        DynamicSamplingSettings.from_config(on)


@pytest.mark.parametrize("experiment", [None, "rewardmap", "rl_baseline"])
def test_the_config_group_switches_verls_filter_on_and_is_off_by_default(experiment: str | None) -> None:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from recipe.advantage import register_estimator

    register_estimator()  # the estimator of reward_mode=fixed, as in the task runner
    from tests.fixtures.configs import compose_config

    rows = [f"+experiment={experiment}"] if experiment else []
    assert not compose_config(*rows).algorithm.filter_groups.enable
    assert not compose_config(*rows, "dynamic_sampling=off").algorithm.filter_groups.enable
    on = compose_config(*rows, "dynamic_sampling=on")
    validate_config(config=on, use_reference_policy=need_reference_policy(on), use_critic=need_critic(on))
    assert DynamicSamplingSettings.from_config(on) == DynamicSamplingSettings(True, "reward", 4)
    tuned = compose_config(*rows, "dynamic_sampling=on", "rewardmap.dynamic_sampling.max_refills=null")
    assert DynamicSamplingSettings.from_config(tuned).max_refills is None


# -- the trainer mode's draws, step by step --------------------------------------------------------------------


class PlanRows(Dataset):
    """verl-shaped rows of a plan, in plan order (what StagedRLHFDataset serves), with ``plan_index``."""

    def __init__(self, plan: Any) -> None:
        self.plan = plan

    def __len__(self) -> int:
        return self.plan.num_samples

    def __getitem__(self, item: int) -> dict:
        stage, name = self.plan.stage_of_sample(item)
        info = {"plan_index": item, "plan_stage": stage, "plan_stage_name": name}
        return {"raw_prompt": [{"role": "user", "content": f"q{item}"}], "data_source": "t", "extra_info": info}


class FakeTransferQueue:
    """The TransferQueue calls verl's replay buffer makes, in memory; every group finishes at once, its rewards
    from ``reward`` (trajectory tags carry the plan position, so a test can read what a batch holds)."""

    def __init__(self, no_signal: set[int] = NO_SIGNAL) -> None:
        self.no_signal = no_signal
        self.tags: dict[str, dict[str, dict]] = defaultdict(dict)
        self.scores: dict[str, torch.Tensor] = {}

    def kv_list(self, partition_id: str | None = None) -> dict:
        return {p: dict(items) for p, items in self.tags.items() if partition_id in (None, p)}

    def kv_clear(self, keys: list[str], partition_id: str) -> None:
        for key in keys:
            self.tags[partition_id].pop(key, None)
            self.scores.pop(key, None)

    def kv_batch_get(self, keys: list[str], partition_id: str, select_fields: list[str]) -> dict:
        assert select_fields == ["rm_scores"]
        return {"rm_scores": [self.scores[key] for key in keys]}

    def roll_out(self, batch: Any, global_steps: int) -> int:
        """Finish every prompt of ``batch`` with ROLLOUTS trajectories."""
        for uid, info in zip(batch["uid"], batch["extra_info"], strict=True):
            position = info["plan_index"]
            self.tags["train"][uid] = {"is_prompt": True, "status": "finished", "global_steps": global_steps}
            for rollout in range(ROLLOUTS):
                key = f"{uid}_{rollout}_0"
                self.tags["train"][key] = {"seq_len": 8, "plan_index": position}
                self.scores[key] = torch.tensor([0.0, self.reward(position, rollout)])
        return len(batch)

    def reward(self, position: int, rollout: int) -> float:
        """Equal rewards for the positions in ``no_signal``, 0/1 alternating otherwise."""
        return 1.0 if position in self.no_signal else float(rollout % 2)


def trained_positions(batch: Any) -> list[int]:
    return sorted({tag["plan_index"] for tag in batch.tags})


class Harness:
    """``RewardMapTrainer``'s own methods, with verl's dataloader, the loop's order of calls and a fake queue."""

    def __init__(self, tmp_path: Path, tq: FakeTransferQueue, *, dynamic: bool = True, max_refills: Any = 2) -> None:
        self.plan = stage_plan()
        config = OmegaConf.create(
            {
                "data": {"train_batch_size": BATCH, "gen_batch_size": 1},
                "algorithm": {"filter_groups": {"enable": dynamic, "metric": "reward", "max_num_gen_batches": 0}},
                "reward": {"reward_model": {"enable": False}},
                "rewardmap": {"dynamic_sampling": {"max_refills": max_refills}},
                "trainer": {
                    "default_local_dir": str(tmp_path / "checkpoints"),
                    "resume_mode": "auto",
                    "save_freq": 1,
                    "test_freq": -1,
                    "v1": {
                        "trainer_mode": "rewardmap",
                        "sync": {},
                        "sampler": {
                            "max_off_policy_threshold": None,
                            "max_off_policy_strategy": "drop",
                            "sync_refill_failed_groups": False,
                            "custom_sampler": {"path": None, "name": None},
                            "sampler_kwargs": {},
                        },
                    },
                },
            }
        )
        trainer = RewardMapTrainer.__new__(RewardMapTrainer)  # verl's __init__ would start workers
        trainer.config, trainer.parameter_sync_step, trainer.global_steps = config, 1, 0
        trainer.train_dataset = PlanRows(self.plan)
        trainer.train_dataloader = StatefulDataLoader(
            trainer.train_dataset, batch_size=1, sampler=SequentialSampler(trainer.train_dataset), collate_fn=collate_fn
        )
        trainer.train_dataloader_it = None
        trainer.total_training_steps = self.plan.total_steps
        trainer._submit_batch_to_rollout = lambda batch: tq.roll_out(batch, trainer.global_steps)
        trainer.replay_buffer = trainer._build_replay_buffer()
        self.trainer, self.tq = trainer, tq

    def train_step(self) -> dict:
        """One step as verl's ``fit`` and ``step`` run it, up to the batch the PPO pipeline would train."""
        trainer = self.trainer
        trainer.global_steps += 1
        metrics: dict = {}
        trainer.prepare_step()
        batch, _ = trainer.replay_buffer.sample(trainer.global_steps, "train", BATCH)
        trainer.finish_sampling_step(metrics)
        assert trained_positions(batch) == self.log()[trainer.global_steps]["trained"]
        self.tq.kv_clear(batch.keys, "train")  # fit's clean-up of the trained batch
        return metrics

    def log(self) -> dict[int, dict]:
        return read_draw_log(self.trainer.config.trainer.default_local_dir)

    def checkpoint(self) -> Path:
        """``global_step_N`` as the trainer mode saves it: the plan record, then verl's ``data.pt``."""
        trainer = self.trainer
        folder = Path(trainer.config.trainer.default_local_dir) / f"global_step_{trainer.global_steps}"
        write_plan_record(folder, self.plan, sampling=trainer.sampling_record())
        torch.save(trainer.train_dataloader.state_dict(), folder / "data.pt")
        return folder

    def resume(self, folder: Path) -> None:
        """verl's ``_load_checkpoint`` (step from the folder name, ``data.pt``), then the trainer mode's part."""
        trainer = self.trainer
        trainer.global_steps = int(folder.name.split("_")[-1])
        trainer.train_dataloader.load_state_dict(torch.load(folder / "data.pt", weights_only=False))
        trainer.restore_sampling_position()


@pytest.fixture
def tq(monkeypatch: pytest.MonkeyPatch) -> FakeTransferQueue:
    fake = FakeTransferQueue()
    monkeypatch.setattr(verl_replay_buffer, "tq", fake)
    return fake


def run_to_end(harness: Harness) -> dict[int, dict]:
    while not harness.trainer.plan_cursor.done:
        harness.train_step()
        assert harness.trainer.global_steps <= harness.plan.total_steps
    return harness.log()


def test_steps_train_kept_groups_in_plan_order_and_stages_keep_their_prompts(tmp_path: Path, tq) -> None:
    harness = Harness(tmp_path, tq)
    log = run_to_end(harness)
    plan = harness.plan
    # every prompt of the plan drawn exactly once, in plan order, step after step
    assert [p for step in sorted(log) for p in log[step]["drawn"]] == list(range(plan.num_samples))
    for step, record in log.items():
        drawn = record["drawn"]
        assert {plan.stage_of_sample(p)[0] for p in drawn} == {record["stage"]}, (step, drawn)  # one stage
        assert record["dropped"] == [p for p in drawn if p in NO_SIGNAL]
        assert record["trained"] == [p for p in drawn if p not in NO_SIGNAL] and not record["unfiltered"]
    # B = 4, at most 2 refills, each asking for exactly the missing groups, never past the stage's end
    assert [log[s]["draws"] for s in sorted(log)] == [[4, 2, 1], [4, 1], [4, 1], [3], [4, 3, 1]]
    assert [len(log[s]["trained"]) for s in sorted(log)] == [4, 2, 4, 1, 4]
    # torf steps 1-2 (the plan gives it 3), counting 3-4 (2), planning 5 (2): the run ends when the plan is drawn
    assert [log[s]["stage"] for s in sorted(log)] == [0, 0, 1, 1, 2]
    assert harness.trainer.total_training_steps == 5 < plan.total_steps == 7


def test_a_refill_at_a_stage_end_stops_at_the_boundary(tmp_path: Path, tq) -> None:
    harness = Harness(tmp_path, tq)
    harness.train_step()
    step2 = harness.train_step()  # torf's 7-10 keep 2; the refill asks for 2, the stage has 1 left (11)
    step3 = harness.train_step()
    log = harness.log()
    assert log[2]["draws"] == [4, 1] and log[2]["drawn"] == [7, 8, 9, 10, 11] and log[2]["trained"] == [7, 8]
    assert harness.plan.stage_of_sample(11)[1] == "torf" and log[3]["drawn"][0] == 12
    assert harness.plan.stage_of_sample(12)[1] == "counting"
    assert step2["rewardmap/sampling/refills"] == 1.0 and step2["rewardmap/sampling/partial_batch"] == 1.0
    assert step2["rewardmap/sampling/stage_ran_out"] == 1.0 and step3["rewardmap/sampling/stage_ran_out"] == 0.0
    assert step2["rewardmap/sampling/progress/stage=torf"] == 1.0
    assert step2["rewardmap/sampling/progress/stage=counting"] == 0.0
    assert step3["rewardmap/sampling/progress/stage=counting"] == 5 / 8
    assert step3["rewardmap/sampling/prompts_drawn"] == 5 and step3["rewardmap/sampling/groups_dropped"] == 1
    assert step3["rewardmap/sampling/plan_position"] == 17


@pytest.mark.parametrize("resume_after", [1, 2, 4])
def test_a_resumed_run_draws_what_the_uninterrupted_run_draws(tmp_path: Path, tq, resume_after: int) -> None:
    whole = run_to_end(Harness(tmp_path / "whole", tq))
    first = Harness(tmp_path / "split", tq)
    for _ in range(resume_after):
        first.train_step()
    folder = first.checkpoint()
    first.train_step()  # trained after the checkpoint, then lost: the resumed run trains it again
    second = Harness(tmp_path / "split", tq)
    second.resume(folder)
    split = run_to_end(second)
    assert split.keys() == whole.keys()
    for step in whole:
        assert {**split[step], "time": 0} == {**whole[step], "time": 0}, step


def test_no_kept_group_trains_the_first_drawn_groups_unfiltered(tmp_path: Path) -> None:
    fake = FakeTransferQueue(no_signal=set(range(28)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verl_replay_buffer, "tq", fake)
        harness = Harness(tmp_path, fake, max_refills=1)
        metrics = harness.train_step()
    record = harness.log()[1]
    assert record["draws"] == [4, 4] and record["unfiltered"] and record["trained"] == [0, 1, 2, 3]
    assert metrics["rewardmap/sampling/groups_dropped"] == 8 and metrics["rewardmap/sampling/unfiltered"] == 1.0


def test_resume_refuses_a_switch_of_dynamic_sampling_and_a_dataloader_that_disagrees(tmp_path: Path, tq) -> None:
    harness = Harness(tmp_path, tq)
    harness.train_step()
    folder = harness.checkpoint()
    assert recorded_sampling_position(folder, dynamic=True) == 7
    with pytest.raises(StagePlanMismatchError, match="dynamic sampling on, the current config has it off"):
        recorded_sampling_position(folder, dynamic=False)
    static = Harness(tmp_path / "static", tq, dynamic=False)
    static.trainer.global_steps = 2
    write_plan_record(tmp_path / "static_ckpt", static.plan, sampling=static.trainer.sampling_record())
    assert recorded_sampling_position(tmp_path / "static_ckpt", dynamic=False) is None
    with pytest.raises(StagePlanMismatchError, match="dynamic sampling off, the current config has it on"):
        recorded_sampling_position(tmp_path / "static_ckpt", dynamic=True)

    other = Harness(tmp_path, tq)
    other.resume(folder)
    other.trainer.train_dataloader = StatefulDataLoader(  # a data.pt that is not the record's: position 0
        other.trainer.train_dataset, batch_size=1, collate_fn=collate_fn
    )
    with pytest.raises(DynamicSamplingError, match="data.pt and stage_plan.json disagree"):
        other.train_step()


def test_verls_own_group_filter_breaks_the_plan(tmp_path: Path, tq) -> None:
    """What ``PlanReplayBuffer`` answers: verl's sync filter (replay_buffer.py:461-500) refills from the
    dataloader's next prompts whatever their stage, discards kept groups beyond the batch, and past the plan's
    end the dataloader starts again at the first prompt (trainer_base.py:1466-1474)."""
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    harness = Harness(tmp_path, tq, dynamic=False)
    trainer = harness.trainer
    trainer.replay_buffer = ReplayBuffer(
        trainer_mode="sync",
        trainer_config={},
        max_off_policy_threshold=None,
        max_off_policy_strategy="drop",
        sampler_kwargs={},
        refill_fn=trainer._add_prompts_to_generate,
        filter_groups_metric="reward",
        train_batch_size=BATCH,
        gen_batch_size=1,
        max_inflight_gen_batches=1,
    )
    drawn: dict[int, list[int]] = defaultdict(list)
    roll_out = trainer._submit_batch_to_rollout
    trainer._submit_batch_to_rollout = lambda batch: (
        drawn[trainer.global_steps].extend(info["plan_index"] for info in batch["extra_info"]) or roll_out(batch)
    )
    discarded = 0
    for step in range(1, harness.plan.total_steps + 1):
        trainer.global_steps = step
        trainer._add_batch_to_generate()
        batch, metrics = trainer.replay_buffer.sample(step, "train", BATCH)
        discarded += metrics.get("training/filter_groups/discarded_surplus_samples", 0)
        tq.kv_clear(batch.keys, "train")
    order = [p for step in sorted(drawn) for p in drawn[step]]
    assert any(len({harness.plan.stage_of_sample(p)[0] for p in drawn[step]}) > 1 for step in drawn)  # two stages
    assert len(order) > harness.plan.num_samples and order[harness.plan.num_samples] == 0  # the plan again
    assert discarded > 0  # kept groups drawn, generated and thrown away


def test_a_run_that_drew_the_plan_saves_its_last_step_and_its_resume_trains_nothing(
    tmp_path: Path, tq, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = Harness(tmp_path, tq)
    run_to_end(harness)  # the plan is drawn at step 5 of its 7: verl's loop ends after it
    trainer = harness.trainer
    assert trainer.total_training_steps == trainer.global_steps == 5
    folder = harness.checkpoint()
    resumed = Harness(tmp_path, tq)
    resumed.resume(folder)
    assert resumed.trainer.plan_cursor.done and resumed.trainer.total_training_steps == 5  # no step to train

    trainer.config.trainer.save_freq = 4  # verl saved step 4, not step 5 (it did not know 5 was the last)
    (folder / "data.pt").unlink()
    saves: list[int] = []
    monkeypatch.setattr(RewardMapTrainer, "_save_checkpoint", lambda self: saves.append(self.global_steps))
    trainer.global_steps += 1  # verl's loop counts past the last step, then calls on_train_end
    trainer.on_train_end()
    assert saves == [5] and trainer.global_steps == 6
