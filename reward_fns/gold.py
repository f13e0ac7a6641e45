"""Gold answers: the one writer of an answer in the format the prompts demand, and the correct answer of a question.

``route_answer`` writes planning answers (route blocks, via stops in travel order) and ``vqa_answer`` boxed VQA
answers; ``gold_response`` is what a perfect model answers a ground truth with, planning along a minimum-transfer
route of the embedded network. Used by the data (synthetic reference routes and contact sheets), the pre-flight
(the reward must give a gold answer full marks before a cluster is booked) and tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reward_fns.ground_truth import OPTION_LETTERS, OPTION_TYPES, PLANNING_TEMPLATES, YES_NO_TYPES, GroundTruth
from reward_fns.network import MetroNetwork, Ride
from reward_fns.route_parsing import (
    CANONICAL_LABELS,
    FIELD_ARRIVAL,
    FIELD_DEPARTURE,
    FIELD_NUM_VIA,
    FIELD_ROUTE,
    FIELD_VIA,
)

BLOCK_SEPARATOR = "--\n"  # the line between two ride blocks, as the prompts show it


def boxed(value: Any) -> str:
    """``\\boxed{value}``, the answer form every ReasonMap-Plus prompt asks for."""
    return f"\\boxed{{{value}}}"


def vqa_answer(question_type: str, answer: int) -> str:
    """The boxed answer to a VQA question: yes/no for TorF (1 is yes), a letter for Counting1, else the number."""
    if question_type in YES_NO_TYPES:
        return boxed("yes" if answer == 1 else "no")
    if question_type in OPTION_TYPES:
        return boxed(OPTION_LETTERS[answer])
    return boxed(answer)


def reference_ride(network: MetroNetwork, ride: Ride) -> dict[str, Any]:
    """A ride in the benchmark's reference-route form, its via stops in travel order (departure to arrival)."""
    via = network.stops_between(ride.line, ride.departure, ride.arrival)
    return {
        "route_name": ride.line,
        "departure_stop": ride.departure,
        "arrival_stop": ride.arrival,
        "via_stops": via,
        "num_via_stops": len(via),
    }


def route_answer(rides: Sequence[Mapping[str, Any]], template: str) -> str:
    """Ride blocks as the planning prompt of ``template`` demands, separated by ``--`` lines.

    ``rides`` use the reference-route keys (route_name, departure_stop, arrival_stop, and for long templates
    via_stops in travel order / num_via_stops): long1 adds the number of via stops, long2 the via stops.

    >>> ride = {"route_name": "Line 1", "departure_stop": "D", "arrival_stop": "A", "via_stops": ["C", "B"]}
    >>> print(route_answer([ride], "long2"))
    Route Name: Line 1
    Departure Stop: D
    Arrival Stop: A
    Via Stops: C, B
    <BLANKLINE>
    """
    if template not in PLANNING_TEMPLATES:
        raise ValueError(f"planning template {template!r} is not one of {PLANNING_TEMPLATES}")
    blocks = []
    for ride in rides:
        via = list(ride.get("via_stops") or ())
        fields = [
            (FIELD_ROUTE, ride["route_name"]),
            (FIELD_DEPARTURE, ride["departure_stop"]),
            (FIELD_ARRIVAL, ride["arrival_stop"]),
        ]
        if template == "long1":
            fields.append((FIELD_NUM_VIA, ride.get("num_via_stops", len(via))))
        elif template == "long2":
            fields.append((FIELD_VIA, ", ".join(via)))
        blocks.append("".join(f"{CANONICAL_LABELS[name]}{value}\n" for name, value in fields))
    return BLOCK_SEPARATOR.join(blocks)


def gold_response(gt: GroundTruth) -> str:
    """The answer a perfect model would give, e.g. ``\\boxed{yes}`` or route blocks joined by ``--``.

    >>> gt = GroundTruth("TorF1", "x", "easy", {"L": ["A", "B"]}, station_1="A", station_2="B", answer=1)
    >>> gold_response(gt)
    '\\\\boxed{yes}'
    """
    if gt.question_type != "planning":
        return vqa_answer(gt.question_type, int(gt.answer or 0))
    network = MetroNetwork(gt.network)
    rides = network.min_transfer_route(gt.station_1, gt.station_2)
    return route_answer([reference_ride(network, ride) for ride in rides], gt.template)
