"""Difficulty weights: the training reward's W_difficulty and the benchmarks' evaluation weights.

Training (RewardMap, as released): W = W_map + W_question, W_map = 1.0 / 1.2 / 1.5 for easy / middle / hard maps,
W_question = 0.5 for a planning question with one or more transfers, else 0; perception (TorF, Counting) uses
W_map only. Note that W is constant within a GRPO group, so plain std-normalised GRPO cancels it; the recipe's
advantage estimator is what makes it matter.

Evaluation: ReasonMap's difficulty-weighted accuracy weighs a question 1 + 0.5 x (question level + map level),
levels 0/1/2 (question level: 0 transfers easy, 1 medium, 2+ hard); ReasonMap-Plus weighs by map only,
1.0 / 1.5 / 2.0.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from types import MappingProxyType

from reward_fns.ground_truth import MAP_DIFFICULTIES

DEFAULT_MAP_WEIGHTS: Mapping[str, float] = MappingProxyType({"easy": 1.0, "middle": 1.2, "hard": 1.5})
DEFAULT_TRANSFER_WEIGHT = 0.5

MAP_LEVELS: Mapping[str, int] = MappingProxyType({name: level for level, name in enumerate(MAP_DIFFICULTIES)})
PLUS_EVAL_MAP_WEIGHTS: Mapping[str, float] = MappingProxyType({"easy": 1.0, "middle": 1.5, "hard": 2.0})


def check_map_weights(map_weights: Mapping[str, float] | None) -> Mapping[str, float]:
    """The map weights to use (defaults when None) as floats; ValueError naming ``map_weights`` unless they give a
    finite positive number (not a boolean) for exactly the difficulties ``MAP_DIFFICULTIES``."""
    if map_weights is None or map_weights is DEFAULT_MAP_WEIGHTS:
        return DEFAULT_MAP_WEIGHTS
    if not isinstance(map_weights, Mapping) or set(map_weights) != set(MAP_DIFFICULTIES):
        raise ValueError(f"map_weights: need a number for each of {MAP_DIFFICULTIES} and no other, got {map_weights!r}")
    for key in MAP_DIFFICULTIES:
        if not is_finite_number(map_weights[key]) or not map_weights[key] > 0:
            raise ValueError(f"map_weights.{key}: must be a finite positive number, got {map_weights[key]!r}")
    return MappingProxyType({key: float(map_weights[key]) for key in MAP_DIFFICULTIES})


def is_finite_number(value: object) -> bool:
    """A real number that is finite as a float (a huge int is not) and not a boolean (``True`` is an int to Python,
    never a weight to a user)."""
    if type(value) is float:  # the common case, without the ABC check
        return math.isfinite(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def difficulty_weight(
    question_type: str,
    map_difficulty: str,
    question_transfer_count: int,
    *,
    map_weights: Mapping[str, float] | None = None,
    transfer_weight: float = DEFAULT_TRANSFER_WEIGHT,
) -> float:
    """The training reward's W_difficulty (module docstring); ValueError for an unknown map difficulty."""
    weights = check_map_weights(map_weights)
    if map_difficulty not in weights:
        raise ValueError(f"map_difficulty: {map_difficulty!r} is not one of {tuple(weights)}")
    weight = float(weights[map_difficulty])
    if question_type == "planning" and question_transfer_count > 0:
        weight += float(transfer_weight)
    return weight


def question_level(question_transfer_count: int) -> int:
    """ReasonMap question difficulty level: 0 transfers -> 0 (easy), 1 -> 1 (medium), 2 or more -> 2 (hard)."""
    return min(max(int(question_transfer_count), 0), 2)


def reasonmap_eval_weight(map_difficulty: str, question_transfer_count: int) -> float:
    """ReasonMap's difficulty-weighted-accuracy weight: 1 + 0.5 x (question level + map level), in [1, 3]."""
    return 1.0 + 0.5 * (question_level(question_transfer_count) + MAP_LEVELS[map_difficulty])


def plus_eval_weight(map_difficulty: str) -> float:
    """ReasonMap-Plus weighted-accuracy weight: 1.0 / 1.5 / 2.0 for easy / middle / hard maps."""
    return PLUS_EVAL_MAP_WEIGHTS[map_difficulty]
