"""``validation_metrics`` through verl 0.9.1's own validation aggregation: the logged means are the benchmark."""

from __future__ import annotations

import pytest

from reward_fns.benchmark import (
    VALIDATION_KEYS,
    reasonmap_metrics,
    reasonmap_plus_metrics,
    validation_metrics,
    weighted_accuracies,
)
from tests.reward_helpers import ONE_TRANSFER, planning_gt, route, vqa_gt

A, G = "Alder Station", "Ginkgo"
ROUTES = {
    "1": [
        {"route_name": "Line 1", "departure_stop": "Alder", "arrival_stop": "Cedar", "via_stops": ["Birch"]},
        {"route_name": "Line 2", "departure_stop": "Cedar", "arrival_stop": "Ginkgo", "via_stops": ["Fir"]},
    ]
}
for _ride in ROUTES["1"]:
    _ride["num_via_stops"] = len(_ride["via_stops"])

# (data_source, ground truth, responses: one per rollout of the prompt)
PROMPTS = [
    ("reasonmap", planning_gt(A, G, 1, routes=ROUTES), [route(*ONE_TRANSFER), "no idea"]),
    ("reasonmap", planning_gt(A, "Elm", 0, difficulty="hard", routes=ROUTES), ["x", route(("Line 1", A, "Elm"))]),
    (
        "reasonmap",
        planning_gt(A, G, 1, difficulty="middle", template="long1", routes=ROUTES),
        [route(*ONE_TRANSFER, extra="Number of Via Stops: 1\n")] * 2,
    ),
    ("reasonmap_plus", vqa_gt("TorF1", 1), ["\\boxed{yes}", "\\boxed{no}"]),
    ("reasonmap_plus", vqa_gt("Counting3", 9, difficulty="hard"), ["\\boxed{9 lines}", "\\boxed{9}"]),
    ("reasonmap_plus", vqa_gt("Counting1", 2, difficulty="middle"), ["The answer is C.", "\\boxed{A}"]),
]


def _verl_validation_metrics(n: int) -> dict[str, float]:
    """Feed the first ``n`` responses per prompt through verl's ``_val_metrics_update``, as ``_validate`` does."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    data_sources, uids, infos = [], [], {"reward": [], "acc": []}
    infos.update({key: [] for key in VALIDATION_KEYS})
    expected_counts = {}
    for index, (source, gt, responses) in enumerate(PROMPTS):
        expected_counts[(source, f"uid{index}")] = n
        for response in responses[:n]:
            data_sources.append(source)
            uids.append(f"uid{index}")
            infos["reward"].append(0.0)  # the training reward's keys, present in every sample
            infos["acc"].append(0.0)
            for key, value in validation_metrics(gt.to_json(), response).items():
                infos[key].append(value)
    return PPOTrainer._val_metrics_update(None, data_sources, uids, infos, [], expected_acc_counts=expected_counts)


@pytest.mark.parametrize("n", [1, 2])
def test_logged_means_are_the_benchmark_numbers(n: int) -> None:
    logged = _verl_validation_metrics(n)
    records = [(gt, r) for source, gt, responses in PROMPTS if source == "reasonmap" for r in responses[:n]]
    plus = [(gt, r) for source, gt, responses in PROMPTS if source == "reasonmap_plus" for r in responses[:n]]
    for rules in ("released", "fixed"):
        report = reasonmap_metrics(records, rules=rules)
        for form in ("short", "long"):
            stem = f"val-aux/reasonmap/bench_{rules}_{form}"
            assert logged[f"{stem}_acc/mean@{n}"] == pytest.approx(report[form]["accuracy"])
            assert logged[f"{stem}_map_score/mean@{n}"] == pytest.approx(report[form]["map_score"])
            weighted = weighted_accuracies(logged)[f"{stem}_weighted_acc/mean@{n}"]
            assert weighted == pytest.approx(report[form]["appendix_weighted_accuracy"])
    for reading in ("released", "vlmevalkit"):
        overall = reasonmap_plus_metrics(plus, reading=reading)["overall"]
        stem = f"val-aux/reasonmap_plus/bench_{reading}_plus"
        assert logged[f"{stem}_acc/mean@{n}"] == pytest.approx(overall["accuracy"])
        assert weighted_accuracies(logged)[f"{stem}_weighted_acc/mean@{n}"] == pytest.approx(
            overall["weighted_accuracy"]
        )
    # not-applicable keys (None) are dropped, not averaged in: no plus key under reasonmap and vice versa
    assert not any(key.startswith("val-aux/reasonmap/bench_released_plus") for key in logged)
    assert not any(key.startswith("val-aux/reasonmap_plus/bench_released_short") for key in logged)
    # the fixed rules' ReasonMap-Plus reading is the released one: logged once, under released
    assert not any("bench_fixed_plus" in key for key in logged)


def test_hand_computed_validation_numbers() -> None:
    """n=1: short released acc (1 + 0) / 2; fixed short map (19 + 15) / 2; plus released acc (1 + 0 + 1) / 3."""
    logged = _verl_validation_metrics(1)
    assert logged["val-aux/reasonmap/bench_released_short_acc/mean@1"] == 0.5
    # fixed: prompt 1 correct, 1 + 2 x (2 + 1 + 1), +10 = 19; prompt 2 "x" = 0
    assert logged["val-aux/reasonmap/bench_fixed_short_map_score/mean@1"] == 9.5
    assert logged["val-aux/reasonmap_plus/bench_released_plus_acc/mean@1"] == pytest.approx(2 / 3)
    # weighted, plus: (1 x 1 + 0 x 2 + 1 x 1.5) / (1 + 2 + 1.5)
    weighted = weighted_accuracies(logged)["val-aux/reasonmap_plus/bench_released_plus_weighted_acc/mean@1"]
    assert weighted == pytest.approx(2.5 / 4.5)


def test_every_sample_has_the_same_keys() -> None:
    for _, gt, responses in PROMPTS:
        for response in [*responses, "", None]:
            metrics = validation_metrics(gt, response)
            assert tuple(metrics) == VALIDATION_KEYS
            assert all(v is None or isinstance(v, float) for v in metrics.values())
