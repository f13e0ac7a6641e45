"""The recipe's reward manager through verl 0.9.1's own loader and an in-process RewardLoopWorker.

Both must give exactly ``reward_fns.compute_score`` of the decoded response for a batch mixing planning and VQA
questions with gold, wrong, junk, empty and undecodable responses, and every sample must carry the same numeric
extra-info keys (verl takes the key list from sample 0).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

import recipe.reward_manager as reward_manager_module
import reward_fns
from data_prep.schema import STAGE_OF_TYPE, STAGES
from recipe.reward_manager import (
    REWARD_EXTRA_INFO_KEYS,
    RewardMapRewardManager,
    reward_kwargs_from_config,
)
from recipe.step_metrics import reward_metrics
from reward_fns.benchmark import VALIDATION_KEYS
from reward_fns.gold import gold_response
from reward_fns.ground_truth import MAP_DIFFICULTIES, QUESTION_TYPES, GroundTruth

NETWORK = {"Line 1": ["Alpha", "Bravo", "Charlie", "Delta"], "Line 2": ["Echo", "Charlie", "Foxtrot"]}


def _gt(question_type: str, map_difficulty: str, **fields) -> GroundTruth:
    return GroundTruth(question_type, "Testville", map_difficulty, NETWORK, country="Testland", **fields)


QUESTIONS = [
    _gt("planning", "hard", station_1="Alpha", station_2="Foxtrot", template="short", question_transfer_count=1),
    _gt("planning", "easy", station_1="Alpha", station_2="Delta", template="long1"),
    _gt("TorF1", "easy", station_1="Alpha", station_2="Bravo", answer=1),
    _gt("TorF2", "middle", station_1="Echo", line="Line 1", answer=0),
    _gt("Counting1", "middle", station_1="Alpha", station_2="Delta", answer=2, options=["0", "1", "2", "3"]),
    _gt("Counting2", "hard", station_1="Charlie", answer=2),
    _gt("Counting3", "easy", answer=2),
]
WRONG = {"planning": "Route Name: Line 9\nDeparture Stop: Nowhere\nArrival Stop: Elsewhere", "vqa": "\\boxed{7}"}
JUNK_TEXTS = ["", "asdf qwer \x00 ✓✓ <html>", "\\boxed{", "Route Name:\n--\n--\nArrival Stop:", "yes " * 300]


@pytest.fixture(scope="module")
def tokenizer(tiny):
    """The tiny Qwen2.5-VL's tokenizer (Qwen's byte-level BPE and special tokens), loaded as verl loads it."""
    return tiny[0]


@pytest.fixture(scope="module")
def base_config(tiny_dir: Path) -> DictConfig:
    """verl's composed ppo_trainer config selecting the recipe's manager exactly as configs/rewardmap.yaml does."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose(
            "ppo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={tiny_dir}",
                "reward.reward_manager.source=importlib",
                "reward.reward_manager.module.path=pkg://recipe.reward_manager",
                "reward.reward_manager.name=RewardMapRewardManager",
                "+reward.reward_kwargs.mode=fixed",
            ],
        )


def _config(base: DictConfig, **reward_kwargs) -> DictConfig:
    config = OmegaConf.create(OmegaConf.to_container(base))
    with open_dict(config):
        config.reward.reward_kwargs = reward_kwargs
    return config


def _extra_info(gt: GroundTruth, index: int) -> dict | None:
    if index % 5 == 4:
        return None  # a row without extra_info: facts come from the ground truth, stage is -1
    stage = STAGES.index(STAGE_OF_TYPE[gt.question_type])
    return {
        "index": index,
        "question_type": gt.question_type,
        "map_difficulty": gt.map_difficulty,
        "question_transfer_count": gt.question_transfer_count,
        "plan_stage": stage,
        "plan_stage_name": STAGES[stage],
    }


def _samples(tokenizer) -> list[tuple[GroundTruth, list[int]]]:
    """(question, response token ids): gold, wrong and junk texts for every question, plus raw-id oddities."""
    samples = []
    for gt in QUESTIONS:
        wrong = WRONG["planning" if gt.question_type == "planning" else "vqa"]
        for text in [gold_response(gt), wrong, *JUNK_TEXTS[:2]]:
            samples.append((gt, tokenizer.encode(text, add_special_tokens=False)))
    eos = tokenizer.eos_token_id
    gold_ids = tokenizer.encode(gold_response(QUESTIONS[2]), add_special_tokens=False)
    utf8_half = tokenizer.encode("北", add_special_tokens=False)[:1]  # the first byte of a 3-byte character
    samples += [
        (QUESTIONS[2], gold_ids + [eos]),  # eos inside the valid response: skipped when decoding
        (QUESTIONS[0], utf8_half * 3),  # invalid UTF-8
        (QUESTIONS[2], [len(tokenizer) + 1000, *gold_ids]),  # an id outside the vocabulary (skipped)
        (QUESTIONS[1], tokenizer.encode(JUNK_TEXTS[4], add_special_tokens=False)),  # long repetition
        (QUESTIONS[3], tokenizer.encode(JUNK_TEXTS[2], add_special_tokens=False)),
        (QUESTIONS[6], tokenizer.encode(JUNK_TEXTS[3], add_special_tokens=False)),
        (QUESTIONS[4], []),  # nothing generated
    ]
    return samples


def _batch(tokenizer, samples: list[tuple[GroundTruth, list[int]]]):
    """A DataProto laid out as verl's reward loop receives it: left-padded prompts, right-padded responses."""
    from verl import DataProto

    pad = tokenizer.pad_token_id
    prompt = tokenizer.encode("Where is the station?", add_special_tokens=False)
    width = max(1, max(len(ids) for _, ids in samples))
    prompts = torch.tensor([prompt] * len(samples))
    responses = torch.full((len(samples), width), pad)
    response_mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, (_, ids) in enumerate(samples):
        responses[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        response_mask[row, : len(ids)] = 1
    attention_mask = torch.cat([torch.ones_like(prompts), response_mask], dim=1)
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": attention_mask},
        non_tensors={
            "data_source": np.array(["synthetic"] * len(samples), dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": gt.to_json()} for gt, _ in samples]),
            "extra_info": np.array([_extra_info(gt, i) for i, (gt, _) in enumerate(samples)], dtype=object),
        },
    )


def _expected(tokenizer, samples, reward_kwargs: dict) -> list[dict]:
    out = []
    for i, (gt, ids) in enumerate(samples):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        result = reward_fns.compute_score("synthetic", text, gt.to_json(), _extra_info(gt, i), **reward_kwargs)
        out.append(result)
    return out


def _run_manager(manager: RewardMapRewardManager, batch) -> list[dict]:
    async def run_all():
        return await asyncio.gather(*(manager.run_single(batch[i : i + 1]) for i in range(len(batch))))

    return manager.loop.run_until_complete(run_all())


def _check(outputs: list[dict], expected: list[dict], samples) -> None:
    assert len(outputs) == len(expected)
    for i, (out, exp, (gt, _)) in enumerate(zip(outputs, expected, samples, strict=True)):
        info = out["reward_extra_info"]
        assert list(info) == list(REWARD_EXTRA_INFO_KEYS), f"sample {i}: keys differ"
        facts = [v for key, v in info.items() if key not in VALIDATION_KEYS]
        assert all(isinstance(v, float) and math.isfinite(v) for v in facts), f"sample {i}: {info}"
        assert all(math.isnan(info[key]) for key in VALIDATION_KEYS), f"sample {i}: a training sample"
        assert out["reward_score"] == pytest.approx(float(exp["score"]), abs=1e-9), f"sample {i}"
        for key in ("score", "acc", "format", "detail", "weight"):
            assert info[key] == pytest.approx(float(exp[key]), abs=1e-9), f"sample {i}: {key}"
        extra = _extra_info(gt, i)
        assert info["stage"] == (extra["plan_stage"] if extra else -1.0)
        assert info["question_type_id"] == QUESTION_TYPES.index(gt.question_type)
        assert info["map_difficulty_id"] == MAP_DIFFICULTIES.index(gt.map_difficulty)
        assert info["question_transfer_count"] == gt.question_transfer_count
        assert info["reward_error"] == 0.0


@pytest.mark.parametrize(
    "reward_kwargs",
    [
        {"mode": "fixed"},
        {"mode": "released"},
        {"mode": "sparse"},
        {"mode": "fixed", "alpha": 1.0, "transfer_weight": 0.25, "format_reward": 2.0},
        {"mode": "released", "map_weights": {"easy": 1.0, "middle": 1.5, "hard": 2.0}},
    ],
)
def test_loader_matches_compute_score(base_config, tokenizer, reward_kwargs) -> None:
    """verl's load_reward_manager builds our manager from config; rewards equal compute_score's for every mode."""
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(_config(base_config, **reward_kwargs), tokenizer)
    assert type(manager).__name__ == "RewardMapRewardManager"
    assert manager.score_kwargs == reward_kwargs
    samples = _samples(tokenizer)
    expected = _expected(tokenizer, samples, reward_kwargs)
    for question_types in (["planning"], QUESTION_TYPES[1:]):  # right and wrong answers in both kinds
        accs = {e["acc"] for e, (gt, _) in zip(expected, samples, strict=True) if gt.question_type in question_types}
        assert accs == {0.0, 1.0}
    _check(_run_manager(manager, _batch(tokenizer, samples)), expected, samples)


def test_reward_loop_worker_in_process(base_config, tokenizer) -> None:
    """The RewardLoopWorker verl runs as a Ray actor, here in-process: same rewards, same keys, rm_scores."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    worker = RewardLoopWorker(_config(base_config, mode="released"))
    assert isinstance(worker.reward_manager, RewardMapRewardManager)
    samples = _samples(tokenizer)
    batch = _batch(tokenizer, samples)
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(batch))
    _check(outputs, _expected(tokenizer, samples, {"mode": "released"}), samples)

    # What verl's RewardLoopManager does next: key list from sample 0, numeric arrays, scores on the last token.
    keys = list(outputs[0]["reward_extra_info"])
    columns = {key: np.array([o["reward_extra_info"][key] for o in outputs]) for key in keys}
    assert all(column.dtype == np.float64 for column in columns.values())
    rm_scores = RewardMapRewardManager.assemble_rm_scores(batch, [o["reward_score"] for o in outputs])
    assert rm_scores.sum(dim=-1).tolist() == pytest.approx([o["reward_score"] for o in outputs])


def test_reward_kwargs_are_checked(base_config) -> None:
    """A typo or an unknown mode fails when the manager is built, not silently at the first step."""
    assert reward_kwargs_from_config(_config(base_config)) == {}
    weights = {"easy": 1.0, "middle": 1.5, "hard": 2.0}
    assert reward_kwargs_from_config(_config(base_config, map_weights=weights, alpha=None)) == {"map_weights": weights}
    with pytest.raises(ValueError, match="unknown keys"):
        reward_kwargs_from_config(_config(base_config, alpah=0.5))
    with pytest.raises(ValueError, match="mode"):
        reward_kwargs_from_config(_config(base_config, mode="dense"))
    with pytest.raises(ValueError, match="map_weights"):
        reward_kwargs_from_config(_config(base_config, map_weights={"easy": 1.0, "hard": 2.0}))
    with pytest.raises(ValueError, match="alpha"):
        reward_kwargs_from_config(_config(base_config, alpha="half"))


def test_scoring_failure_is_a_zero_reward(base_config, tokenizer, monkeypatch) -> None:
    """Should compute_score ever raise (it is total by contract), the sample gets 0 and reward_error=1."""
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(_config(base_config), tokenizer)

    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(manager, "score_fn", broken)
    samples = _samples(tokenizer)[:2]
    outputs = _run_manager(manager, _batch(tokenizer, samples))
    for out in outputs:
        assert out["reward_score"] == 0.0
        assert list(out["reward_extra_info"]) == list(REWARD_EXTRA_INFO_KEYS)
        assert out["reward_extra_info"]["reward_error"] == 1.0


def _one(tokenizer, gt: GroundTruth, text: str, extra_info: object, *, drop: str = "") -> tuple:
    """A one-sample batch (optionally without the non-tensor column ``drop``)."""
    batch = _batch(tokenizer, [(gt, tokenizer.encode(text, add_special_tokens=False))])
    batch.non_tensor_batch["extra_info"] = np.array([extra_info], dtype=object)
    if drop:
        del batch.non_tensor_batch[drop]
    return batch


def test_facts_come_from_the_ground_truth_even_when_extra_info_disagrees(base_config, tokenizer) -> None:
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(_config(base_config), tokenizer)
    gt = QUESTIONS[0]  # planning, hard map, one transfer
    lying = {"question_type": "Counting3", "map_difficulty": "easy", "question_transfer_count": 7, "plan_stage": 2}
    (out,) = _run_manager(manager, _one(tokenizer, gt, gold_response(gt), lying))
    info = out["reward_extra_info"]
    assert info["question_type_id"] == QUESTION_TYPES.index("planning")
    assert info["map_difficulty_id"] == MAP_DIFFICULTIES.index("hard")
    assert info["question_transfer_count"] == 1.0 and info["stage"] == 2.0 and info["acc"] == 1.0


@pytest.mark.parametrize(
    ("plan_stage", "stage"),
    [
        (float("nan"), -1.0),
        (float("inf"), -1.0),
        (-float("inf"), -1.0),
        (1.5, -1.0),
        (True, -1.0),
        ("3", -1.0),
        (10**30, -1.0),
        (-5, -1.0),
        ([1], -1.0),
        (None, -1.0),
        (2, 2.0),
        (np.int64(3), 3.0),
        (1.0, 1.0),
        (-1, -1.0),
    ],
    ids=repr,
)
def test_the_stage_is_a_finite_integral_plan_stage_or_minus_one(base_config, tokenizer, plan_stage, stage) -> None:
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(_config(base_config), tokenizer)
    (out,) = _run_manager(manager, _one(tokenizer, QUESTIONS[2], "\\boxed{yes}", {"plan_stage": plan_stage}))
    info = out["reward_extra_info"]
    assert info["stage"] == stage and type(info["stage"]) is float
    facts = [v for key, v in info.items() if key not in VALIDATION_KEYS]
    assert all(math.isfinite(v) for v in facts) and info["reward_error"] == 0.0
    infos = {key: np.array([info[key]]) for key in info}  # what the trainer's per-step metrics read
    assert reward_metrics((infos, None, ["uid"]))["rewardmap/stage"] == stage


def test_data_bugs_give_zero_and_reward_error_not_a_crash(base_config, tokenizer) -> None:
    """An invalid ground truth, a row without reward_model, a row without extra_info: reward 0, reward_error 1."""
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(_config(base_config), tokenizer)
    gt = QUESTIONS[2]
    invalid = _one(tokenizer, gt, "\\boxed{yes}", {"plan_stage": 0})
    invalid.non_tensor_batch["reward_model"] = np.array([{"ground_truth": '{"question_type": "TorF1"}'}], dtype=object)
    batches = [invalid, _one(tokenizer, gt, "\\boxed{yes}", {"plan_stage": 0}, drop="reward_model")]
    for batch in batches:
        (out,) = _run_manager(manager, batch)
        info = out["reward_extra_info"]
        assert out["reward_score"] == 0.0 and list(info) == list(REWARD_EXTRA_INFO_KEYS)
        assert info["reward_error"] == 1.0 and info["question_type_id"] == -1.0 and info["stage"] == 0.0
    (out,) = _run_manager(manager, _one(tokenizer, gt, "\\boxed{yes}", None, drop="extra_info"))
    assert out["reward_extra_info"]["reward_error"] == 0.0 and out["reward_score"] > 0  # scored, stage unknown
    assert out["reward_extra_info"]["stage"] == -1.0


def test_the_batch_rows_own_extra_info_is_left_as_it_was(base_config, tokenizer) -> None:
    """verl's naive manager writes num_turns into extra_info; the manager hands it a copy."""
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(_config(base_config), tokenizer)
    extra = {"plan_stage": 1, "plan_stage_name": "torf"}
    batch = _one(tokenizer, QUESTIONS[2], "\\boxed{yes}", extra)
    _run_manager(manager, batch)
    assert batch.non_tensor_batch["extra_info"][0] == {"plan_stage": 1, "plan_stage_name": "torf"}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("alpha=nan", "alpha"),
        ("alpha=inf", "alpha"),
        ("transfer_weight=-inf", "transfer_weight"),
        ("format_reward=-1", "format_reward"),
        ("alpha=true", "alpha"),
        ("alpah=0.5", "alpah"),
    ],
)
def test_bad_options_from_the_command_line_fail_at_start_up_naming_the_key(base_config, tokenizer, override, key):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from verl.trainer.ppo.reward import load_reward_manager

    (parsed,) = OverridesParser.create().parse_overrides([f"+reward.reward_kwargs.{override}"])
    assert not isinstance(parsed.value(), str)  # Hydra reads nan, inf, -1, true as numbers and booleans
    config = _config(base_config, **{override.split("=")[0]: parsed.value()})
    with pytest.raises(ValueError, match=f"reward.reward_kwargs.*{key}"):
        load_reward_manager(config, tokenizer)


def test_validation_samples_get_the_validation_metrics_every_sample_the_keys(base_config, tokenizer, monkeypatch):
    """The hook: keys declared in VALIDATION_KEYS, values from validation_metrics, None outside validation."""
    from recipe.dataset import VALIDATION_STAGE_NAME

    keys = (*REWARD_EXTRA_INFO_KEYS, "map_score")
    monkeypatch.setattr(reward_manager_module, "VALIDATION_KEYS", ("map_score",))
    monkeypatch.setattr(reward_manager_module, "REWARD_EXTRA_INFO_KEYS", keys)

    class WithMetrics(RewardMapRewardManager):
        def validation_metrics(self, solution_str, ground_truth, extra_info):
            return {"map_score": 7.0}

    manager = WithMetrics(_config(base_config), tokenizer)
    gt = QUESTIONS[2]
    validation = {"plan_stage": -1, "plan_stage_name": VALIDATION_STAGE_NAME}
    (val,) = _run_manager(manager, _one(tokenizer, gt, "\\boxed{yes}", validation))
    (train,) = _run_manager(manager, _one(tokenizer, gt, "\\boxed{yes}", {"plan_stage": 0, "plan_stage_name": "torf"}))
    assert list(val["reward_extra_info"]) == list(train["reward_extra_info"]) == list(keys)
    assert val["reward_extra_info"]["map_score"] == 7.0 and math.isnan(train["reward_extra_info"]["map_score"])


def test_validation_samples_carry_the_benchmark_metrics(base_config, tokenizer):
    """The real hook: a validation sample's extra info holds reward_fns.benchmark.validation_metrics of its response."""
    from recipe.dataset import VALIDATION_STAGE_NAME
    from reward_fns.benchmark import validation_metrics

    manager = RewardMapRewardManager(_config(base_config), tokenizer)
    validation = {"plan_stage": -1, "plan_stage_name": VALIDATION_STAGE_NAME}
    for gt in QUESTIONS:
        response = gold_response(gt)
        (val,) = _run_manager(manager, _one(tokenizer, gt, response, validation))
        (train,) = _run_manager(manager, _one(tokenizer, gt, response, {"plan_stage": 0, "plan_stage_name": "x"}))
        info = val["reward_extra_info"]
        assert list(info) == list(train["reward_extra_info"]) == list(REWARD_EXTRA_INFO_KEYS)
        decoded = tokenizer.decode(tokenizer(response, add_special_tokens=False)["input_ids"], skip_special_tokens=True)
        assert {key: info[key] for key in VALIDATION_KEYS} == validation_metrics(gt.to_json(), decoded)
        assert any(info[key] is not None for key in VALIDATION_KEYS)
        assert all(math.isnan(train["reward_extra_info"][key]) for key in VALIDATION_KEYS)


def test_a_hanging_scorer_gets_a_finite_reward_within_the_timeout_and_is_counted(base_config, tokenizer, monkeypatch):
    """A scorer that hangs on one sample: verl's RewardLoopWorker (in-process) returns every sample, the hung one
    with reward 0, reward_timeout=1 and reward_error=1, and the step's metrics count it; nothing raises."""
    import threading

    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    release = threading.Event()
    hang_on = gold_response(QUESTIONS[2])

    def hangs_on_one(data_source, solution_str, *args, **kwargs):
        if solution_str == hang_on:
            release.wait(60)  # "forever" for the test; released at its end so no thread outlives it
        return reward_fns.compute_score(data_source, solution_str, *args, **kwargs)

    monkeypatch.setattr(reward_manager_module, "rewardmap_compute_score", hangs_on_one)
    config = _config(base_config, mode="fixed")
    with open_dict(config):
        config.reward.timeout = 2
    worker = RewardLoopWorker(config)
    assert worker.reward_manager.timeout == 2.0
    samples = [(QUESTIONS[2], tokenizer.encode(text, add_special_tokens=False)) for text in (hang_on, "\\boxed{no}")]
    samples.append((QUESTIONS[0], tokenizer.encode(gold_response(QUESTIONS[0]), add_special_tokens=False)))
    try:
        outputs = worker.loop.run_until_complete(worker.compute_score_batch(_batch(tokenizer, samples)))
    finally:
        release.set()
    hung, wrong, right = (out["reward_extra_info"] for out in outputs)
    assert outputs[0]["reward_score"] == 0.0 and (hung["reward_timeout"], hung["reward_error"]) == (1.0, 1.0)
    expected = _expected(tokenizer, samples, {"mode": "fixed"})
    assert [out["reward_score"] for out in outputs[1:]] == pytest.approx([e["score"] for e in expected[1:]])
    assert wrong["reward_timeout"] == right["reward_error"] == 0.0 and right["acc"] == 1.0
    assert all(list(out["reward_extra_info"]) == list(REWARD_EXTRA_INFO_KEYS) for out in outputs)
    infos = {key: np.array([out["reward_extra_info"][key] for out in outputs]) for key in REWARD_EXTRA_INFO_KEYS}
    metrics = reward_metrics((infos, None, ["a", "a", "b"]))
    assert metrics["rewardmap/reward/timeout_rate"] == metrics["rewardmap/reward/error_rate"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(("value", "seconds"), [(None, None), (0, None), (30, 30.0), (0.5, 0.5)])
def test_the_timeout_is_seconds_or_unbounded(base_config, value, seconds) -> None:
    from recipe.reward_manager import reward_timeout_from_config

    config = _config(base_config)
    with open_dict(config):
        config.reward.timeout = value
    assert reward_timeout_from_config(config) == seconds


@pytest.mark.parametrize("value", [-1, "soon", True, float("nan"), float("inf")], ids=repr)
def test_a_bad_timeout_fails_at_start_up_naming_the_key(base_config, tokenizer, value) -> None:
    config = _config(base_config)
    with open_dict(config):
        config.reward.timeout = value
    with pytest.raises(ValueError, match="reward.timeout"):
        RewardMapRewardManager(config, tokenizer)
