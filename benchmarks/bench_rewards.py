"""Reward throughput on a GRPO-sized batch: 512 questions x 8 responses, mixed question types, every mode.

Questions come from the 30 real ReasonMap networks when ``../shared/reasonmap`` exists, else from a small
synthetic network built here. Each question gets 8 responses of the kinds a policy produces: the gold answer
bare and after a reasoning preamble, a markdown variant, a wrong route or answer, junk, a truncated answer, a
long (~6 KB) rambling one and a hedge. Prints responses/second and the batch time per mode, cold (every cache
cleared first, as when a batch brings new questions) and warm (the same batch again).

Then adversarial responses (unclosed brackets, boxes and labels repeated to 1 MB and 4 MB): the time ratio of
the 4 MB to the 1 MB response, per mode and for the station normaliser alone. Linear code gives about 4; a
quadratic parser or regex would give about 16 (and hours on the official regex).

    .venv/bin/python benchmarks/bench_rewards.py [--questions 512] [--responses 8] [--seed 0] [--skip-adversarial]
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import time
from pathlib import Path

from reward_fns import MODES, compute_score
from reward_fns.gold import gold_response
from reward_fns.ground_truth import MAP_DIFFICULTIES, PLANNING_TEMPLATES, VQA_TYPES, GroundTruth, _parse_ground_truth
from reward_fns.network import MetroNetwork, normalize_station
from reward_fns.question_context import _context_from_json, _network_index
from reward_fns.reward_released import normalize_station_released

REASONMAP_STATIONS = Path(__file__).resolve().parents[1].parent / "shared" / "reasonmap" / "stations"
PREAMBLE = "Let me look at the map carefully. " * 40 + "\n\n"
RAMBLE = "Looking at the transit map, I trace each coloured line from the origin and note the interchanges. " * 60


def synthetic_networks() -> list[tuple[str, MetroNetwork]]:
    """A 6-line grid-like network (about 60 stations) standing in for the real data."""
    lines = {f"Line {i}": [f"S{i}-{j}" for j in range(10)] for i in range(1, 7)}
    for i in range(1, 6):  # interchanges: station 5 of line i is station 2 of line i + 1
        lines[f"Line {i + 1}"][2] = lines[f"Line {i}"][5]
    return [("synthetic", MetroNetwork(lines, name="synthetic"))]


def real_networks() -> list[tuple[str, MetroNetwork]]:
    return [(p.parent.name, MetroNetwork.from_json(p)) for p in sorted(REASONMAP_STATIONS.glob("*/*.json"))]


def make_question(rng: random.Random, country: str, network: MetroNetwork) -> GroundTruth:
    kind = rng.choice(["planning"] * len(VQA_TYPES) + list(VQA_TYPES))  # half planning, as in ReasonMap-Train
    common = {"city": network.name, "country": country, "map_difficulty": rng.choice(MAP_DIFFICULTIES)}
    lines = network.to_dict()
    if kind == "planning":
        while True:
            origin, destination = rng.sample(network.stations, 2)
            if (
                network.canonical(origin) != network.canonical(destination)
                and network.min_transfers(origin, destination) is not None
            ):
                break
        return GroundTruth(
            question_type="planning",
            network=lines,
            station_1=origin,
            station_2=destination,
            template=rng.choice(PLANNING_TEMPLATES),
            question_transfer_count=network.min_transfers(origin, destination) or 0,
            **common,
        )
    answer = {"TorF1": rng.randint(0, 1), "TorF2": rng.randint(0, 1), "Counting1": rng.randint(0, 3)}.get(
        kind, rng.randint(1, 12)
    )
    return GroundTruth(
        question_type=kind, network=lines, station_1=rng.choice(network.stations), answer=answer, **common
    )


def make_responses(rng: random.Random, gt: GroundTruth, count: int) -> list[str]:
    gold = gold_response(gt)
    if gt.question_type == "planning":
        wrong = gold.replace(f"Arrival Stop: {gt.station_2}", "Arrival Stop: Nowhere")
        markdown = gold.replace("Route Name:", "**Route Name:**").replace("Departure Stop:", "- Departure Stop:")
        hedge = gold + "\n--\n" + gold
    else:
        wrong = "\\boxed{no}" if gt.answer == 1 else "\\boxed{7}"
        markdown = "**Answer:** " + gold.replace("\\boxed{", "").rstrip("}")
        hedge = "\\boxed{A, B, C, D}"
    kinds = [
        gold,
        PREAMBLE + gold,
        markdown,
        wrong,
        "I cannot read the map.",
        gold[: len(gold) // 2],
        RAMBLE + gold,
        hedge,
    ]
    return [kinds[i % len(kinds)] for i in range(count)]


def clear_caches() -> None:
    caches = (_context_from_json, _network_index, _parse_ground_truth, normalize_station, normalize_station_released)
    for cached in caches:
        cached.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=512)
    parser.add_argument("--responses", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-adversarial", action="store_true", help="only the batch throughput")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    networks = real_networks() if REASONMAP_STATIONS.is_dir() else synthetic_networks()
    source = f"{len(networks)} real ReasonMap networks" if len(networks) > 1 else "a synthetic network"
    gts = [make_question(rng, *rng.choice(networks)) for _ in range(args.questions)]
    batch = [(gt.to_json(), response) for gt in gts for response in make_responses(rng, gt, args.responses)]
    n = len(batch)
    kinds = sorted({gt.question_type for gt in gts})
    mean_chars = sum(len(r) for _, r in batch) / n
    print(f"batch: {args.questions} questions x {args.responses} responses = {n} responses from {source}")
    print(f"       types {', '.join(f'{k} {sum(g.question_type == k for g in gts)}' for k in kinds)}")
    print(f"       mean response {mean_chars:.0f} chars, python {sys.version.split()[0]}, one process")
    print(f"{'mode':8} {'cold batch s':>13} {'cold resp/s':>12} {'warm batch s':>13} {'warm resp/s':>12}")
    for mode in MODES:
        timings = []
        for cold in (True, False):
            if cold:
                clear_caches()
            started = time.perf_counter()
            for gt_json, response in batch:
                compute_score("reasonmap_train", response, gt_json, None, mode=mode)
            timings.append(time.perf_counter() - started)
        cold_s, warm_s = timings
        print(f"{mode:8} {cold_s:13.3f} {n / cold_s:12.0f} {warm_s:13.3f} {n / warm_s:12.0f}")
    if not args.skip_adversarial:
        adversarial()


ADVERSARIAL_UNIT = (
    "Route Name: Line 1\nDeparture Stop: Stop A (\nArrival Stop: Stop C\n--\n"
    "**route name:** ((( \\boxed{ {{ the answer is  oxed{ Arrival Stop:(\r\n"
)


def _best_seconds(run, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def adversarial() -> None:
    """4 MB over 1 MB time ratios of scoring adversarial responses (about 4 when linear, 16 when quadratic)."""
    network = {"Line 1": ["Stop A", "Stop B", "Stop C"], "Line 2": ["Stop C", "Stop D"]}
    questions = {
        "planning": GroundTruth("planning", "c", "hard", network, station_1="Stop A", station_2="Stop D"),
        "Counting2": GroundTruth("Counting2", "c", "hard", network, answer=2),
    }
    small = ADVERSARIAL_UNIT * (1_000_000 // len(ADVERSARIAL_UNIT))
    large = ADVERSARIAL_UNIT * (4_000_000 // len(ADVERSARIAL_UNIT))
    print(f"adversarial responses: {len(small) / 1e6:.1f} MB and {len(large) / 1e6:.1f} MB (linear: ratio ~4)")
    print(f"{'question':10} {'mode':8} {'1 MB s':>8} {'4 MB s':>8} {'ratio':>6}")
    for kind, gt in questions.items():
        gt_json = gt.to_json()
        for mode in MODES:
            times = [
                _best_seconds(functools.partial(compute_score, "x", text, gt_json, mode=mode))
                for text in (small, large)
            ]
            print(f"{kind:10} {mode:8} {times[0]:8.3f} {times[1]:8.3f} {times[1] / max(times[0], 1e-9):6.2f}")
    brackets = ["Elm " + "(" * n + ")" + "(" * n for n in (1_000_000, 4_000_000)]
    times = [_best_seconds(functools.partial(normalize_station, text)) for text in brackets]
    ratio = times[1] / max(times[0], 1e-9)
    print(f"{'station':10} {'-':8} {times[0]:8.3f} {times[1]:8.3f} {ratio:6.2f}  (normaliser, unclosed brackets)")


if __name__ == "__main__":
    main()
