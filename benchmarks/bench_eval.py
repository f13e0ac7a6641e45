"""Benchmark scoring time on one core: the whole ReasonMap benchmark (both forms) plus ReasonMap-Plus, both rule sets.

Stand-ins of the real sizes (the datasets are not available offline): ReasonMap 1008 questions x 2 forms (short,
and long split between templates 1 and 2) with 1-3 map-app-style reference plans each, and the 4018
ReasonMap-Plus questions; the test splits (312 x 2 and 1448) are timed too. Questions are drawn on the 30 real
networks when ``../shared/reasonmap`` exists, else on generated cities. Each question gets one response of the
kinds a model writes (gold, gold after a reasoning preamble, markdown, a wrong route or answer, junk, truncated,
a ~6 KB ramble), and is scored the way ``python -m recipe.evaluate score`` scores it: the planning rules
``released`` and ``fixed`` (one parse) or the three ReasonMap-Plus readings. Target: under 10 s for the whole
benchmark plus ReasonMap-Plus, cold (caches cleared, as in a fresh ``score`` process).

    .venv/bin/python benchmarks/bench_eval.py [--seed 0] [--stations ../shared/reasonmap/stations]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from data_prep.synth_network import generate_city
from reward_fns import benchmark_fixed, benchmark_released
from reward_fns.benchmark import PLUS_READINGS, evaluate_planning_all, evaluate_vqa
from reward_fns.gold import gold_response
from reward_fns.ground_truth import GroundTruth, _parse_ground_truth
from reward_fns.network import MetroNetwork, normalize_station
from reward_fns.question_context import _context_from_json, _network_index
from reward_fns.reward_released import normalize_station_released

REASONMAP_STATIONS = Path(__file__).resolve().parents[1].parent / "shared" / "reasonmap" / "stations"
PREAMBLE = "Let me look at the map carefully. " * 40 + "\n\n"
RAMBLE = "Looking at the transit map, I trace each coloured line from the origin and note the interchanges. " * 60
SIZES = {"whole": (1008, 4018), "test splits": (312, 1448)}  # (ReasonMap questions, ReasonMap-Plus questions)


def networks(stations: Path) -> tuple[str, list[tuple[str, MetroNetwork]]]:
    paths = sorted(stations.glob("*/*.json"))
    if paths:
        return f"{len(paths)} real ReasonMap networks", [(p.parent.name, MetroNetwork.from_json(p)) for p in paths]
    cities = [generate_city(f"bench:{i}", d) for i, d in enumerate(["easy", "middle", "hard"] * 4)]
    return f"{len(cities)} generated cities", [("synthetic", c.network) for c in cities]


def app_style(line: str, country: str) -> str:
    """A map-app rendering of a network line name, as the benchmark's reference routes write them."""
    numbered = re.fullmatch(r"Line (\w+)", line)
    if country == "china":
        return f"地铁{numbered.group(1)}号线(起点--终点)" if numbered else f"地铁{line}(起点--终点)"
    return f"Metro {numbered.group(1)} Line" if numbered else line


def planning_pair(rng: random.Random, country: str, network: MetroNetwork) -> list[GroundTruth]:
    """A benchmark record's two rows (short and long), with 1-3 reference plans."""
    while True:
        origin, destination = rng.sample(network.stations, 2)
        rides = network.min_transfer_route(origin, destination) if origin != destination else []
        if rides and network.canonical(origin) != network.canonical(destination):
            break
    plans = {}
    for plan in range(rng.randint(1, 3)):
        order = rides if plan == 0 else rng.sample(rides, len(rides))
        plans[str(plan)] = [
            {
                "route_name": app_style(r.line, country),
                "departure_stop": r.departure.removesuffix("站").removesuffix(" Station"),
                "arrival_stop": r.arrival.removesuffix("站").removesuffix(" Station"),
                "via_stops": (via := network.stops_between(r.line, r.departure, r.arrival)),
                "num_via_stops": len(via),
            }
            for r in order
        ]
    common = dict(
        question_type="planning",
        city=network.name,
        country=country,
        map_difficulty=rng.choice(["easy", "middle", "hard"]),
        network=network.to_dict(),
        station_1=origin,
        station_2=destination,
        question_transfer_count=len(rides) - 1,
        routes=plans,
    )
    return [GroundTruth(template="short", **common), GroundTruth(template=rng.choice(["long1", "long2"]), **common)]


def plus_question(rng: random.Random, network: MetroNetwork) -> GroundTruth:
    kind = rng.choice(["TorF1", "TorF2", "Counting1", "Counting2", "Counting3"])
    answer = {"TorF1": rng.randint(0, 1), "TorF2": rng.randint(0, 1), "Counting1": rng.randint(0, 3)}.get(
        kind, rng.randint(1, 12)
    )
    return GroundTruth(
        question_type=kind,
        city=network.name,
        map_difficulty=rng.choice(["easy", "middle", "hard"]),
        network=network.to_dict(),
        station_1=rng.choice(network.stations),
        answer=answer,
    )


def response(rng: random.Random, gt: GroundTruth) -> str:
    gold = gold_response(gt)
    if gt.question_type == "planning":
        wrong = gold.replace(f"Arrival Stop: {gt.station_2}", "Arrival Stop: Nowhere")
        markdown = gold.replace("Route Name:", "**Route Name:**")
    else:
        wrong = "\\boxed{no}" if gt.answer == 1 else "The answer is 7."
        markdown = "**Answer:** " + gold.replace("\\boxed{", "").rstrip("}")
    return rng.choice(
        [gold, PREAMBLE + gold, markdown, wrong, "I cannot read the map.", gold[: len(gold) // 2], RAMBLE]
    )


def clear_caches() -> None:
    for cached in (
        _context_from_json,
        _network_index,
        _parse_ground_truth,
        normalize_station,
        normalize_station_released,
    ):
        cached.cache_clear()
    for module_cache in (benchmark_released._clean_cached, benchmark_released._cleaned_lines, benchmark_fixed._view):
        module_cache.cache_clear()


def score_all(items: Sequence[tuple[str, str, str]]) -> None:
    """Score like ``recipe.evaluate score``: both planning rule sets, or every ReasonMap-Plus reading."""
    for kind, gt_json, text in items:
        if kind == "planning":
            evaluate_planning_all(gt_json, text)
        else:
            for reading in PLUS_READINGS:
                evaluate_vqa(gt_json, text, reading=reading)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stations", type=Path, default=REASONMAP_STATIONS, help="stations/<country>/<city>.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    source, nets = networks(args.stations)
    print(f"networks: {source}; python {sys.version.split()[0]}, one process, one core")
    print(f"{'set':12} {'questions':>22} {'cold s':>8} {'q/s cold':>9} {'warm s':>8} {'q/s warm':>9}")
    for name, (n_planning, n_plus) in SIZES.items():
        items: list[tuple[str, str, str]] = []
        for _ in range(n_planning):
            country, network = rng.choice(nets)
            for gt in planning_pair(rng, country, network):
                items.append(("planning", gt.to_json(), response(rng, gt)))
        for _ in range(n_plus):
            gt = plus_question(rng, rng.choice(nets)[1])
            items.append(("vqa", gt.to_json(), response(rng, gt)))
        timings = []
        for cold in (True, False):
            if cold:
                clear_caches()
            started = time.perf_counter()
            score_all(items)
            timings.append(time.perf_counter() - started)
        label = f"{2 * n_planning} planning + {n_plus} plus"
        cold_s, warm_s = timings
        n = len(items)
        print(f"{name:12} {label:>22} {cold_s:8.2f} {n / cold_s:9.0f} {warm_s:8.2f} {n / warm_s:9.0f}")
    print("target: whole benchmark plus ReasonMap-Plus, cold, under 10 s")


if __name__ == "__main__":
    main()
