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
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from typing import Any

QUESTION_TYPES = ("planning", "TorF1", "TorF2", "Counting1", "Counting2", "Counting3")
PLANNING_TEMPLATES = ("short", "long1", "long2")
MAP_DIFFICULTIES = ("easy", "middle", "hard")
SCHEMA_VERSION = 1


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
        if self.question_type not in QUESTION_TYPES:
            raise ValueError(f"question_type: {self.question_type!r} is not one of {QUESTION_TYPES}")
        if self.map_difficulty not in MAP_DIFFICULTIES:
            raise ValueError(f"map_difficulty: {self.map_difficulty!r} is not one of {MAP_DIFFICULTIES}")
        if self.question_type == "planning" and self.template not in PLANNING_TEMPLATES:
            raise ValueError(f"template: {self.template!r} is not one of {PLANNING_TEMPLATES}")
        if self.question_type != "planning" and self.answer is None:
            raise ValueError(f"answer: required for {self.question_type}")
        if self.options and len(self.options) != 4:
            raise ValueError(f"options: Counting1 has 4 options (A-D), got {len(self.options)}")

    def to_json(self) -> str:
        """Serialise for ``reward_model.ground_truth`` (non-ASCII kept as is)."""
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> GroundTruth:
        """Parse a ``ground_truth`` string (cached: a GRPO group shares one question)."""
        return _parse_ground_truth(text)


@functools.lru_cache(maxsize=4096)
def _parse_ground_truth(text: str) -> GroundTruth:
    data = json.loads(text)
    known = {f.name for f in dataclasses.fields(GroundTruth)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"ground_truth: unknown fields {sorted(unknown)}")
    return GroundTruth(**data)
