"""A gold response for a question, built from its ground truth in the answer format the prompts demand.

Used by the pre-flight (the reward must give a gold answer full marks before a cluster is booked) and by tests.
Planning answers follow a minimum-transfer route of the embedded network.
"""

from __future__ import annotations

from reward_fns.ground_truth import COUNT_TYPES, OPTION_LETTERS, OPTION_TYPES, YES_NO_TYPES, GroundTruth
from reward_fns.network import MetroNetwork


def gold_response(gt: GroundTruth) -> str:
    """The answer a perfect model would give, e.g. ``\\boxed{yes}`` or route blocks joined by ``--``.

    >>> gt = GroundTruth("TorF1", "x", "easy", {"L": ["A", "B"]}, station_1="A", station_2="B", answer=1)
    >>> gold_response(gt)
    '\\\\boxed{yes}'
    """
    if gt.question_type in YES_NO_TYPES:
        return "\\boxed{yes}" if gt.answer == 1 else "\\boxed{no}"
    if gt.question_type in OPTION_TYPES:
        return f"\\boxed{{{OPTION_LETTERS[int(gt.answer or 0)]}}}"
    if gt.question_type in COUNT_TYPES:
        return f"\\boxed{{{int(gt.answer or 0)}}}"
    network = MetroNetwork(gt.network)
    blocks = []
    for ride in network.min_transfer_route(gt.station_1, gt.station_2):
        block = f"Route Name: {ride.line}\nDeparture Stop: {ride.departure}\nArrival Stop: {ride.arrival}\n"
        via = network.stops_between(ride.line, ride.departure, ride.arrival)
        if gt.template == "long1":
            block += f"Number of Via Stops: {len(via)}\n"
        elif gt.template == "long2":
            block += f"Via Stops: {', '.join(via)}\n"
        blocks.append(block)
    return "--\n".join(blocks)
