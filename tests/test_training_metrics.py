"""Per-step RewardMap metrics (recipe.step_metrics) and the ``rewardmap`` v1 trainer mode's hooks (recipe.trainer).

The hooks are tested in isolation: verl's own ``_compute_metrics`` / ``_save_checkpoint`` / ``_load_checkpoint``
are replaced by stubs (a full trainer needs GPUs and Ray), TransferQueue by a dict, so what is checked is exactly
what the subclass adds.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl.trainer.ppo.v1 import PPOTrainer, get_trainer_cls

import recipe.trainer as trainer_module
from recipe.plan_record import PLAN_RECORD_NAME, StagePlanMismatchError, check_plan_record
from recipe.reward_manager import REWARD_EXTRA_INFO_KEYS
from recipe.stages import StagePlan, StagePlanError, build_plan
from recipe.step_metrics import reward_metrics
from recipe.trainer import TRAINER_MODE, RewardMapTrainer, register_trainer_mode
from reward_fns.benchmark import VALIDATION_KEYS

STAGE_NAMES = ["torf", "counting", "counting_stops", "planning"]

# (uid, question_type_id, stage, map_difficulty_id, acc, format, detail, weight, score)
ROWS = [
    ("g1", 0, 3, 2, 1, 1, 4, 1.5, 15.0),  # planning, hard map, stage 3: mixed outcomes
    ("g1", 0, 3, 2, 0, 1, 2, 1.5, 3.0),
    ("g1", 0, 3, 2, 0, 0, 0, 1.5, 0.0),
    ("g1", 0, 3, 2, 1, 1, 4, 1.5, 15.0),
    ("g2", 1, 0, 0, 1, 1, 0, 1.0, 11.0),  # TorF1, easy, stage 0: all right -> no signal
    ("g2", 1, 0, 0, 1, 1, 0, 1.0, 11.0),
    ("g3", 4, 0, 1, 0, 0, 0, 1.2, 0.0),  # Counting2, middle, stage 0: format differs
    ("g3", 4, 0, 1, 0, 1, 0, 1.2, 1.2),
    ("g4", 5, -1, 0, 1, 1, 0, 1.0, 11.0),  # Counting3, easy, no stage: a single-sample group
]
LENGTH = 5


def _infos() -> dict[str, np.ndarray]:
    names = ("question_type_id", "stage", "map_difficulty_id", "acc", "format", "detail", "weight")
    infos = {key: np.array([row[1 + j] for row in ROWS], dtype=np.float64) for j, key in enumerate(names)}
    infos["score"] = np.array([row[8] for row in ROWS])
    infos["question_transfer_count"] = np.zeros(len(ROWS))
    infos["reward_error"] = np.zeros(len(ROWS))
    infos["reward_timeout"] = np.zeros(len(ROWS))
    return {key: infos[key] for key in REWARD_EXTRA_INFO_KEYS if key not in VALIDATION_KEYS}


def _token_level_scores() -> torch.Tensor:
    scores = torch.zeros((len(ROWS), LENGTH))
    for i, row in enumerate(ROWS):
        scores[i, LENGTH - 1 - i % 2] = row[8]
    return scores


UIDS = [row[0] for row in ROWS]
EXPECTED = {
    "rewardmap/reward/score/mean": 67.2 / 9,
    "rewardmap/reward/acc/mean": 5 / 9,
    "rewardmap/reward/format/mean": 7 / 9,
    "rewardmap/reward/detail/mean": 10 / 9,
    "rewardmap/reward/weight/mean": (4 * 1.5 + 2 * 1.0 + 2 * 1.2 + 1.0) / 9,
    "rewardmap/reward/error_rate": 0.0,
    "rewardmap/reward/timeout_rate": 0.0,
    "rewardmap/acc/type=planning": 0.5,
    "rewardmap/format/type=planning": 0.75,
    "rewardmap/score/type=planning": 33 / 4,
    "rewardmap/count/type=planning": 4.0,
    "rewardmap/acc/type=TorF1": 1.0,
    "rewardmap/acc/type=Counting2": 0.0,
    "rewardmap/format/type=Counting2": 0.5,
    "rewardmap/acc/type=Counting3": 1.0,
    "rewardmap/count/type=Counting3": 1.0,
    "rewardmap/acc/stage=planning": 0.5,
    "rewardmap/acc/stage=torf": 0.5,
    "rewardmap/format/stage=torf": 0.75,
    "rewardmap/count/stage=torf": 4.0,
    "rewardmap/count/stage=unknown": 1.0,
    "rewardmap/acc/map=hard": 0.5,
    "rewardmap/acc/map=easy": 1.0,
    "rewardmap/count/map=easy": 3.0,
    "rewardmap/acc/map=middle": 0.0,
    "rewardmap/stage": 3.0,  # stages 0 and 3 tie at four samples: the later one
    "rewardmap/groups/count": 3.0,  # the single-sample group g4 is not counted
    "rewardmap/groups/all_equal_frac": 1 / 3,  # g2
}


def _check(metrics: dict[str, float]) -> None:
    for name, value in EXPECTED.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name
    assert all(name.startswith("rewardmap/") and isinstance(v, float) for name, v in metrics.items())
    assert not any(name.startswith("rewardmap/acc/type=TorF2") for name in metrics)  # only values present


def test_metrics_from_arrays() -> None:
    _check(reward_metrics((_infos(), _token_level_scores(), UIDS), stage_names=STAGE_NAMES))


def test_stage_names_default_to_indices() -> None:
    metrics = reward_metrics((_infos(), None, UIDS))
    assert metrics["rewardmap/acc/stage=3"] == 0.5 and metrics["rewardmap/count/stage=0"] == 4.0
    assert metrics["rewardmap/reward/score/mean"] == pytest.approx(67.2 / 9)  # from infos["score"]


# -- the trainer mode -------------------------------------------------------------------------------------------
def _plan(stage_steps: tuple[int, int] = (2, 2)) -> StagePlan:
    """A real stage plan: "torf" then "counting", two steps each by default (row counts given, no files read)."""
    stages = [
        {"name": "torf", "files": ["torf.parquet"], "steps": stage_steps[0]},
        {"name": "counting", "files": ["counting.parquet"], "steps": stage_steps[1]},
    ]
    return build_plan(stages, batch_size=2, seed=0, count_rows=lambda path: 8)


def _bare_trainer(tmp_path: Path, plan: object | None = None, **trainer_cfg) -> RewardMapTrainer:
    """A RewardMapTrainer without verl's __init__ (no Ray, no GPUs): config, dataset and step only."""
    trainer = RewardMapTrainer.__new__(RewardMapTrainer)
    cfg = {"default_local_dir": str(tmp_path / "ckpt"), "resume_mode": "auto", "resume_from_path": None}
    trainer.config = OmegaConf.create({"trainer": {**cfg, **trainer_cfg}})
    trainer.train_dataset = SimpleNamespace(plan=plan) if plan is not None else SimpleNamespace()
    trainer.global_steps = 0
    trainer.tokenizer = SimpleNamespace(get_vocab=lambda: {"<|image_pad|>": 151655, "<|vision_start|>": 151652})
    return trainer


def _fake_tq(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """TransferQueue holding the ROWS (as the agent loop writes them) plus one padding row with junk values."""
    rows = ROWS + [("pad", 0, 0, 0, 0, 0, 0, 9.0, 99.0)]
    infos = _infos()
    extra_fields = [
        {"reward_extra_info": {key: float(infos[key][i]) for key in infos}, "min_global_steps": 0}
        for i in range(len(ROWS))
    ]
    extra_fields.append({"reward_extra_info": dict.fromkeys(infos, 99.0)})
    scores = torch.nested.nested_tensor(
        [torch.tensor([0.0] * (i % 3) + [row[8]]) for i, row in enumerate(rows)], layout=torch.jagged
    )
    # response token ids: plain tokens, and a vision placeholder (151655, <|image_pad|>) only in the padding row
    responses = torch.nested.nested_tensor(
        [torch.tensor([11, 12] + ([151655] if i == len(ROWS) else [])) for i in range(len(rows))], layout=torch.jagged
    )
    store = {
        "uid": np.array([row[0] for row in rows], dtype=object),
        "rm_scores": scores,
        "extra_fields": extra_fields,
        "responses": responses,
    }
    calls = []

    def kv_batch_get(keys, partition_id, select_fields):
        calls.append((list(keys), partition_id, list(select_fields)))
        return {field: store[field] for field in select_fields}

    fake = SimpleNamespace(kv_batch_get=kv_batch_get, calls=calls)
    monkeypatch.setattr(trainer_module, "tq", fake)
    batch = SimpleNamespace(
        keys=[f"{row[0]}_{i}_0" for i, row in enumerate(rows)],
        partition_id="train",
        tags=[{} for _ in ROWS] + [{"is_padding": True}],
    )
    return SimpleNamespace(tq=fake, batch=batch)


def test_trainer_mode_registered_and_behaves_as_sync(tmp_path: Path) -> None:
    register_trainer_mode()
    register_trainer_mode()  # idempotent: the task runner may register in a process that already has it
    assert get_trainer_cls(TRAINER_MODE) is RewardMapTrainer
    trainer = _bare_trainer(tmp_path)
    trainer.trainer_mode = TRAINER_MODE  # what verl's __init__ does from trainer.v1.trainer_mode
    assert trainer.trainer_mode == "sync" and trainer.registered_mode == TRAINER_MODE


def test_compute_metrics_hook_adds_reward_metrics(tmp_path, monkeypatch, capsys) -> None:
    def verl_metrics(self, batch, metrics, timing_raw, global_steps, epoch):
        metrics["training/global_step"] = global_steps

    monkeypatch.setattr(PPOTrainer, "_compute_metrics", verl_metrics)
    fake = _fake_tq(monkeypatch)
    trainer = _bare_trainer(tmp_path)

    metrics: dict = {}
    trainer._compute_metrics(fake.batch, metrics, {}, global_steps=1, epoch=0)
    assert metrics["training/global_step"] == 1  # verl's own metrics are kept
    expected = {k: v for k, v in EXPECTED.items() if "stage=" not in k}  # no plan: stages named by index
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name  # the padding row is left out
    assert metrics["rewardmap/acc/stage=3"] == 0.5
    assert metrics["rewardmap/rollout/vision_tokens"] == 0.0  # the padding row's placeholder is left out
    assert fake.tq.calls == [(fake.batch.keys, "train", ["uid", "rm_scores", "extra_fields", "responses"])]
    assert "curriculum stage 3 (3)" in capsys.readouterr().out


def test_stage_change_is_logged_once(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(PPOTrainer, "_compute_metrics", lambda self, *args, **kwargs: None)
    fake = _fake_tq(monkeypatch)
    trainer = _bare_trainer(tmp_path, plan=_plan())
    printed = []
    for step in (1, 2, 3, 4):
        metrics: dict = {}
        trainer._compute_metrics(fake.batch, metrics, {}, global_steps=step, epoch=0)
        printed.append(capsys.readouterr().out)
        assert metrics["rewardmap/acc/stage=torf"] == 0.5  # stage names from the plan
        assert metrics["rewardmap/acc/stage=3"] == 0.5  # an index the plan does not name
    assert "step 1: curriculum stage 0 (torf)" in printed[0]
    assert printed[1] == "" and printed[3] == ""
    assert "step 3: curriculum stage 1 (counting)" in printed[2]


def test_save_writes_plan_record_before_verl_saves(tmp_path, monkeypatch) -> None:
    plan = _plan()
    trainer = _bare_trainer(tmp_path, plan=plan)
    trainer.global_steps = 50
    record = tmp_path / "ckpt" / "global_step_50" / PLAN_RECORD_NAME
    seen = []
    monkeypatch.setattr(PPOTrainer, "_save_checkpoint", lambda self: seen.append(record.exists()))
    trainer._save_checkpoint()
    assert seen == [True]
    check_plan_record(record.parent, plan)


def test_save_without_plan_is_plain_verl(tmp_path, monkeypatch) -> None:
    trainer = _bare_trainer(tmp_path)
    trainer.global_steps = 50
    monkeypatch.setattr(PPOTrainer, "_save_checkpoint", lambda self: None)
    trainer._save_checkpoint()
    assert not (tmp_path / "ckpt" / "global_step_50").exists()


def _resume(tmp_path, monkeypatch, *, saved_plan, plan, mode="auto") -> None:
    """Save step 7 under ``saved_plan`` (None: verl's plain save), then resume under ``plan``."""
    folder = tmp_path / "ckpt" / "global_step_7"
    monkeypatch.setattr(PPOTrainer, "_save_checkpoint", lambda self: folder.mkdir(parents=True, exist_ok=True))
    saver = _bare_trainer(tmp_path, plan=saved_plan)
    saver.global_steps = 7
    saver._save_checkpoint()

    def verl_load(self):
        self.global_steps = 7

    monkeypatch.setattr(PPOTrainer, "_load_checkpoint", verl_load)
    _bare_trainer(tmp_path, plan=plan, resume_mode=mode, resume_from_path=str(folder))._load_checkpoint()


@pytest.mark.parametrize("mode", ["auto", "resume_path"])
def test_resume_under_same_plan(tmp_path, monkeypatch, mode) -> None:
    _resume(tmp_path, monkeypatch, saved_plan=_plan(), plan=_plan(), mode=mode)


@pytest.mark.parametrize("mode", ["auto", "resume_path"])
def test_resume_under_other_plan_is_refused(tmp_path, monkeypatch, mode) -> None:
    with pytest.raises(StagePlanMismatchError, match="stage plan changed"):
        _resume(tmp_path, monkeypatch, saved_plan=_plan(), plan=_plan((3, 1)), mode=mode)


def test_resume_mixing_staged_and_plain_is_refused(tmp_path, monkeypatch) -> None:
    with pytest.raises(StagePlanError, match="not written with a stage plan"):
        _resume(tmp_path, monkeypatch, saved_plan=None, plan=_plan())
    with pytest.raises(StagePlanMismatchError, match="current config has none"):
        _resume(tmp_path / "other", monkeypatch, saved_plan=_plan(), plan=None)
    _resume(tmp_path / "plain", monkeypatch, saved_plan=None, plan=None)  # plain on plain: verl as is


def test_fresh_start_checks_nothing(tmp_path, monkeypatch) -> None:
    """verl resumed nothing (global_steps stays 0): no plan record is looked for, though the run has a plan."""
    checked = []
    monkeypatch.setattr(trainer_module, "check_plan_record", lambda *args, **kwargs: checked.append(args))
    trainer = _bare_trainer(tmp_path, plan=_plan())
    monkeypatch.setattr(PPOTrainer, "_load_checkpoint", lambda self: None)
    trainer._load_checkpoint()
    assert checked == []

    def verl_resumes(self):
        self.global_steps = 3

    monkeypatch.setattr(PPOTrainer, "_load_checkpoint", verl_resumes)
    trainer._load_checkpoint()
    assert len(checked) == 1 and checked[0][0].endswith("global_step_3")  # a resume is checked


def test_validation_adds_the_benchmark_weighted_accuracies(tmp_path: Path, monkeypatch) -> None:
    """verl averages the numerator and denominator keys; the trainer mode logs their ratio beside them."""
    from verl.trainer.ppo.v1 import PPOTrainerSync

    logged = {
        "val-aux/reasonmap/bench_fixed_short_wacc_num/mean@1": 0.9,
        "val-aux/reasonmap/bench_short_wacc_den/mean@1": 1.8,
        "val-aux/reasonmap/bench_fixed_short_acc/mean@1": 0.4,
    }
    monkeypatch.setattr(PPOTrainerSync, "_validate", lambda self: dict(logged))
    metrics = _bare_trainer(tmp_path)._validate()
    assert metrics["val-aux/reasonmap/bench_fixed_short_weighted_acc/mean@1"] == pytest.approx(0.5)
    assert {key: metrics[key] for key in logged} == logged


@pytest.mark.parametrize(("step", "saved_by_verl"), [(3, False), (4, True), (10, True)])
def test_a_checkpoint_request_saves_at_the_end_of_the_step(tmp_path: Path, monkeypatch, step, saved_by_verl) -> None:
    """launch/lib.sh asks for a checkpoint before a time limit: saved once, at the step's end, and the request gone."""
    from verl.trainer.ppo.v1 import PPOTrainerSync

    from recipe.trainer import SAVE_REQUEST_NAME

    monkeypatch.setattr(PPOTrainerSync, "on_step_end", lambda self: None)  # verl's own end-of-step work
    trainer = _bare_trainer(tmp_path, save_freq=4)
    trainer.total_training_steps, trainer.global_steps = 10, step
    saves: list[int] = []
    monkeypatch.setattr(RewardMapTrainer, "_save_checkpoint", lambda self: saves.append(self.global_steps))
    trainer.on_step_end()
    assert saves == [], "no request, no extra checkpoint"
    request = tmp_path / "ckpt" / SAVE_REQUEST_NAME
    request.parent.mkdir(parents=True)
    request.write_text("")
    trainer.on_step_end()
    assert saves == ([] if saved_by_verl else [step]), "verl's save_freq (or last step) already saved this step"
    assert not request.exists()
