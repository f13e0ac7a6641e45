"""Benchmark metrics API: map score and accuracy under both rule sets, ReasonMap and ReasonMap-Plus aggregates.

The metrics used to follow neither rule set (a "paper" parser or the reward's tolerant one); their tests are
ported to the rule set that means what they checked: ``fixed`` for the intended rules (reference line names mapped
onto the network, stops normalised like the training reward, template 2 everywhere, weighted accuracy), with the
``released`` numbers for the same inputs computed by hand beside them. The tolerant parser has no rule set: the
assertion that it read markdown labels is gone; its ReasonMap-Plus reading maps onto VLMEvalKit's.
"""

from __future__ import annotations

import random
import re

import pytest

from reward_fns.benchmark import (
    RULE_SETS,
    EvalRecord,
    evaluate_planning,
    evaluate_vqa,
    reasonmap_metrics,
    reasonmap_plus_metrics,
)
from reward_fns.gold import gold_response
from reward_fns.ground_truth import GroundTruth
from reward_fns.network import MetroNetwork
from reward_fns.weights import question_level, reasonmap_eval_weight
from tests.conftest import real_station_files
from tests.reward_helpers import ONE_TRANSFER, planning_gt, ride, route, vqa_gt

A, G = "Alder Station", "Ginkgo"


# Reference routes in map-app style: plan 1 is the answer's route, plan 2 another one.
ROUTES = {
    "1": [ride("地铁1号线(Alder--Elm)", "Alder", "Cedar", ["Birch"]), ride("地铁2号线", "Cedar", "Ginkgo", ["Fir"], 4)],
    "2": [ride("Line 4", "Alder", "Kauri", []), ride("Line 9", "Kauri", "Ginkgo", ["X"])],
}


# Line names -------------------------------------------------------------------------------------------------------

BEIJING = ["Line 1", "Line 2", "Line 8", "房山线", "昌平线", "首都机场线"]
KL = ["Line 1", "Line 2", "Line 3", "Line 4", "Line 5", "Line 9", "Line 12"]
SINGAPORE = ["North South Line", "East West Line", "North East Line", "Circle Line", "Downtown Line"]


def app_style(line: str, country: str) -> str:
    """A map-app rendering of a network line name, as the benchmark's reference routes write them."""
    numbered = re.fullmatch(r"Line (\w+)", line)
    if country == "china":
        if numbered and numbered.group(1).isdigit():
            return f"地铁{numbered.group(1)}号线(起点--终点)"
        return f"地铁{line}(起点--终点)"
    if numbered:
        return f"Metro {numbered.group(1)} Line"
    if re.fullmatch(r"\w{1,2}", line):
        return f"{line} Train"
    return line


# Map score, hand-checked ----------------------------------------------------------------------------------------
# NET (tests.reward_helpers) spells "Alder Station" and the other stops bare; ROUTES write the stops bare and the
# lines map-app style. Released outside China compares the MODEL's rewritten name ("Line 1" -> "Line Li": never
# +2) and appends " Station" to the reference arrival (so "Cedar" never matches it); in China it appends "站".


def _subset(result: dict, **expected: object) -> dict:
    return {key: result[key] for key in expected}


def test_map_score_short_correct_answer() -> None:
    gt = planning_gt(A, G, 1, routes=ROUTES, country="china")
    # fixed, plan 1: endpoints 1 + per block (name 2 + departure 1 + arrival 1) x 2 = 9; correct: +10.
    expected = {"acc": 1, "map_score": 19.0, "map_score_max": 20.0, "weight": 1.5, "template": "short"}
    assert _subset(evaluate_planning(gt, route(*ONE_TRANSFER), rules="fixed"), **expected) == expected
    # released: names right (digits), no stop matches "Alder站" / "Cedar站" / "Ginkgo站" (clean_string keeps 站):
    # 1 + 2 + 2 = 5, +10; weight 1.
    released = evaluate_planning(gt, route(*ONE_TRANSFER), rules="released")
    assert (released["acc"], released["map_score"], released["weight"], released["appendix_weight"]) == (1, 15, 1, 1.5)


def test_map_score_short_incorrect_answer_gets_partial_credit() -> None:
    gt = planning_gt(A, G, 1, routes=ROUTES)
    answer = route(("Line 1", A, "Dogwood"), ("Line 2", "Dogwood", G))  # Dogwood is not on Line 2
    # fixed, plan 1: 1 + (2 + 1 + 0) + (2 + 0 + 1) = 7; released: 1 + the first departure only = 2
    assert evaluate_planning(gt, answer, rules="fixed")["map_score"] == 7.0
    assert evaluate_planning(gt, answer, rules="released")["map_score"] == 2.0
    assert {evaluate_planning(gt, answer, rules=r)["acc"] for r in RULE_SETS} == {0}


def test_map_score_needs_the_endpoints() -> None:
    gt = planning_gt(A, G, 1, routes=ROUTES)
    answer = route(("Line 1", "Birch", "Cedar"), ("Line 2", "Cedar", G))
    assert {evaluate_planning(gt, answer, rules=r)["map_score"] for r in RULE_SETS} == {0.0}


def test_map_score_long1_via_stop_counts() -> None:
    gt = planning_gt(A, G, 1, template="long1", routes=ROUTES)
    answer = (
        "Route Name: Line 1\nDeparture Stop: Alder Station\nArrival Stop: Cedar\nNumber of Via Stops: 1\n--\n"
        "Route Name: Line 2\nDeparture Stop: Cedar\nArrival Stop: Ginkgo\nNumber of Via Stops: 3\n"
    )
    # fixed: 1 + 4 + 4 + via counts (exact: 4; 3 for 4: 4 - 4 x 1/4 = 3) = 16; correct: +20.
    expected = {"acc": 1, "map_score": 36.0, "map_score_max": 40.0, "weight": 1.5, "template": "long1"}
    assert _subset(evaluate_planning(gt, answer, rules="fixed"), **expected) == expected
    # released: 1 + the first departure + the same 7 count points = 9, +20
    assert evaluate_planning(gt, answer, rules="released")["map_score"] == 29.0


def test_map_score_long2_via_stops_for_any_country() -> None:
    gt = planning_gt(A, G, 1, template="long2", routes=ROUTES, country="italy")
    answer = (
        "Route Name: Line 1\nDeparture Stop: Alder Station\nArrival Stop: Cedar\nVia Stops: Birch Station\n--\n"
        "Route Name: Line 2\nDeparture Stop: Cedar\nArrival Stop: Ginkgo\nVia Stops: Fir, Hazel\n"
    )
    # fixed: matched stops 2; IoU over same-line blocks {birch, fir} / {birch, fir, hazel}; (10 x 2/3 + 2) / 2.
    expected = 1 + 8 + (10 * 2 / 3 + 2) / 2 + 20
    assert evaluate_planning(gt, answer, rules="fixed")["map_score"] == pytest.approx(expected)
    # released: template 2 scores nothing outside China: 1 + the first departure, +20
    assert evaluate_planning(gt, answer, rules="released")["map_score"] == 22.0


def test_map_score_caps_and_best_plan() -> None:
    long_route = [ride("Line 1", "Alder", "Cedar", [])] * 5
    gt = planning_gt(A, "Cedar", 0, routes={"short": [ride("Line 4", "Alder", "Kauri", [])], "long": long_route})
    answer = route(*[("Line 1", A, "Cedar")] * 5)  # incorrect (Cedar -> Alder chain broken), gated
    # fixed, against "long": 1 + 5 x 4 = 21, capped at 10; released: 1 + 5 departures = 6 (the short plan: 2)
    assert evaluate_planning(gt, answer, rules="fixed")["map_score"] == 10.0
    assert evaluate_planning(gt, answer, rules="released")["map_score"] == 6.0


def test_map_score_is_none_without_reference_routes() -> None:
    for rules in RULE_SETS:
        result = evaluate_planning(planning_gt(A, G, 1), route(*ONE_TRANSFER), rules=rules)
        assert result["map_score"] is None and result["acc"] == 1


def test_reference_names_and_stops_are_normalised_not_the_answer_rewritten() -> None:
    """Official slips 1 and 2: rules applied to the answer's line name; arrival suffix from the departure."""
    network = {"Line A": ["Union Station", "Civic Center", "Pershing Square"], "Line B": ["Pershing Square", "Hill St"]}
    routes = {
        "1": [ride("Metro A Line", "Union", "Civic Center", []), ride("Metro B-Line", "Civic Center", "Hill St", [])]
    }
    gt = planning_gt(
        "Union Station", "Hill St", 1, network=network, routes=routes, city="los_angeles", country="america"
    )
    wrong = route(("Line A", "Union Station", "Civic Center"), ("Line B", "Civic Center", "Hill St"))  # off line B
    # fixed: 1 + (2 + 1 + 1) + (2 + 1 + 1): reference names mapped, "Union" = "Union Station", arrivals kept.
    expected = {"acc": 0, "map_score": 9.0, "map_score_max": 20.0, "weight": 1.5, "template": "short"}
    assert _subset(evaluate_planning(gt, wrong, rules="fixed"), **expected) == expected
    # A model copying the app's line name gets no name points: it is not the network's line.
    app_named = wrong.replace("Route Name: Line A", "Route Name: Metro A Line")
    assert evaluate_planning(gt, app_named, rules="fixed")["map_score"] == 7.0
    # released: no name points either way, only the first departure ("Union" + " Station") matches
    assert {evaluate_planning(gt, t, rules="released")["map_score"] for t in (wrong, app_named)} == {2.0}


def test_benchmark_parse_reads_long_answers_by_line() -> None:
    gt = planning_gt(A, G, 1, template="long1")
    answer = route(*ONE_TRANSFER, extra="Number of Via Stops: 1\n")
    markdown = answer.replace("Route Name:", "**Route Name:**")
    for rules in RULE_SETS:
        assert evaluate_planning(gt, answer, rules=rules)["acc"] == 1  # the reward's released parse would say 0
        assert evaluate_planning(gt, markdown, rules=rules)["acc"] == 0


# Aggregates ------------------------------------------------------------------------------------------------------


def test_weights_of_the_evaluation() -> None:
    assert [question_level(t) for t in (0, 1, 2, 5)] == [0, 1, 2, 2]
    assert reasonmap_eval_weight("easy", 0) == 1.0
    assert reasonmap_eval_weight("middle", 1) == 2.0
    assert reasonmap_eval_weight("hard", 4) == 3.0


def test_reasonmap_metrics() -> None:
    records = [
        EvalRecord(planning_gt(A, "Elm", 0), route(("Line 1", A, "Elm"))),  # short, weight 1, correct
        (planning_gt(A, "Juniper", 2, difficulty="hard").to_json(), "no idea"),  # short, weight 3, wrong
        (
            planning_gt(A, G, 1, difficulty="middle", template="long1", routes=ROUTES),
            route(*ONE_TRANSFER, extra="Number of Via Stops: 1\n"),
        ),  # long, weight 2, correct; fixed map score 1 + 8 + 4 + 1 (1 for 4) = 14, +20; released 1 + 1 + 5, +20
    ]
    report = reasonmap_metrics(records, rules="fixed")
    assert report["short"] == {
        "n": 2,
        "accuracy": 0.5,
        "weighted_accuracy": 0.25,
        "appendix_weighted_accuracy": 0.25,
        "n_map_scored": 0,
        "map_score": 0.0,
        "map_score_fraction": 0.0,
        "via_count_points": 0.0,
        "via_stops_points": 0.0,
    }
    assert report["long"] == pytest.approx(
        {
            "n": 1,
            "accuracy": 1.0,
            "weighted_accuracy": 1.0,
            "appendix_weighted_accuracy": 1.0,
            "n_map_scored": 1,
            "map_score": 34.0,
            "map_score_fraction": 34 / 40,
            "via_count_points": 5.0,
            "via_stops_points": 0.0,
        }
    )
    assert report["overall"]["accuracy"] == pytest.approx(2 / 3)
    assert report["overall"]["weighted_accuracy"] == pytest.approx(3 / 6)
    released = reasonmap_metrics(records, rules="released")
    assert released["short"]["weighted_accuracy"] == 0.5  # the released weight is 1: the plain mean
    assert released["short"]["appendix_weighted_accuracy"] == 0.25
    assert released["overall"]["weighted_accuracy"] == pytest.approx(2 / 3)
    assert released["overall"]["appendix_weighted_accuracy"] == pytest.approx(0.5)
    assert released["long"]["map_score"] == 27.0


def test_reasonmap_plus_metrics() -> None:
    records = [
        (vqa_gt("TorF1", 1), "\\boxed{yes}"),  # weight 1, correct
        (vqa_gt("TorF2", 0, difficulty="hard"), "\\boxed{yes}"),  # weight 2, wrong
        (vqa_gt("Counting1", 2, difficulty="middle"), "The answer is C."),  # weight 1.5, correct
        (vqa_gt("Counting2", 3, difficulty="hard"), "\\boxed{3}"),  # weight 2, correct
        (
            vqa_gt("Counting3", 9, difficulty="hard"),
            "\\boxed{9 lines}",
        ),  # weight 2: wrong as released, right in VLMEvalKit
    ]
    report = reasonmap_plus_metrics(records, reading="released")  # also the fixed rules' reading (no slip there)
    assert report["overall"] == pytest.approx({"n": 5, "accuracy": 0.6, "weighted_accuracy": 4.5 / 8.5})
    assert report["torf"] == pytest.approx({"n": 2, "accuracy": 0.5, "weighted_accuracy": 1 / 3})
    assert report["counting"] == pytest.approx({"n": 3, "accuracy": 2 / 3, "weighted_accuracy": 3.5 / 5.5})
    assert report["per_type"]["Counting3"] == {"n": 1, "accuracy": 0.0, "weighted_accuracy": 0.0}
    vlmevalkit = reasonmap_plus_metrics(records, reading="vlmevalkit")
    assert vlmevalkit["counting"]["accuracy"] == 1.0
    assert reasonmap_plus_metrics([], reading="released")["overall"] == {
        "n": 0,
        "accuracy": 0.0,
        "weighted_accuracy": 0.0,
    }


def test_plus_weighted_accuracy_of_the_spec() -> None:
    """Four answers (easy right, middle wrong, hard right, hard right): (1 + 0 + 2 + 2) / 6.5 in both readings."""
    records = [
        (vqa_gt("TorF1", 1, difficulty="easy"), "\\boxed{yes}"),
        (vqa_gt("TorF1", 1, difficulty="middle"), "\\boxed{no}"),
        (vqa_gt("Counting2", 4, difficulty="hard"), "\\boxed{4}"),
        (vqa_gt("Counting1", 0, difficulty="hard"), "\\boxed{A}"),
    ]
    for reading in ("released", "vlmevalkit"):
        overall = reasonmap_plus_metrics(records, reading=reading)["overall"]
        assert overall == pytest.approx({"n": 4, "accuracy": 0.75, "weighted_accuracy": 5 / 6.5})


def test_evaluate_rejects_the_wrong_question_kind_and_unknown_rules() -> None:
    with pytest.raises(ValueError):
        evaluate_planning(vqa_gt("TorF1", 1), "\\boxed{yes}", rules="released")
    with pytest.raises(ValueError):
        evaluate_vqa(planning_gt(A, G, 1), "anything", reading="released")
    with pytest.raises(ValueError, match="rules"):
        evaluate_planning(planning_gt(A, G, 1), "anything", rules="paper")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rules"):
        evaluate_planning(planning_gt(A, G, 1), "anything", rules="vlmevalkit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reading"):  # one name per reading: fixed reads ReasonMap-Plus as released
        evaluate_vqa(vqa_gt("TorF1", 1), "\\boxed{yes}", reading="fixed")  # type: ignore[arg-type]


@pytest.mark.parametrize("response", ["", "\x00" * 100, "Route Name: \n--\n" * 1000, "(" * 100_000, None, b"\xff"])
def test_metrics_are_total(response: object) -> None:
    gt = planning_gt(A, G, 1, template="long2", routes=ROUTES)
    for rules in RULE_SETS:
        assert evaluate_planning(gt, response, rules=rules)["acc"] == 0
    for reading in ("released", "vlmevalkit"):
        assert evaluate_vqa(vqa_gt("Counting1", 1), response, reading=reading)["acc"] == 0


def _real_question(path: object, rng: random.Random, template: str, *, suffixed_only: bool) -> GroundTruth | None:
    """A question on a real network with its own minimum-transfer rides as an app-style reference route."""
    network = MetroNetwork.from_json(path)
    stations = [s for s in network.stations if not suffixed_only or s.endswith(("站", "Station"))]
    origin, destination = rng.sample(stations, 2)
    rides = network.min_transfer_route(origin, destination)
    if not rides or network.canonical(origin) == network.canonical(destination):
        return None
    if suffixed_only and any(not s.endswith(("站", "Station")) for r in rides for s in (r.departure, r.arrival)):
        return None
    reference = [
        ride(
            app_style(r.line, path.parent.name),
            r.departure.removesuffix("站").removesuffix(" Station"),
            r.arrival.removesuffix("站").removesuffix(" Station") if suffixed_only else r.arrival,
            network.stops_between(r.line, r.departure, r.arrival),
        )
        for r in rides
    ]
    return GroundTruth(
        question_type="planning",
        city=path.stem,
        map_difficulty="easy",
        network=network.to_dict(),
        station_1=origin,
        station_2=destination,
        template=template,
        question_transfer_count=len(rides) - 1,
        country=path.parent.name,
        routes={"0": reference},
    )


def test_gold_answers_score_full_marks_on_real_networks(reasonmap_dir: object) -> None:
    """Fixed rules: gold routes match their app-style reference in every name and stop, on all 30 networks."""
    rng = random.Random(2)
    for path in real_station_files():
        for template in ("short", "long1", "long2"):
            gt = _real_question(path, rng, template, suffixed_only=False)
            if gt is None:
                continue
            result = evaluate_planning(gt, gold_response(gt), rules="fixed")
            assert result["acc"] == 1, (path.stem, template)
            reference = gt.routes["0"]
            n, via = len(reference), sum(len(r["via_stops"]) for r in reference)
            expected = {  # every name and stop matches: only the caps and the via-stop totals limit the score
                "short": min(10, 1 + 4 * n) + 10,
                "long1": min(20, 1 + 4 * n + min(10, 4 * n)) + 20,
                "long2": min(20, 1 + 4 * n + ((10 if via else 0) + min(10, via)) / 2) + 20,
            }[template]
            assert result["map_score"] == pytest.approx(expected), (path.stem, template, result)


def test_gold_answers_under_the_released_rules_on_real_networks(reasonmap_dir: object) -> None:
    """Released rules, suffixed stops and bare reference stops (as the apps write them): Chinese gold answers reach
    the maximum; elsewhere route names never earn their +2 (slip 1), so the maximum is 1 + 2 per ride."""
    rng = random.Random(3)
    checked = 0
    for path in real_station_files():
        for template in ("short", "long1"):
            gt = _real_question(path, rng, template, suffixed_only=True)
            if gt is None:
                continue
            checked += 1
            result = evaluate_planning(gt, gold_response(gt), rules="released")
            assert result["acc"] == 1, (path.stem, template)
            n = len(gt.routes["0"])
            per_ride = 4 if path.parent.name == "china" else 2
            expected = {
                "short": min(10, 1 + per_ride * n) + 10,
                "long1": min(20, 1 + per_ride * n + min(10, 4 * n)) + 20,
            }[template]
            assert result["map_score"] == pytest.approx(expected), (path.stem, template, result)
    assert checked >= 40
