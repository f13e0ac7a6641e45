"""Benchmark metrics on whole datasets: gold answers score the maximum, perturbed ones hand-checked partial scores,
garbage zero, and any string a result (hypothesis); on synthetic networks and on the real ones when present."""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep.synthetic import SyntheticParams, build_cities
from reward_fns.benchmark import (
    PLUS_READINGS,
    RULE_SETS,
    VALIDATION_KEYS,
    evaluate_planning,
    evaluate_vqa,
    validation_metrics,
)
from reward_fns.gold import gold_response
from reward_fns.ground_truth import GroundTruth
from reward_fns.network import MetroNetwork
from tests.conftest import real_station_files


@pytest.fixture(scope="module")
def synthetic_questions() -> list[GroundTruth]:
    cities = build_cities(SyntheticParams(cities=4, seed=7, questions_per_city=30, render=False))
    return [q.ground_truth for c in cities for q in c.questions]


def _planning(questions: list[GroundTruth]) -> Iterator[GroundTruth]:
    return (gt for gt in questions if gt.question_type == "planning")


def fixed_points(gt: GroundTruth, *, wrong_first_line: bool = False) -> float:
    """The fixed rules' points (before cap and bonus) of an answer matching its reference route in every name,
    stop and via stop; ``wrong_first_line``: the same with the first ride's line name wrong (2 name points lost,
    and in template 2 that ride leaves the IoU)."""
    reference = gt.routes["0"]
    n, via = len(reference), sum(len(r["via_stops"]) for r in reference)
    points = 1 + 4 * n - (2 if wrong_first_line else 0)
    if gt.template == "long1":
        points += min(10, 4 * n)
    elif gt.template == "long2":
        in_iou = sum(len(r["via_stops"]) for r in reference[1 if wrong_first_line else 0 :])
        points += ((10 if in_iou else 0) + min(10, via)) / 2
    return points


def cap_of(gt: GroundTruth) -> int:
    return 10 if gt.template == "short" else 20


def fixed_maximum(gt: GroundTruth) -> float:
    """The fixed rules' map score of a correct answer matching its reference route everywhere."""
    return min(cap_of(gt), fixed_points(gt)) + cap_of(gt)


def replace_last_arrival(gold: str, arrival: str, new: str) -> str:
    head, label, tail = gold.rpartition(f"Arrival Stop: {arrival}\n")
    return head + f"Arrival Stop: {new}\n" + tail


def released_synthetic_score(gt: GroundTruth) -> float:
    """The released rules on the same answer in a synthetic (non-Chinese) city whose stops end with "Station":
    no route-name points (slip 1), the arrival replaced by the departure (slip 2), template 2 unscored (slip 3),
    so 1 + 1 per ride (+ the exact counts of template 1)."""
    n = len(gt.routes["0"])
    return {
        "short": min(10, 1 + n) + 10,
        "long1": min(20, 1 + n + min(10, 4 * n)) + 20,
        "long2": min(20, 1 + n) + 20,
    }[gt.template]


def test_gold_answers_score_the_maximum_on_synthetic_networks(synthetic_questions: list[GroundTruth]) -> None:
    templates = set()
    for gt in synthetic_questions:
        gold = gold_response(gt)
        if gt.question_type != "planning":
            for reading in PLUS_READINGS:
                assert evaluate_vqa(gt, gold, reading=reading)["acc"] == 1, (gt.question_type, reading)
            continue
        templates.add(gt.template)
        fixed = evaluate_planning(gt, gold, rules="fixed")
        released = evaluate_planning(gt, gold, rules="released")
        assert fixed["acc"] == released["acc"] == 1
        assert fixed["map_score"] == pytest.approx(fixed_maximum(gt)), gt.template
        assert released["map_score"] == pytest.approx(released_synthetic_score(gt)), gt.template
    assert templates == {"short", "long1", "long2"}


def test_perturbed_answers_lose_what_they_got_wrong(synthetic_questions: list[GroundTruth]) -> None:
    """Fixed rules, by hand: a wrong line costs the bonus and 2 points; a wrong destination everything; a via
    count one too high on a ride with c via stops costs 4/c of its 4 points; a wrong VQA answer its accuracy."""
    for gt in _planning(synthetic_questions):
        gold = gold_response(gt)
        reference = gt.routes["0"]
        wrong_line = gold.replace(f"Route Name: {reference[0]['route_name']}\n", "Route Name: Line ZZ\n", 1)
        result = evaluate_planning(gt, wrong_line, rules="fixed")
        expected = min(cap_of(gt), fixed_points(gt, wrong_first_line=True))
        assert (result["acc"], result["map_score"]) == (0, pytest.approx(expected))
        wrong_end = replace_last_arrival(gold, reference[-1]["arrival_stop"], "Nowhere Station")
        for rules in RULE_SETS:
            result = evaluate_planning(gt, wrong_end, rules=rules)
            assert (result["acc"], result["map_score"]) == (0, 0.0)
        if gt.template == "long1" and reference[0]["num_via_stops"] > 0:
            c = reference[0]["num_via_stops"]
            off = gold.replace(f"Number of Via Stops: {c}\n", f"Number of Via Stops: {c + 1}\n", 1)
            counts = sum(4 for _ in reference) - 4 / c
            expected = min(20, 1 + 4 * len(reference) + min(10, counts)) + 20
            assert evaluate_planning(gt, off, rules="fixed")["map_score"] == pytest.approx(expected)
    for gt in synthetic_questions:
        if gt.question_type == "TorF1":
            wrong = "\\boxed{no}" if gt.answer == 1 else "\\boxed{yes}"
            assert {evaluate_vqa(gt, wrong, reading=r)["acc"] for r in PLUS_READINGS} == {0}


# No digit, yes/no or standalone a-d: VLMEvalKit reads a count from any digit and an option from any "a"-"d".
GARBAGE = [
    "",
    "I don't know.",
    "Line one then Line two",
    "\\boxed{}",
    "--\n--\n",
    "Route Name Departure Arrival",
    "🚇" * 50,
]


def test_garbage_scores_zero(synthetic_questions: list[GroundTruth]) -> None:
    for gt in synthetic_questions[:60]:
        for text in GARBAGE:
            if gt.question_type == "planning":
                for rules in RULE_SETS:
                    result = evaluate_planning(gt, text, rules=rules)
                    assert (result["acc"], result["map_score"]) == (0, 0.0)
            else:
                assert {evaluate_vqa(gt, text, reading=r)["acc"] for r in PLUS_READINGS} == {0}


def _check_bounds(gt: GroundTruth, text: Any) -> None:
    if gt.question_type == "planning":
        cap = 10 if gt.template == "short" else 20
        for rules in RULE_SETS:
            result = evaluate_planning(gt, text, rules=rules)
            assert result["acc"] in (0, 1)
            assert 0 <= result["map_score"] <= 2 * cap
            assert result["acc"] == 0 or result["map_score"] >= cap  # a correct answer always gets the bonus
    else:
        for reading in PLUS_READINGS:
            assert evaluate_vqa(gt, text, reading=reading)["acc"] in (0, 1)
    metrics = validation_metrics(gt, text)
    assert tuple(metrics) == VALIDATION_KEYS
    assert all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in metrics.values())


FRAGMENTS = st.sampled_from(
    [
        "Route Name: ",
        "Departure Stop: ",
        "Arrival Stop: ",
        "Number of Via Stops: ",
        "Via Stops: ",
        "--",
        "\n",
        "Line 1",
        "Line A",
        "站",
        " Station",
        ", ",
        "，",
        "(",
        ")",
        "\\boxed{",
        "}",
        "yes",
        "B",
        "3",
        "３",
        "9" * 5000,
        "the answer is ",
        " ",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(), st.lists(FRAGMENTS, max_size=40).map("".join)), index=st.integers(0, 10**6))
def test_any_string_gets_a_result_within_bounds(synthetic_questions: list[GroundTruth], text: str, index: int) -> None:
    _check_bounds(synthetic_questions[index % len(synthetic_questions)], text)


def test_non_string_responses_score_zero(synthetic_questions: list[GroundTruth]) -> None:
    for gt in synthetic_questions[:12]:
        for response in (None, 3, ["Route Name: Line 1"], b"\xff\xfe"):
            _check_bounds(gt, response)


# The same on the real networks ----------------------------------------------------------------------------------


def _real_questions(rng: random.Random) -> Iterator[GroundTruth]:
    """Per real network and template, a question whose reference is the network's own minimum-transfer route."""
    for path in real_station_files():
        network = MetroNetwork.from_json(path)
        for template in ("short", "long1", "long2"):
            for _ in range(20):
                origin, destination = rng.sample(network.stations, 2)
                rides = network.min_transfer_route(origin, destination)
                if rides and network.canonical(origin) != network.canonical(destination):
                    break
            else:
                continue
            reference = [
                {
                    "route_name": r.line,
                    "departure_stop": r.departure,
                    "arrival_stop": r.arrival,
                    "via_stops": network.stops_between(r.line, r.departure, r.arrival),
                    "num_via_stops": len(network.stops_between(r.line, r.departure, r.arrival)),
                }
                for r in rides
            ]
            yield GroundTruth(
                question_type="planning",
                city=path.stem,
                country=path.parent.name,
                map_difficulty="hard",
                network=network.to_dict(),
                station_1=origin,
                station_2=destination,
                template=template,
                question_transfer_count=len(rides) - 1,
                routes={"0": reference},
            )


def test_gold_perturbed_and_garbage_on_real_networks(reasonmap_dir: Any) -> None:
    rng = random.Random(11)
    count = 0
    for gt in _real_questions(rng):
        count += 1
        gold = gold_response(gt)
        fixed = evaluate_planning(gt, gold, rules="fixed")
        assert (fixed["acc"], fixed["map_score"]) == (1, pytest.approx(fixed_maximum(gt))), gt.city
        assert evaluate_planning(gt, gold, rules="released")["acc"] == 1, gt.city
        first = gt.routes["0"][0]["route_name"]
        wrong_line = gold.replace(f"Route Name: {first}\n", "Route Name: Line ZZ\n", 1)
        result = evaluate_planning(gt, wrong_line, rules="fixed")
        expected = min(cap_of(gt), fixed_points(gt, wrong_first_line=True))
        assert (result["acc"], result["map_score"]) == (0, pytest.approx(expected)), gt.city
        for text in GARBAGE:
            for rules in RULE_SETS:
                assert (evaluate_planning(gt, text, rules=rules)["map_score"]) == 0.0
        _check_bounds(gt, gold[: len(gold) // 2])
    assert count >= 80


@functools.lru_cache(maxsize=1)
def _real_question_list() -> tuple[GroundTruth, ...]:
    return tuple(_real_questions(random.Random(5)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(), st.lists(FRAGMENTS, max_size=40).map("".join)), index=st.integers(0, 10**6))
def test_any_string_on_real_networks(reasonmap_dir: Any, text: str, index: int) -> None:
    questions = _real_question_list()
    gt = questions[index % len(questions)]
    _check_bounds(gt, text)
    _check_bounds(gt, gold_response(gt)[: index % 200] + text)
