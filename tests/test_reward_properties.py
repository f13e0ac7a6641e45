"""Properties of compute_score over random small networks and random or adversarial responses (hypothesis)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import networkx as nx
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from reward_fns import SCORE_KEYS, compute_score
from reward_fns.gold import gold_response, route_answer
from reward_fns.ground_truth import MAP_DIFFICULTIES, PLANNING_TEMPLATES, VQA_TYPES, YES_NO_TYPES, GroundTruth
from reward_fns.network import MetroNetwork, normalize_station
from tests.reward_helpers import route

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STATION_POOL = [f"Stop {c}" for c in "ABCDEFGHIJKL"] + ["Xi'an Rd", "中关村", "Oak (Transfer Station)"]
LINE_NAMES = [f"Line {i}" for i in range(1, 7)]
ALPHA, FORMAT = 0.5, 1.0
AT_THE_MINIMUM, ABOVE_THE_MINIMUM = st.just(0), st.integers(0, 2)  # stated transfers beyond the minimum


@dataclass(frozen=True)
class Question:
    gt: GroundTruth
    network: MetroNetwork
    gold_rides: tuple[tuple[str, str, str], ...]

    @property
    def json(self) -> str:
        return self.gt.to_json()


@st.composite
def questions(draw: st.DrawFn, extra_transfers: st.SearchStrategy[int] = AT_THE_MINIMUM) -> Question:
    """A random network of 2-5 lines over a small station pool, two connected stations, and a stated transfer count:
    the minimum plus ``extra_transfers`` (ReasonMap's counts come from map apps and can exceed the minimum)."""
    n_lines = draw(st.integers(2, 5))
    lines = {}
    for name in LINE_NAMES[:n_lines]:
        lines[name] = draw(st.lists(st.sampled_from(STATION_POOL), min_size=2, max_size=6, unique=True))
    network = MetroNetwork(lines)
    stations = network.stations
    origin, destination = draw(st.sampled_from(stations)), draw(st.sampled_from(stations))
    assume(network.canonical(origin) != network.canonical(destination))
    rides = network.min_transfer_route(origin, destination)
    assume(rides)
    gt = GroundTruth(
        question_type="planning",
        city="randomville",
        map_difficulty=draw(st.sampled_from(MAP_DIFFICULTIES)),
        network=network.to_dict(),
        station_1=origin,
        station_2=destination,
        template=draw(st.sampled_from(PLANNING_TEMPLATES)),
        question_transfer_count=len(rides) - 1 + draw(extra_transfers),
    )
    return Question(gt, network, tuple((r.line, r.departure, r.arrival) for r in rides))


def ride_lists(q: Question) -> st.SearchStrategy[list[tuple[str, str, str]]]:
    """Rides over the question's own names (plus junk), often starting at the origin and ending at the destination."""
    lines = st.sampled_from([*q.network.lines, "Line 99", "line 1", "Wrong", ""])
    stops = st.sampled_from([*q.network.stations, "Nowhere", q.gt.station_1, q.gt.station_2])
    return st.lists(st.tuples(lines, stops, stops), min_size=1, max_size=6).map(
        lambda rides: (
            [(rides[0][0], q.gt.station_1, rides[0][2]), *rides[1:-1], (rides[-1][0], rides[-1][1], q.gt.station_2)]
            if len(rides) > 1
            else [(rides[0][0], q.gt.station_1, q.gt.station_2)]
        )
    )


def responses(q: Question) -> st.SearchStrategy[str]:
    """Random text, route-shaped text over the network's names, and mutations of the gold answer."""
    gold = list(q.gold_rides)
    return st.one_of(
        st.text(max_size=200),
        ride_lists(q).map(lambda rides: route(*rides)),
        st.lists(st.sampled_from(gold), min_size=1, max_size=8).map(lambda rides: route(*rides)),
        st.just(gold_response(q.gt)),
        st.just(route(*gold)).map(lambda text: text.replace("Route Name:", "**Route Name:**")),
        st.tuples(st.text(max_size=50), st.text(max_size=50)).map(lambda t: t[0] + route(*gold) + t[1]),
    )


def check_result(result: dict[str, float], weight_max: float = 2.0) -> None:
    assert set(result) == set(SCORE_KEYS)
    assert all(type(v) is float and math.isfinite(v) for v in result.values())
    assert result["acc"] in (0.0, 1.0) and result["format"] in (0.0, 1.0)
    assert 1.0 <= result["weight"] <= weight_max


def fixed(text: str, q: Question) -> dict[str, float]:
    return dict(compute_score("synthetic", text, q.json, mode="fixed", alpha=ALPHA, format_reward=FORMAT))


@PROPERTY_SETTINGS
@given(st.data())
def test_every_mode_gives_a_bounded_result(data: st.DataObject) -> None:
    q = data.draw(questions())
    text = data.draw(responses(q))
    for mode in ("released", "fixed", "sparse"):
        result = dict(compute_score("synthetic", text, q.json, {"anything": [1]}, mode=mode))
        check_result(result)
        w = result["weight"]
        if mode == "fixed":
            assert 0.0 <= result["detail"] <= 10.0
            assert 0.0 <= result["score"] <= w * (FORMAT + 10 + 10 * ALPHA)
        elif mode == "released":
            assert result["detail"] <= 10.0
            assert result["score"] <= w * 15 and result["score"] == w * (10 * result["acc"] + 0.5 * result["detail"])
        else:
            assert result["score"] == 10.0 * result["acc"]


@PROPERTY_SETTINGS
@given(st.data())
def test_gold_is_never_beaten_and_correct_beats_incorrect_in_fixed_mode(data: st.DataObject) -> None:
    q = data.draw(questions(ABOVE_THE_MINIMUM))
    gold = fixed(gold_response(q.gt), q)
    assert (gold["acc"], gold["format"]) == (1.0, 1.0)
    w = gold["weight"]
    for _ in range(5):
        result = fixed(data.draw(responses(q)), q)
        assert result["score"] <= gold["score"]
        if result["acc"]:
            assert result["score"] >= 10 * w
        else:
            assert result["score"] < 10 * w


def harmless_variants(q: Question) -> dict[str, str]:
    """The gold answer written in ways the fixed reward reads the same: whitespace, case and suffixes of the names,
    the prompts' optional via fields, a trailing separator."""
    gold, template = gold_response(q.gt), q.gt.template
    rides = [
        {"route_name": line, "departure_stop": departure, "arrival_stop": arrival}
        | {"via_stops": q.network.stops_between(line, departure, arrival)}
        for line, departure, arrival in q.gold_rides
    ]
    cased = [r | {"route_name": r["route_name"].upper(), "departure_stop": r["departure_stop"].lower()} for r in rides]
    suffixed = [
        r | {"departure_stop": r["departure_stop"] + " Station", "arrival_stop": r["arrival_stop"] + "站"}
        for r in rides
    ]
    other = "long2" if template != "long2" else "long1"  # a via field this template does not demand
    blocks = [route_answer([r], template) + route_answer([r], other).splitlines()[-1] + "\n" for r in rides]
    return {
        "gold": gold,
        "whitespace": "\n \n" + gold.replace("\n", " \r\n\n\t").replace(": ", ":  ") + "\n\n",
        "case": route_answer(cased, template),
        "suffixes": route_answer(suffixed, template),
        "optional fields": "--\n".join(blocks),
        "trailing separator": gold + "--\n",
    }


@PROPERTY_SETTINGS
@given(st.data())
def test_gold_answers_and_their_harmless_variants_earn_the_format_in_fixed_mode(data: st.DataObject) -> None:
    q = data.draw(questions(ABOVE_THE_MINIMUM))
    gold = fixed(gold_response(q.gt), q)
    for name, text in harmless_variants(q).items():
        result = fixed(text, q)
        assert (result["format"], result["acc"]) == (1.0, 1.0), (name, text)
        assert result["score"] == gold["score"], (name, text)


@PROPERTY_SETTINGS
@given(st.data())
def test_repeating_a_block_never_pays_in_fixed_mode(data: st.DataObject) -> None:
    q = data.draw(questions(ABOVE_THE_MINIMUM))
    rides = data.draw(st.one_of(ride_lists(q), st.just(list(q.gold_rides))))
    i = data.draw(st.integers(0, len(rides) - 1))
    repeated = rides[: i + 1] + [rides[i]] * data.draw(st.integers(1, 3)) + rides[i + 1 :]
    before, after = fixed(route(*rides), q), fixed(route(*repeated), q)
    assert after["score"] <= before["score"]
    assert after["detail"] <= before["detail"]


@PROPERTY_SETTINGS
@given(st.data())
def test_listing_every_station_never_pays_in_fixed_mode(data: st.DataObject) -> None:
    """The gold route split into one block per station (still correct) scores no more (less when it is longer,
    unless both details sit at the cap of 10)."""
    q = data.draw(questions())
    split = []
    for line, departure, arrival in q.gold_rides:
        stops = [departure, *q.network.stops_between(line, departure, arrival), arrival]
        split += [(line, a, b) for a, b in zip(stops, stops[1:], strict=False)]
    gold, listed = fixed(route(*q.gold_rides), q), fixed(route(*split), q)
    assert listed["acc"] == 1.0
    assert listed["score"] <= gold["score"]
    if len(split) > len(q.gold_rides) and gold["detail"] < 10:  # at the cap, both may sit at 10
        assert listed["score"] < gold["score"]
    if len(split) == len(q.gold_rides):
        assert listed["score"] == gold["score"]


def correct_routes(q: Question) -> st.SearchStrategy[list[tuple[str, str, str]]]:
    """Correct routes from origin to destination (rides along simple paths of the station-line graph), the
    minimum-transfer ones and longer detours alike."""
    net = q.network
    start, end = ("s", normalize_station(q.gt.station_1)), ("s", normalize_station(q.gt.station_2))
    paths = list(itertools.islice(nx.all_simple_paths(net.graph, start, end), 200))

    def rides(path: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
        names = [net.canonical(node[1]) or node[1] for node in path[::2]]
        return [(line[1], a, b) for line, a, b in zip(path[1::2], names[:-1], names[1:], strict=True)]

    return st.sampled_from(paths).map(rides)


def lengthened(data: st.DataObject, q: Question, rides: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The route one step longer and still correct: a ride split at a stop it passes, or a standstill ride (on any
    line serving the station) inserted where the route already is."""
    k = data.draw(st.integers(0, len(rides) - 1))
    line, departure, arrival = rides[k]
    passed = q.network.stops_between(line, departure, arrival)
    if passed and data.draw(st.booleans()):
        stop = data.draw(st.sampled_from(passed))
        return [*rides[:k], (line, departure, stop), (line, stop, arrival), *rides[k + 1 :]]
    at = data.draw(st.sampled_from([departure, arrival]))
    standstill = (data.draw(st.sampled_from(q.network.lines_through(at))), at, at)
    return [*rides[:k], standstill, *rides[k:]] if at == departure else [*rides[: k + 1], standstill, *rides[k + 1 :]]


@PROPERTY_SETTINGS
@given(st.data())
def test_no_correct_route_beats_a_minimum_transfer_route_at_any_stated_count(data: st.DataObject) -> None:
    """Detours, padding and the minimum route alike: when the stated count exceeds the minimum, a longer correct
    route may match the gold answer's detail, never exceed it."""
    q = data.draw(questions(ABOVE_THE_MINIMUM))
    gold = fixed(route(*q.gold_rides), q)
    rides = data.draw(correct_routes(q))
    for _ in range(data.draw(st.integers(0, 3))):
        rides = lengthened(data, q, rides)
    result = fixed(route(*rides), q)
    assert result["acc"] == 1.0, rides
    assert result["detail"] <= gold["detail"] and result["score"] <= gold["score"], (rides, result, gold)


@PROPERTY_SETTINGS
@given(st.data())
def test_a_correct_route_never_gains_by_getting_longer(data: st.DataObject) -> None:
    q = data.draw(questions(ABOVE_THE_MINIMUM))
    rides = list(q.gold_rides)
    details = [fixed(route(*rides), q)["detail"]]
    for _ in range(4):
        rides = lengthened(data, q, rides)
        result = fixed(route(*rides), q)
        assert result["acc"] == 1.0, rides
        details.append(result["detail"])
    assert details == sorted(details, reverse=True), details


@PROPERTY_SETTINGS
@given(st.data())
def test_released_mode_reproduces_the_off_by_one_on_every_gold_route(data: st.DataObject) -> None:
    q = data.draw(questions().filter(lambda q: q.gt.template == "short"))
    t = q.gt.question_transfer_count
    released = dict(compute_score("synthetic", route(*q.gold_rides), q.json, mode="released"))
    expected = 2 + 4 - 5 if t == 0 else min(10, 2 + 3 * (t + 1) + t - 5)  # the last block always loses 5
    assert (released["acc"], released["detail"]) == (1.0, expected)


@PROPERTY_SETTINGS
@given(
    qtype=st.sampled_from(VQA_TYPES),
    answer=st.integers(0, 3),
    difficulty=st.sampled_from(MAP_DIFFICULTIES),
    text=st.one_of(
        st.text(max_size=100),
        st.sampled_from(["yes", "no", "A", "B", "C", "D", "0", "1", "2", "3", "three"]).map(
            lambda a: f"\\boxed{{{a}}}"
        ),
        st.from_regex(r"\\boxed\{[A-Da-d0-9 ,.()yesno]{0,12}\}", fullmatch=True),
    ),
)
def test_vqa_results_are_bounded_and_hedging_never_pays(qtype: str, answer: int, difficulty: str, text: str) -> None:
    if qtype in YES_NO_TYPES:
        answer = answer % 2
    gt = GroundTruth(question_type=qtype, city="c", map_difficulty=difficulty, network={"L": ["a", "b"]}, answer=answer)
    for mode in ("released", "fixed", "sparse"):
        result = dict(compute_score("synthetic", text, gt.to_json(), mode=mode))
        check_result(result, weight_max=1.5)
        assert result["detail"] == 0.0
    hedges = {
        "TorF1": "\\boxed{yes or no}",
        "TorF2": "\\boxed{yes/no}",
        "Counting1": "\\boxed{A, B, C, D}",
        "Counting2": "\\boxed{0, 1, 2, 3}",
        "Counting3": "\\boxed{0 or 1 or 2 or 3}",
    }
    for mode in ("released", "fixed", "sparse"):
        assert compute_score("synthetic", hedges[qtype], gt.to_json(), mode=mode)["acc"] == 0.0


def test_adversarial_megabyte_responses_get_a_reward() -> None:
    """Adversarial 1 MB and 4 MB responses get a valid result in every mode (time: benchmarks/bench_rewards.py)."""
    network = {"Line 1": ["Stop A", "Stop B", "Stop C"], "Line 2": ["Stop C", "Stop D"]}
    planning = GroundTruth(
        "planning", "c", "hard", network, station_1="Stop A", station_2="Stop D", question_transfer_count=1
    )
    vqa = GroundTruth("Counting2", "c", "hard", network, answer=2)
    unit = (
        "Route Name: Line 1\nDeparture Stop: Stop A (\nArrival Stop: Stop C\n--\n"
        "**route name:** ((( \\boxed{ {{ the answer is  oxed{ Arrival Stop:(\r\n"
    )
    for gt in (planning, vqa):
        small, large = unit * (1_000_000 // len(unit)), unit * (4_000_000 // len(unit))
        for text in (small, large):
            for mode in ("released", "fixed", "sparse"):
                check_result(dict(compute_score("synthetic", text, gt.to_json(), mode=mode)))
