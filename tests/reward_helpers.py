"""Small hand-made networks and ground-truth builders shared by the reward and metric tests."""

from __future__ import annotations

from typing import Any

from reward_fns.ground_truth import GroundTruth

# Line 1: A - B - C - D - E;  Line 2: C - F - G - H;  Line 3: H - I - J;  Line 4: K - A.
# A -> E direct (Line 1), A -> G one transfer at C, A -> J two transfers (C, H).
NET: dict[str, list[str]] = {
    "Line 1": ["Alder Station", "Birch", "Cedar", "Dogwood", "Elm"],
    "Line 2": ["Cedar", "Fir", "Ginkgo", "Hazel"],
    "Line 3": ["Hazel", "Ivy", "Juniper"],
    "Line 4": ["Kauri", "Alder Station"],
}


def planning_gt(
    origin: str,
    destination: str,
    transfers: int,
    *,
    difficulty: str = "easy",
    template: str = "short",
    network: dict[str, list[str]] | None = None,
    city: str = "testville",
    routes: dict[str, list[dict[str, Any]]] | None = None,
    country: str = "",
) -> GroundTruth:
    return GroundTruth(
        question_type="planning",
        city=city,
        map_difficulty=difficulty,
        network=network if network is not None else NET,
        station_1=origin,
        station_2=destination,
        template=template,
        question_transfer_count=transfers,
        routes=routes,
        country=country,
    )


def vqa_gt(question_type: str, answer: int, *, difficulty: str = "easy", **fields: Any) -> GroundTruth:
    return GroundTruth(
        question_type=question_type, city="testville", map_difficulty=difficulty, network=NET, answer=answer, **fields
    )


def route(*rides: tuple[str, str, str], extra: str = "") -> str:
    """Blocks in the demanded format (``--`` lines between them); ``extra`` is appended to every block."""
    return "--\n".join(
        f"Route Name: {line}\nDeparture Stop: {dep}\nArrival Stop: {arr}\n{extra}" for line, dep, arr in rides
    )


# Correct answers on NET.
DIRECT = (("Line 1", "Alder Station", "Elm"),)
ONE_TRANSFER = (("Line 1", "Alder Station", "Cedar"), ("Line 2", "Cedar", "Ginkgo"))
TWO_TRANSFERS = (("Line 1", "Alder Station", "Cedar"), ("Line 2", "Cedar", "Hazel"), ("Line 3", "Hazel", "Juniper"))


def ride(name: str, departure: str, arrival: str, via: list[str], count: int | None = None) -> dict[str, Any]:
    """One reference ride of a ground truth's ``routes`` (the via count defaults to the via list's length)."""
    return {
        "route_name": name,
        "departure_stop": departure,
        "arrival_stop": arrival,
        "via_stops": via,
        "num_via_stops": len(via) if count is None else count,
    }
