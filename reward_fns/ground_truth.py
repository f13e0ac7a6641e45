"""The ground truth a row carries for scoring: what each question type needs, embedded so scoring opens no file.

A row's ``reward_model.ground_truth`` is this dataclass serialised as one JSON string (``to_json``). A string
keeps Parquet schemas uniform across cities (a metro network's line names would otherwise become struct
fields) and is what verl hands to reward functions unchanged. ``from_json`` is cached, so the 8 responses of
one GRPO group parse their question once.

Fields per question type (``-`` = empty string / None / 0):

==============  ===========  ===========  =====================  ==================================
type            station_1    station_2    answer                 other
==============  ===========  ===========  =====================  ==================================
planning        origin       destination  -                      template short|long1|long2,
                                                                 question_transfer_count, routes
TorF1           station A    station B    1 same line / 0 not    -
TorF2           station      -            1 on line / 0 not      line
Counting1       station A    station B    option index 0-3       options (A-D texts, or empty)
Counting2       station      -            number of lines        -
Counting3       -            -            number of lines        -
==============  ===========  ===========  =====================  ==================================

``network`` (line -> ordered stations, markers stripped) is always present. ``routes`` holds the ReasonMap
benchmark's reference routes (plan id -> rides) where the source has them, for the map-score metric.

Every field is checked when a GroundTruth is built (from code or from JSON): a wrong type, a float or a boolean
for a count, a count out of range (``MAX_COUNT``), an unknown name or malformed JSON is a ValueError naming the
field, never a TypeError or OverflowError later in scoring.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Question types, grouped by the answer they expect (see the table above).
YES_NO_TYPES = ("TorF1", "TorF2")  # answer 1 (yes) or 0 (no)
OPTION_TYPES = ("Counting1",)  # answer the index of one of the OPTION_LETTERS
COUNT_TYPES = ("Counting2", "Counting3")  # answer a count
VQA_TYPES = (*YES_NO_TYPES, *OPTION_TYPES, *COUNT_TYPES)  # ReasonMap-Plus, the perception questions
QUESTION_TYPES = ("planning", *VQA_TYPES)
OPTION_LETTERS = ("A", "B", "C", "D")  # Counting1's options, in order: answer 0 is A
PLANNING_TEMPLATES = ("short", "long1", "long2")
MAP_DIFFICULTIES = ("easy", "middle", "hard")  # in increasing order: the index is the map level 0/1/2
SCHEMA_VERSION = 1
MAX_COUNT = 1_000_000  # bound of every count (transfers, answers): far above any map, far below float overflow


@dataclass(frozen=True)
class GroundTruth:
    """Everything needed to score one question; see the module docstring for what each type fills."""

    question_type: str
    city: str
    map_difficulty: str
    network: dict[str, list[str]]
    station_1: str = ""
    station_2: str = ""
    answer: int | None = None
    template: str = "short"
    question_transfer_count: int = 0
    line: str = ""
    options: list[str] = field(default_factory=list)
    country: str = ""
    routes: dict[str, list[dict[str, Any]]] | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _one_of("question_type", self.question_type, QUESTION_TYPES)
        _one_of("map_difficulty", self.map_difficulty, MAP_DIFFICULTIES)
        for name in ("city", "country", "station_1", "station_2", "line", "template"):
            _require(isinstance(getattr(self, name), str), name, "must be a string", getattr(self, name))
        _check_network(self.network)
        if self.question_type == "planning":
            _one_of("template", self.template, PLANNING_TEMPLATES)
        _check_count("question_transfer_count", self.question_transfer_count, MAX_COUNT)
        if self.question_type != "planning" and self.answer is None:
            raise ValueError(f"answer: required for {self.question_type}")
        if self.answer is not None:
            _check_count("answer", self.answer, _ANSWER_MAX.get(self.question_type, MAX_COUNT))
        _require(isinstance(self.options, list), "options", "must be a list of option texts", self.options)
        if self.options and len(self.options) != len(OPTION_LETTERS):
            raise ValueError(f"options: Counting1 has {len(OPTION_LETTERS)} options, got {len(self.options)}")
        _require(all(isinstance(o, str) for o in self.options), "options", "must be strings", self.options)
        _check_routes(self.routes)
        version = self.schema_version
        _require(type(version) is int and version == SCHEMA_VERSION, "schema_version", "is not supported", version)

    def to_json(self) -> str:
        """Serialise for ``reward_model.ground_truth`` (non-ASCII kept as is)."""
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> GroundTruth:
        """Parse a ``ground_truth`` string (cached: a GRPO group shares one question); ValueError when invalid."""
        if not isinstance(text, str):
            raise ValueError(f"ground_truth: expected a JSON string, got {type(text).__name__}")
        return _parse_ground_truth(text)


# The largest answer of a question type: TorF 1/0, Counting1 an option index, counts up to MAX_COUNT.
_ANSWER_MAX = {**dict.fromkeys(YES_NO_TYPES, 1), **dict.fromkeys(OPTION_TYPES, len(OPTION_LETTERS) - 1)}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _require(ok: bool, name: str, problem: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name}: {_show(value)} {problem}")


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    _require(isinstance(value, str) and value in allowed, name, f"is not one of {allowed}", value)


def _check_count(name: str, value: Any, maximum: int) -> None:
    """An int (not a bool, not a float) in [0, maximum]."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum
    _require(ok, name, f"must be an integer from 0 to {maximum}", value)


def _check_network(network: Any) -> None:
    _require(isinstance(network, Mapping) and bool(network), "network", "must map line names to stations", network)
    for line, stations in network.items():
        _require(isinstance(line, str), "network", "has a line name that is not a string", line)
        ok = isinstance(stations, (list, tuple)) and bool(stations) and all(isinstance(s, str) for s in stations)
        _require(ok, f"network[{line!r}]", "must be a non-empty list of station names", stations)


def _check_routes(routes: Any) -> None:
    if routes is None:
        return
    _require(isinstance(routes, Mapping), "routes", "must map plan ids to rides", routes)
    for plan, rides in routes.items():
        ok = isinstance(plan, str) and isinstance(rides, (list, tuple)) and all(isinstance(r, Mapping) for r in rides)
        _require(ok, f"routes[{plan!r}]", "must be a list of rides (objects)", rides)


@functools.lru_cache(maxsize=4096)
def _parse_ground_truth(text: str) -> GroundTruth:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:  # RecursionError: nesting deeper than the parser's stack
        raise ValueError(f"ground_truth: not valid JSON ({type(err).__name__}: {str(err)[:80]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"ground_truth: must be a JSON object of GroundTruth fields, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(GroundTruth)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"ground_truth: unknown fields {sorted(unknown)[:10]}")
    required = [
        f.name
        for f in dataclasses.fields(GroundTruth)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in data]
    if missing:
        raise ValueError(f"ground_truth: missing fields {missing}")
    return GroundTruth(**data)
