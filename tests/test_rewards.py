"""compute_score per question type and mode, on hand-checked cases (NET in tests/reward_helpers.py)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random

import pytest

from reward_fns import SCORE_KEYS, RewardOptions, compute_score
from reward_fns.correctness import route_correct, tolerant_legs
from reward_fns.detail import fixed_detail
from reward_fns.gold import gold_response
from reward_fns.ground_truth import PLANNING_TEMPLATES, GroundTruth
from reward_fns.network import MetroNetwork, normalize_station
from reward_fns.question_context import question_context
from reward_fns.reward_released import (
    normalize_station_released,
    parse_route_blocks_strict,
    released_detail,
    released_legs,
    released_line,
)
from reward_fns.route_parsing import parse_route_blocks
from reward_fns.weights import difficulty_weight
from tests.conftest import real_station_files
from tests.reward_helpers import DIRECT, NET, ONE_TRANSFER, TWO_TRANSFERS, planning_gt, route, vqa_gt

A, E, G, J = "Alder Station", "Elm", "Ginkgo", "Juniper"


def score(response: str, gt: GroundTruth, mode: str = "fixed", **kwargs: object) -> dict[str, float]:
    return dict(compute_score("reasonmap_train", response, gt.to_json(), None, mode=mode, **kwargs))


# Worked examples of the released reward (24.0 and 12.0 also in compute_score's docstring) ----------------------


def test_released_correct_one_transfer_route_on_a_hard_map_is_24() -> None:
    result = score(route(*ONE_TRANSFER), planning_gt(A, G, 1, difficulty="hard"), "released")
    assert result == {"score": 24.0, "acc": 1.0, "format": 1.0, "detail": 4.0, "weight": 2.0}


def test_released_correct_direct_route_on_an_easy_map_is_10_5() -> None:
    result = score(route(*DIRECT), planning_gt(A, E, 0), "released")
    assert result == {"score": 10.5, "acc": 1.0, "format": 1.0, "detail": 1.0, "weight": 1.0}


def test_released_correct_torf_on_a_middle_map_is_12() -> None:
    result = score("The two stations share Line 1. \\boxed{yes}", vqa_gt("TorF1", 1, difficulty="middle"), "released")
    assert result == {"score": 12.0, "acc": 1.0, "format": 1.0, "detail": 0.0, "weight": 1.2}


# Planning, hand-checked ------------------------------------------------------------------------------------------


def test_two_transfer_route_released_and_fixed() -> None:
    gt = planning_gt(A, J, 2, difficulty="middle")
    # released detail: 2 + (3+1) + (3+1) + (3-5) = 8; fixed: 2 + 4 + 4 + 3 = 13, clamped to 10. W = 1.2 + 0.5.
    assert score(route(*TWO_TRANSFERS), gt, "released") == pytest.approx(
        {"score": 1.7 * (10 + 4), "acc": 1.0, "format": 1.0, "detail": 8.0, "weight": 1.7}
    )
    assert score(route(*TWO_TRANSFERS), gt) == pytest.approx(
        {"score": 1.7 * (1 + 10 + 5), "acc": 1.0, "format": 1.0, "detail": 10.0, "weight": 1.7}
    )


def test_fixed_mode_values_of_the_worked_examples() -> None:
    assert score(route(*ONE_TRANSFER), planning_gt(A, G, 1, difficulty="hard"))["score"] == 2.0 * (1 + 10 + 0.5 * 9)
    assert score(route(*DIRECT), planning_gt(A, E, 0))["score"] == 1 + 10 + 0.5 * 6
    assert score("\\boxed{yes}", vqa_gt("TorF1", 1, difficulty="middle"))["score"] == pytest.approx(1.2 * 11)


def test_off_by_one_flaw_in_released_mode_is_fixed_in_fixed_mode() -> None:
    """A wrong single-block answer to a one-transfer question outscores the correct answer on detail (released)."""
    gt = planning_gt(A, G, 1, difficulty="hard")
    wrong = route(("Line 1", A, G))  # Ginkgo is not on Line 1: incorrect, yet endpoints and a real line
    correct = route(*ONE_TRANSFER)
    released_wrong, released_correct = score(wrong, gt, "released"), score(correct, gt, "released")
    assert (released_wrong["acc"], released_wrong["detail"]) == (0.0, 5.0)  # 2 + 3
    assert released_correct["detail"] == 4.0  # 2 + 3 + 1 + 3 - 5
    assert released_wrong["detail"] > released_correct["detail"]
    fixed_wrong, fixed_correct = score(wrong, gt), score(correct, gt)
    assert (fixed_wrong["detail"], fixed_correct["detail"]) == (5.0, 9.0)
    assert fixed_correct["detail"] > fixed_wrong["detail"]
    assert fixed_correct["score"] > fixed_wrong["score"]


def test_released_penalises_every_correct_route_fixed_only_overlong_ones() -> None:
    gt = planning_gt(A, G, 1)
    detour = route(("Line 1", A, "Cedar"), ("Line 2", "Cedar", "Fir"), ("Line 2", "Fir", G))  # correct, 3 rides
    assert score(detour, gt, "released")["detail"] == 2 + 3 + 1 + (3 - 5) + (3 - 5)
    # fixed: only the third block is over-long (-5), and it stays on Line 2 (one ride split in two): no points.
    assert score(detour, gt)["detail"] == 2 + 3 + 1 + 3 + (0 - 5)
    assert score(detour, gt)["acc"] == 1.0 and score(detour, gt)["score"] < score(route(*ONE_TRANSFER), gt)["score"]


def test_released_detail_has_no_floor_fixed_detail_does() -> None:
    gt = planning_gt(A, E, 0)
    padded = route(*([("Line 9", A, "Birch")] + [("Line 9", "Birch", "Birch")] * 4 + [("Line 9", "Birch", E)]))
    assert score(padded, gt, "released")["detail"] == 2 - 5 * 6
    assert score(padded, gt, "released")["score"] == 0.5 * (2 - 30)
    assert score(padded, gt)["detail"] == 0.0


def test_direct_question_block_points_need_a_line_holding_both_endpoints() -> None:
    gt = planning_gt(A, E, 0)
    two_rides = route(("Line 1", A, "Cedar"), ("Line 1", "Cedar", E))  # correct, but split in two
    assert score(two_rides, gt, "released")["detail"] == 2 + (4 - 5) + (4 - 5)
    assert score(two_rides, gt)["detail"] == 2 + 4 + (0 - 5)  # the second block stays on Line 1: padding
    wrong_line = route(("Line 4", A, E))
    assert score(wrong_line, gt, "released")["detail"] == 2 - 5  # Line 4 does not hold Elm: no +4
    assert score(wrong_line, gt)["detail"] == 2


def test_repeated_blocks_pay_in_released_mode_not_in_fixed_mode() -> None:
    gt = planning_gt(A, J, 2)
    once = route(("Line 1", A, J))
    twice = route(("Line 1", A, J), ("Line 1", A, J))
    assert score(twice, gt, "released")["detail"] > score(once, gt, "released")["detail"]  # 2+3+3 vs 2+3
    assert score(twice, gt)["detail"] == score(once, gt)["detail"] == 5.0


def test_splitting_a_ride_earns_no_transfer_point_in_fixed_mode() -> None:
    gt = planning_gt(A, G, 1)
    split = route(("Line 1", A, "Birch"), ("Line 1", "Birch", "Cedar"), ("Line 2", "Cedar", G))  # correct
    assert score(split, gt, "released")["detail"] == 2 + 3 + 1 + (3 - 5) + (3 - 5)
    # staying on Line 1 at Birch is no transfer and no new ride; boarding Line 2 at Cedar is both
    assert score(split, gt)["detail"] == 2 + 3 + 0 + 3 + 1 - 5


def test_repeating_a_standstill_ride_earns_nothing_in_fixed_mode() -> None:
    gt = planning_gt("Cedar", G, 2)  # a (non-minimal) transfer count from the data
    standstill, onward = ("Line 1", "Cedar", "Cedar"), ("Line 2", "Cedar", G)
    once, repeated = route(standstill, onward), route(standstill, standstill, onward)
    # a standstill is no ride, and one ride (Line 2 is direct) is all that is paid: the gold answer's 2 + 3
    assert score(once, gt)["detail"] == score(repeated, gt)["detail"] == score(route(onward), gt)["detail"] == 2 + 3
    assert score(repeated, gt, "released")["detail"] == 2 + 3 + 1 + 3 + 1 + (3 - 5)


def test_padding_never_beats_the_gold_when_the_stated_count_exceeds_the_minimum() -> None:
    """The data's transfer count can exceed the minimum (map-app routes): padding up to it used to pay +3 a block."""
    gt = planning_gt(A, G, 2)  # the minimum is 1 transfer
    gold = score(route(*ONE_TRANSFER), gt)["detail"]
    assert gold == 2 + 3 + 1 + 3
    standstill_at_the_end = route(*ONE_TRANSFER, ("Line 2", G, G))
    split_in_two = route(("Line 1", A, "Birch"), ("Line 1", "Birch", "Cedar"), ("Line 2", "Cedar", G))
    for padded in (standstill_at_the_end, split_in_two):
        assert score(padded, gt)["acc"] == 1.0
        assert score(padded, gt)["detail"] == gold


def test_standstills_neither_earn_nor_split_the_ride_around_them() -> None:
    gt = planning_gt(A, E, 2)  # Line 1 is direct; the data says two transfers
    ride = ("Line 1", A, E)
    details = [
        score(route(*rides), gt)["detail"]
        for rides in ([ride], [("Line 1", A, A), ride], [("Line 1", A, A), ("Line 4", A, A), ride])
    ]
    assert details == [2 + 3] * 3


def test_a_longer_real_route_earns_no_more_than_the_direct_one() -> None:
    network = {"Line 1": ["A", "B", "C"], "Line 2": ["C", "D"], "Line 3": ["A", "X", "D"]}
    gt = planning_gt("A", "D", 1, network=network)  # Line 3 is direct; the data says one transfer
    direct = score(route(("Line 3", "A", "D")), gt)
    via_c = score(route(("Line 1", "A", "C"), ("Line 2", "C", "D")), gt)
    assert direct["acc"] == via_c["acc"] == 1.0
    assert via_c["detail"] <= direct["detail"] == 2 + 3


def test_endpoints_gate_everything() -> None:
    gt = planning_gt(A, G, 1)
    reversed_route = route(("Line 2", G, "Cedar"), ("Line 1", "Cedar", A))
    for mode in ("released", "fixed"):
        result = score(reversed_route, gt, mode)
        assert (result["acc"], result["detail"]) == (0.0, 0.0)


def test_stop_order_and_optimality_are_not_checked() -> None:
    gt = planning_gt("Cedar", "Alder Station", 0)
    assert score(route(("Line 1", "Cedar", A)), gt)["acc"] == 1.0  # against the list order
    gt = planning_gt(A, "Fir", 1)
    detour = route(("Line 1", A, "Cedar"), ("Line 2", "Cedar", "Hazel"), ("Line 2", "Hazel", "Fir"))
    assert score(detour, gt, "released")["acc"] == score(detour, gt)["acc"] == 1.0


def test_broken_chain_or_foreign_stop_is_incorrect() -> None:
    gt = planning_gt(A, G, 1)
    broken = route(("Line 1", A, "Birch"), ("Line 2", "Cedar", G))
    off_line = route(("Line 1", A, "Fir"), ("Line 2", "Fir", G))
    unknown_line = route(("Line 7", A, "Cedar"), ("Line 2", "Cedar", G))
    for response in (broken, off_line, unknown_line):
        assert score(response, gt, "released")["acc"] == score(response, gt)["acc"] == 0.0


def test_station_spellings_are_normalised() -> None:
    gt = planning_gt(A, G, 1)
    spelled = route(("Line 1", "alder", "Cedar Station (Transfer Station)"), ("Line 2", "CEDAR", "Ginkgo站"))
    assert score(spelled, gt, "released")["acc"] == score(spelled, gt)["acc"] == 1.0


def test_station_written_with_station_after_its_marker_is_the_station() -> None:
    """The prompt asks for "xx Station", so a model writes "土桥站 Station"; released mode keeps the released flaw."""
    gt = planning_gt("土桥站", "梨园站", 0, network={"八通线": ["土桥站", "临河里站", "梨园站"], "Line 7": ["土桥站"]})
    for spelling in ("{} Station", "{} ", "{}（换乘站）"):
        response = route(("八通线", spelling.format("土桥站"), spelling.format("梨园站")))
        assert score(response, gt)["acc"] == 1.0, spelling
        assert score(response, gt)["detail"] == 6.0, spelling
        assert score(response, gt, "released")["acc"] == 0.0, spelling


def test_released_arrival_swallows_trailing_text_fixed_does_not() -> None:
    gt = planning_gt(A, G, 1, difficulty="hard")
    response = route(*ONE_TRANSFER) + "\nThis route takes about 20 minutes."
    assert score(response, gt, "released") == {"score": 0.0, "acc": 0.0, "format": 1.0, "detail": 0.0, "weight": 2.0}
    assert score(response, gt)["acc"] == 1.0 and score(response, gt)["format"] == 1.0


def test_released_reward_marks_long_template_answers_wrong() -> None:
    """The via-stop line after the arrival becomes part of the arrival under the released parsing."""
    gt = planning_gt(A, G, 1, template="long1")
    response = route(*ONE_TRANSFER, extra="Number of Via Stops: 1\n")
    assert score(response, gt, "released")["acc"] == 0.0
    assert score(response, gt)["acc"] == score(response, gt)["format"] == 1.0


def test_markdown_answer_correct_in_fixed_mode_but_not_formatted() -> None:
    gt = planning_gt(A, G, 1)
    response = route(*ONE_TRANSFER).replace("Route Name:", "**Route Name:**")
    assert score(response, gt, "released")["acc"] == 0.0  # "Route Name: " never matches: the line is "Wrong"
    assert score(response, gt) == {
        "score": 1.5 * (10 + 0.5 * 9),
        "acc": 1.0,
        "format": 0.0,
        "detail": 9.0,
        "weight": 1.5,
    }


def test_released_detail_reads_lower_case_labels_correctness_does_not() -> None:
    gt = planning_gt(A, E, 0)
    response = "route name: Line 1\nDeparture Stop: Alder Station\nArrival Stop: Elm"
    # detail: endpoints +2, one block over the (off-by-one) limit -5, route name "Wrong": no line points.
    assert score(response, gt, "released") == {"score": -1.5, "acc": 0.0, "format": 0.0, "detail": -3.0, "weight": 1.0}
    assert score(response, gt) == {"score": 10 + 0.5 * 6, "acc": 1.0, "format": 0.0, "detail": 6.0, "weight": 1.0}


def test_line_name_renames_and_case() -> None:
    response = route(("八通线", A, E))
    elsewhere, beijing = planning_gt(A, E, 0), planning_gt(A, E, 0, city="beijing")
    assert score(response, elsewhere, "released")["acc"] == 1.0  # released: renamed in every city
    assert score(response, elsewhere)["acc"] == 0.0
    assert score(response, beijing)["acc"] == 1.0
    lower = route(("line 1", A, E))
    assert score(lower, elsewhere, "released")["acc"] == 0.0
    assert score(lower, elsewhere)["acc"] == 1.0


def test_planning_format_needs_the_template_via_field() -> None:
    long1, long2 = planning_gt(A, G, 1, template="long1"), planning_gt(A, G, 1, template="long2")
    plain = route(*ONE_TRANSFER)
    assert score(plain, long1)["format"] == score(plain, long2)["format"] == 0.0
    assert score(route(*ONE_TRANSFER, extra="Number of Via Stops: 1\n"), long1)["format"] == 1.0
    assert score(route(*ONE_TRANSFER, extra="Number of Via Stops: many\n"), long1)["format"] == 0.0
    assert score(route(*ONE_TRANSFER, extra="Via Stops: Birch\n"), long2)["format"] == 1.0


def test_a_full_width_via_count_is_a_via_count() -> None:
    long1 = planning_gt(A, G, 1, template="long1")
    assert score(route(*ONE_TRANSFER, extra="Number of Via Stops: １\n"), long1)["format"] == 1.0


def test_junk_scores_nothing() -> None:
    gt = planning_gt(A, G, 1, difficulty="hard")
    for mode in ("released", "fixed", "sparse"):
        assert score("I am not sure. Route Name: nowhere\n\\boxed{maybe}", gt, mode)["score"] == 0.0


# VQA, hand-checked -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qtype", "answer", "response", "released_acc", "fixed_acc", "fmt"),
    [
        ("TorF1", 1, "\\boxed{yes}", 1, 1, 1),
        ("TorF1", 1, "\\boxed{Yes.}", 1, 1, 1),
        ("TorF1", 0, "\\boxed{yes}", 0, 0, 1),
        ("TorF2", 0, "\\boxed{\\text{No}}", 0, 1, 1),  # released: "{no}" after its greedy box regex
        ("TorF2", 0, "The answer is no. They are not.", 1, 1, 0),
        ("TorF1", 1, "\\boxed{yes or no}", 0, 0, 0),
        ("TorF1", 1, "\\boxed{yes} \\boxed{no}", 0, 0, 1),  # the last box counts
        ("Counting1", 2, "\\boxed{C}", 1, 1, 1),
        ("Counting1", 2, "\\boxed{(C) 4}", 0, 1, 1),
        ("Counting1", 2, "\\boxed{2}", 0, 0, 0),  # the index is not an option letter
        ("Counting1", 2, "\\boxed{C or D}", 0, 0, 0),
        ("Counting2", 3, "\\boxed{3}", 1, 1, 1),
        ("Counting2", 3, "\\boxed{3 lines}", 0, 1, 1),
        ("Counting2", 3, "\\boxed{three}", 0, 1, 1),
        ("Counting2", 3, "\\boxed{4}", 0, 0, 1),
        ("Counting3", 10, "So the answer is 10.", 1, 1, 0),
        ("Counting3", 10, "\\boxed{10 or 11}", 0, 0, 0),
        ("Counting3", 10, "", 0, 0, 0),
    ],
)
def test_vqa(qtype: str, answer: int, response: str, released_acc: int, fixed_acc: int, fmt: int) -> None:
    gt = vqa_gt(qtype, answer, difficulty="hard")
    released, fixed, sparse = (score(response, gt, mode) for mode in ("released", "fixed", "sparse"))
    assert released == {"score": 15.0 * released_acc, "acc": released_acc, "format": fmt, "detail": 0.0, "weight": 1.5}
    assert fixed == {
        "score": 1.5 * (fmt + 10 * fixed_acc),
        "acc": fixed_acc,
        "format": fmt,
        "detail": 0.0,
        "weight": 1.5,
    }
    assert sparse == {"score": 10.0 * fixed_acc, "acc": fixed_acc, "format": fmt, "detail": 0.0, "weight": 1.5}


# Options and inputs ----------------------------------------------------------------------------------------------


def test_sparse_is_unweighted_correctness() -> None:
    gt = planning_gt(A, G, 1, difficulty="hard")
    assert score(route(*ONE_TRANSFER), gt, "sparse") == {
        "score": 10.0,
        "acc": 1.0,
        "format": 1.0,
        "detail": 9.0,
        "weight": 2.0,
    }


def test_options_change_the_fixed_reward() -> None:
    gt = planning_gt(A, G, 1, difficulty="middle")
    response = route(*ONE_TRANSFER)
    assert score(response, gt, alpha=0.0)["score"] == pytest.approx(1.7 * 11)
    assert score(response, gt, format_reward=0.0)["score"] == pytest.approx(1.7 * 14.5)
    weights = {"easy": 2.0, "middle": 3.0, "hard": 4.0}
    assert score(response, gt, map_weights=weights, transfer_weight=0.0)["weight"] == 3.0
    assert score(response, gt, "released", map_weights=weights)["score"] == pytest.approx(3.5 * 12)
    assert score(response, gt, "released", alpha=0.0, format_reward=5.0)["score"] == pytest.approx(1.7 * 12)


def test_difficulty_weight() -> None:
    assert difficulty_weight("planning", "easy", 0) == 1.0
    assert difficulty_weight("planning", "middle", 1) == 1.7
    assert difficulty_weight("planning", "hard", 3) == 2.0
    assert difficulty_weight("Counting2", "hard", 3) == 1.5  # perception: map weight only
    with pytest.raises(ValueError):
        difficulty_weight("planning", "extreme", 0)
    with pytest.raises(ValueError):
        difficulty_weight("planning", "easy", 0, map_weights={"easy": 1.0})


def test_ground_truth_as_json_object_or_dict_scores_the_same() -> None:
    gt = planning_gt(A, G, 1, difficulty="hard")
    response = route(*ONE_TRANSFER)
    expected = compute_score("x", response, gt.to_json())
    assert compute_score("x", response, gt) == expected
    assert compute_score("x", response, dataclasses.asdict(gt)) == expected
    assert compute_score("x", response, json.loads(gt.to_json())) == expected


@pytest.mark.parametrize("bad", ["", "not json", "[]", json.dumps({"question_type": "planning"}), 42, None])
def test_invalid_ground_truth_raises_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        compute_score("x", "anything", bad)  # type: ignore[arg-type]


NAN, INF, HUGE = float("nan"), float("inf"), 10**400
HOSTILE_FIELDS: dict[str, list[object]] = {
    "question_type": [None, 1, ["planning"], "Planning"],
    "city": [None, 1, ["x"]],
    "map_difficulty": [None, 2, "extreme", ["easy"]],
    "network": [None, [], {}, "x", {"L": "AB"}, {"L": []}, {"L": [1, 2]}, {"L": [["A"]]}, {"L": {"a": "b"}}],
    "station_1": [None, 1, ["A"], {"a": {"b": []}}],
    "station_2": [None, 2.5],
    "template": [None, 1, "long3"],
    "question_transfer_count": [None, True, 1.5, 1.0, -1, HUGE, NAN, INF, "1", [1], {"a": {"b": []}}],
    "line": [None, 1],
    "options": [None, "ABCD", ["1", "2"], [1, 2, 3, 4], {"a": 1}],
    "country": [None, 1],
    "routes": ["x", [], {"0": "x"}, {"0": [1]}, {"0": {"a": 1}}],
    "schema_version": [None, True, 2, 1.0, "1"],
    "answer": [True, 1.0, -1, 2, HUGE, NAN, INF, "1", [1], {"a": 1}],  # on a TorF question: 1 or 0
}


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name, values in HOSTILE_FIELDS.items() for value in values], ids=repr
)
def test_a_hostile_ground_truth_field_is_a_value_error_naming_it(name: str, value: object) -> None:
    """Wrong types, booleans and floats for counts, huge ints, nan/inf, nested junk: never TypeError/OverflowError."""
    base = vqa_gt("TorF1", 1) if name == "answer" else planning_gt(A, G, 1)
    fields = {**dataclasses.asdict(base), name: value}
    with pytest.raises(ValueError, match=name):
        GroundTruth(**fields)
    for ground_truth in (json.dumps(fields), fields):
        for mode in ("fixed", "released", "sparse"):
            with pytest.raises(ValueError, match=name):
                compute_score("x", route(*ONE_TRANSFER), ground_truth, mode=mode)


@pytest.mark.parametrize(
    "text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, "NaN", "1e999", '"x"', "null"]
)
def test_hostile_ground_truth_json_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="ground_truth"):
        compute_score("x", "", text)
    with pytest.raises(ValueError, match="ground_truth"):
        GroundTruth.from_json(text)


def test_unknown_mode_raises_value_error() -> None:
    with pytest.raises(ValueError):
        compute_score("x", "", planning_gt(A, G, 1), mode="dense")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("alpha", NAN),
        ("alpha", INF),
        ("alpha", -0.5),
        ("alpha", True),
        ("alpha", "0.5"),
        ("alpha", HUGE),
        ("format_reward", -INF),
        ("format_reward", [1.0]),
        ("transfer_weight", NAN),
        ("transfer_weight", -1),
        ("map_weights", {"easy": 1.0, "middle": NAN, "hard": 1.5}),
        ("map_weights", {"easy": 1.0, "middle": 1.2, "hard": 0.0}),
        ("map_weights", {"easy": True, "middle": 1.2, "hard": 1.5}),
        ("map_weights", {"easy": 1.0, "middle": 1.2, "hard": 1.5, "medium": 1.2}),
        ("map_weights", [1.0, 1.2, 1.5]),
        ("mode", "dense"),
        ("mode", ["fixed"]),
    ],
    ids=repr,
)
def test_options_that_would_give_non_finite_or_meaningless_rewards_are_refused(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        compute_score("x", route(*ONE_TRANSFER), planning_gt(A, G, 1), **{option: value})
    with pytest.raises(ValueError, match=f"reward.reward_kwargs.{option}"):
        RewardOptions.from_kwargs({option: value}, where="reward.reward_kwargs.")


def test_options_are_a_checked_dataclass() -> None:
    options = RewardOptions.from_kwargs({"mode": "released", "alpha": 1, "transfer_weight": None})
    assert (options.mode, options.alpha, options.transfer_weight) == ("released", 1.0, 0.5)
    assert type(options.alpha) is float and dict(options.map_weights) == {"easy": 1.0, "middle": 1.2, "hard": 1.5}
    with pytest.raises(ValueError, match=r"reward.reward_kwargs: unknown keys \['alpah'\]"):
        RewardOptions.from_kwargs({"alpah": 0.5}, where="reward.reward_kwargs.")


@pytest.mark.parametrize("solution", [None, b"\xff\xfe Route Name:", 12345, "", "\x00" * 1000, "\udcff", ["list"]])
@pytest.mark.parametrize("extra_info", [None, {}, {"index": "x", "unexpected": object()}, 7, "text"])
def test_odd_inputs_give_a_result(solution: object, extra_info: object) -> None:
    for gt in (planning_gt(A, G, 1), vqa_gt("Counting1", 0)):
        for mode in ("released", "fixed", "sparse"):
            result = compute_score("x", solution, gt.to_json(), extra_info, mode=mode, unknown_kwarg=1)
            assert set(result) == set(SCORE_KEYS) and all(type(v) is float for v in result.values())


def test_gold_responses_score_full_correctness() -> None:
    cases = [planning_gt(A, J, 2, template=t) for t in PLANNING_TEMPLATES]
    cases += [vqa_gt("TorF1", 0), vqa_gt("TorF2", 1), vqa_gt("Counting1", 3), vqa_gt("Counting3", 4)]
    for gt in cases:
        result = score(gold_response(gt), gt)
        assert (result["acc"], result["format"]) == (1.0, 1.0)
    assert gold_response(cases[1]).count("Number of Via Stops: ") == 3
    assert "Via Stops: Fir, Ginkgo\n" in gold_response(cases[2])


def test_gold_via_stops_are_in_travel_order() -> None:
    """Riding against a line's list order, a rider passes the stops in reverse list order: the gold says so."""
    gt = planning_gt("Juniper", "Cedar", 2, template="long2")  # Line 3 J->H, Line 2 H->C: both against the lists
    answer = gold_response(gt)
    assert "Via Stops: Ivy\n" in answer and "Via Stops: Ginkgo, Fir\n" in answer
    assert "Number of Via Stops: 2\n" in gold_response(dataclasses.replace(gt, template="long1"))
    assert score(answer, gt)["acc"] == 1.0


def test_correct_answers_always_outscore_incorrect_ones_in_fixed_mode() -> None:
    """Every variation of blocks over NET's stations and lines, for a one-transfer question."""
    gt = planning_gt(A, G, 1, difficulty="hard")
    rng = random.Random(0)
    stations = sorted({s for line in NET.values() for s in line})
    correct, incorrect = [], []
    for _ in range(3000):
        rides, here = [], A
        for _ in range(rng.choice([1, 2, 2, 3, 4])):  # mostly chained walks along real lines, sometimes not
            serving = [line for line, on in NET.items() if here in on]
            line = rng.choice(serving) if serving and rng.random() < 0.8 else rng.choice([*NET, "Line 9"])
            there = rng.choice(NET.get(line, stations)) if rng.random() < 0.9 else rng.choice(stations)
            rides.append((line, here if rng.random() < 0.9 else rng.choice(stations), there))
            here = there
        rides[-1] = (rides[-1][0], rides[-1][1], G) if rng.random() < 0.5 else rides[-1]
        result = score(route(*rides), gt)
        (correct if result["acc"] else incorrect).append(result["score"])
    assert len(correct) > 50 and len(incorrect) > 50
    assert min(correct) > max(incorrect)


# Real networks --------------------------------------------------------------------------------------------------


def _released_spellings_agree(network: MetroNetwork, response: str) -> bool:
    """Whether the released normaliser sees one name for every station of the response (it splits Beijing's
    "东管头南站 " on Line 16 from "东管头南站" on 房山线, so a route transferring there is wrong in released mode)."""
    spellings: dict[str, set[str]] = {}
    for stations in network.lines.values():
        for station in stations:
            spellings.setdefault(normalize_station(station), set()).add(normalize_station_released(station))
    stops = [block.departure for block in parse_route_blocks(response)]
    return all(len(spellings.get(normalize_station(stop), ())) <= 1 for stop in stops)


@pytest.mark.parametrize("template", PLANNING_TEMPLATES)
def test_gold_minimum_transfer_routes_are_correct_in_every_real_city(reasonmap_dir: object, template: str) -> None:
    files = real_station_files()
    assert len(files) == 30
    rng = random.Random(1)
    checked = 0
    for path in files:
        network = MetroNetwork.from_json(path)
        lines = network.to_dict()
        stations = network.stations
        pairs = [tuple(rng.sample(stations, 2)) for _ in range(6)]
        # Always include a transfer-heavy pair: the two ends of the first and last line.
        pairs.append((network.lines[next(iter(lines))][0], network.lines[list(lines)[-1]][-1]))
        for origin, destination in pairs:
            if network.canonical(origin) == network.canonical(destination):
                continue
            transfers = network.min_transfers(origin, destination)
            if transfers is None:
                continue
            gt = GroundTruth(
                question_type="planning",
                city=path.stem,
                map_difficulty="hard",
                network=lines,
                station_1=origin,
                station_2=destination,
                template=template,
                question_transfer_count=transfers,
                country=path.parent.name,
            )
            response = gold_response(gt)
            fixed = compute_score("reasonmap", response, gt.to_json())
            assert (fixed["acc"], fixed["format"]) == (1.0, 1.0), (path.stem, response)
            rides = transfers + 1
            assert fixed["detail"] == (6.0 if transfers == 0 else min(10.0, 2 + 3 * rides + transfers))
            if template == "short" and _released_spellings_agree(network, response):
                released = compute_score("reasonmap", response, gt.to_json(), mode="released")
                assert released["acc"] == 1.0, (path.stem, response)
                assert released["detail"] == (1.0 if transfers == 0 else min(10.0, 2 + 3 * rides + transfers - 5))
            checked += 1
    assert checked >= 150


def test_every_real_line_and_station_resolves_to_itself(reasonmap_dir: object) -> None:
    for path in real_station_files():
        lines = MetroNetwork.from_json(path).to_dict()
        gt = planning_gt("x", "y", 0, network=lines, city=path.stem)
        ctx = question_context(gt)
        for line, stations in lines.items():
            assert ctx.tolerant_line(line) == released_line(line, ctx) == line
            text = route(*((line, a, b) for a, b in itertools.pairwise(stations[:3])))
            legs = tolerant_legs(parse_route_blocks(text), ctx)
            strict = released_legs(parse_route_blocks_strict(text), ctx)
            expected = [line] * min(2, len(stations) - 1)
            assert [leg.line for leg in legs] == [leg.line for leg in strict] == expected, (path.stem, line)


def _spellings(station: str) -> list[str]:
    """How a model may write a station: as listed, with the prompt's " Station", with "站 Station", padded."""
    marked = station if station.rstrip().endswith("站") else station + "站"
    return [station, station + "  ", station + " Station", marked + " Station", marked + " ", f" {station} Station "]


def test_every_real_station_matches_itself_however_suffixed(reasonmap_dir: object) -> None:
    files = real_station_files()
    assert len(files) == 30
    for path in files:
        network = MetroNetwork.from_json(path)
        ctx = question_context(planning_gt("x", "y", 0, network=network.to_dict(), city=path.stem))
        for line, stations in network.lines.items():
            for station in stations:
                for spelling in _spellings(station):
                    assert normalize_station(spelling) == normalize_station(station), (path.stem, spelling)
                    assert normalize_station(spelling) in ctx.index.line_stations[line], (path.stem, line, spelling)
            first, last = stations[0], stations[-1]
            if network.canonical(first) == network.canonical(last):
                continue  # a loop line
            gt = planning_gt(first, last, 0, network=network.to_dict(), city=path.stem)
            for a, b in zip(_spellings(first), _spellings(last), strict=True):
                assert score(route((line, a, b)), gt)["acc"] == 1.0, (path.stem, line, a, b)


def test_beijing_line_16_rides_through_its_spaced_donguantounan(reasonmap_dir: object) -> None:
    """Line 16 lists "东管头南站 （换乘站）" (a space before the marker): still the transfer station with 房山线."""
    network = MetroNetwork.from_json(reasonmap_dir / "stations" / "china" / "beijing.json")
    assert network.lines_through("东管头南站") == ["Line 16", "房山线"]
    gt = planning_gt("红莲南路站", "东管头南站", 0, network=network.to_dict(), city="beijing")
    ride = route(("Line 16", "红莲南路站", "东管头南站"))
    assert (score(ride, gt)["acc"], score(ride, gt)["detail"]) == (1.0, 6.0)
    assert score(ride, gt, "released")["acc"] == 0.0  # the released normaliser keeps the flaw


def test_detail_functions_without_a_network_give_zero() -> None:
    ctx = question_context(vqa_gt("TorF1", 1))
    assert released_detail([], ctx, 0) == fixed_detail([], ctx, 0) == 0.0
    assert not route_correct([], ctx)
