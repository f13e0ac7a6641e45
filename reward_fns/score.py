"""RewardMap's reward as a verl custom reward function: ``compute_score(data_source, solution_str, ground_truth)``.

Every call returns the same float keys, so verl can log them: ``score`` (the reward), ``acc`` (0/1 correct),
``format`` (0/1: the demanded answer shape), ``detail`` (detail points before alpha; 0 for VQA) and ``weight``
(W_difficulty, ``reward_fns.weights``; the same for every response to a question).

Modes (``reward.reward_kwargs.mode``):

- ``released``: the released reward bit for bit, ``W x (10 x acc + 0.5 x detail)``, no format term, quirks included
  (``reward_fns.reward_released``; e.g. an arrival line followed by an explanation never reaches the
  destination). At most 15 W; no lower bound (each block past the transfer count costs 2.5 W).
- ``fixed`` (default): ``W x (format_reward x format + 10 x acc + alpha x detail)`` with the tolerant parser
  (markdown, bullets, case, full-width colons; VQA "yes." / "(B)" / "3 lines"). Within
  [0, W x (format_reward + 10 + 10 alpha)].
- ``sparse``: ``10 x acc`` (tolerant), unweighted; the other keys are still reported.

Why ``fixed`` (``reward_fns.detail`` has the full table): the released over-length penalty is off by one (every
correct route loses 5 on its last block, and a wrong one-block answer to a one-transfer question out-earns the
right one), and released detail has no floor and pays for padding. ``fixed`` penalises only blocks past
transfers + 1, clamps detail to [0, 10], pays for at most the rides of a minimum-transfer route, so with
10 > format_reward + 10 x alpha (the defaults) a correct answer always outscores an incorrect one. It also
compares stations after ``normalize_station`` ("土桥站 Station" is "土桥"; ``released`` keeps the released order),
and credits the format only for the exact demanded shape (the prompt's labels, blocks separated by ``--``, the
long templates' via-stop field, VQA answers in ``\\boxed{}``).

Total on responses: any ``solution_str`` (empty, megabytes, binary, not a str) gets a result, in time linear in
its length. An invalid ``ground_truth`` or option (a data or configuration bug) raises ValueError naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from reward_fns.correctness import route_correct, tolerant_legs, vqa_correct
from reward_fns.detail import fixed_detail
from reward_fns.ground_truth import GroundTruth
from reward_fns.question_context import QuestionContext, question_context
from reward_fns.reward_released import (
    RELEASED_ALPHA,
    extract_vqa_answer_released,
    released_context,
    released_reward_terms,
    vqa_correct_released,
)
from reward_fns.route_parsing import RouteBlock, first_integer, parse_route_blocks
from reward_fns.vqa_answers import extract_vqa_answer, normalize_vqa_answer
from reward_fns.weights import (
    DEFAULT_TRANSFER_WEIGHT,
    check_map_weights,
    difficulty_weight,
    is_finite_number,
)

MODES = ("fixed", "released", "sparse")
CORRECT_POINTS = 10.0

Mode = Literal["fixed", "released", "sparse"]


@dataclass(frozen=True)
class RewardOptions:
    """The options of ``compute_score``, checked when built; ValueError names the option.

    ``mode`` one of ``MODES``; ``alpha``, ``transfer_weight`` and ``format_reward`` finite numbers >= 0;
    ``map_weights`` finite numbers > 0 for exactly easy, middle and hard (None: the defaults). Booleans, strings,
    nan and inf are refused, so a typo fails at start-up instead of training on a default.
    """

    mode: Mode = "fixed"
    alpha: float = 0.5
    map_weights: Mapping[str, float] | None = None  # None: DEFAULT_MAP_WEIGHTS
    transfer_weight: float = DEFAULT_TRANSFER_WEIGHT
    format_reward: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ValueError(f"mode: {self.mode!r} is not one of {MODES}")
        for name in ("alpha", "transfer_weight", "format_reward"):
            value = getattr(self, name)
            if not is_finite_number(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "map_weights", check_map_weights(self.map_weights))

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], *, where: str = "") -> RewardOptions:
        """Options from a mapping of them (None values mean "the default"); unknown keys are refused, and every
        error message starts with ``where`` + the option's name (e.g. "reward.reward_kwargs.alpha: ...")."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(key) for key in kwargs if key not in known)
        if unknown:
            raise ValueError(f"{where.rstrip('.') or 'options'}: unknown keys {unknown}; known: {known}")
        try:
            return cls(**{key: value for key, value in kwargs.items() if value is not None})
        except ValueError as err:
            raise ValueError(f"{where}{err}") from None


class ScoreResult(TypedDict):
    """What ``compute_score`` returns; every value a float."""

    score: float
    acc: float
    format: float
    detail: float
    weight: float


SCORE_KEYS = tuple(ScoreResult.__annotations__)  # ("score", "acc", "format", "detail", "weight")


def _as_text(solution: Any) -> str:
    if isinstance(solution, str):
        return solution
    if solution is None:
        return ""
    if isinstance(solution, (bytes, bytearray)):
        return bytes(solution).decode("utf-8", errors="replace")
    try:
        return str(solution)
    except Exception:  # an object whose __str__ fails is still "a response": score it as empty
        return ""


def planning_format(blocks: list[RouteBlock], template: str) -> bool:
    """The demanded shape: >= 1 complete block, all written canonically, with the template's via-stop field."""
    if not blocks or not all(b.canonical for b in blocks):
        return False
    if template == "long1":
        return all(b.num_via_stops is not None and first_integer(b.num_via_stops) is not None for b in blocks)
    if template == "long2":
        return all(b.via_stops is not None for b in blocks)
    return True


def _planning(text: str, ctx: QuestionContext, mode: Mode) -> tuple[bool, bool, float]:
    gt = ctx.gt
    blocks = parse_route_blocks(text)
    fmt = planning_format(blocks, gt.template)
    if mode == "released":
        correct, detail = released_reward_terms(text, ctx)
        return correct, fmt, detail
    legs = tolerant_legs(blocks, ctx)
    return route_correct(legs, ctx), fmt, fixed_detail(legs, ctx, gt.question_transfer_count)


def _vqa(text: str, gt: GroundTruth, mode: Mode) -> tuple[bool, bool]:
    found = extract_vqa_answer(text)
    answer = None if found is None else normalize_vqa_answer(found.text, gt.question_type)
    fmt = found is not None and found.source == "boxed" and answer is not None
    if mode == "released":
        return vqa_correct_released(extract_vqa_answer_released(text), gt), fmt
    return vqa_correct(answer, gt), fmt


def compute_score(
    data_source: Any,
    solution_str: Any,
    ground_truth: str | GroundTruth | Mapping[str, Any],
    extra_info: Any = None,
    *,
    mode: Mode = "fixed",
    alpha: float = 0.5,
    map_weights: Mapping[str, float] | None = None,
    transfer_weight: float = DEFAULT_TRANSFER_WEIGHT,
    format_reward: float = 1.0,
    **kwargs: Any,
) -> ScoreResult:
    """Score one response under verl's custom reward contract (modes in the module docstring).

    Args:
        data_source: ignored, as are ``extra_info`` and unknown keyword arguments: the ground truth carries all
            that scoring needs.
        solution_str: the response; anything gets a result.
        ground_truth: a prepared row's ``reward_model.ground_truth`` (JSON text), or a GroundTruth or dict of its
            fields.
        mode: ``fixed``, ``released`` or ``sparse``.
        alpha, format_reward: the detail factor and the format-term size of ``fixed`` (``released`` uses 0.5
            and no format term), finite and >= 0.
        map_weights, transfer_weight: W in every mode (``reward_fns.weights``).

    Returns:
        ``ScoreResult``: score, acc, format, detail and weight, all floats.

    Raises:
        ValueError: an invalid ground truth or option, named (checked as ``RewardOptions``).

    A correct one-transfer answer on a hard map (W = 1.5 + 0.5): released 2.0 x (10 + 0.5 x 4) = 24.0; fixed
    2.0 x (1 + 10 + 0.5 x 9) = 31.0; a correct TorF on a middle map, released: 1.2 x 10 = 12.0.

    >>> network = {"Line 1": ["A", "B", "C"], "Line 2": ["C", "D"]}
    >>> gt = GroundTruth(question_type="planning", city="demo", map_difficulty="hard", network=network,
    ...                  station_1="A", station_2="D", question_transfer_count=1)
    >>> answer = ("Route Name: Line 1\\nDeparture Stop: A\\nArrival Stop: C\\n--\\n"
    ...           "Route Name: Line 2\\nDeparture Stop: C\\nArrival Stop: D\\n")
    >>> compute_score("synthetic", answer, gt, mode="released")
    {'score': 24.0, 'acc': 1.0, 'format': 1.0, 'detail': 4.0, 'weight': 2.0}
    >>> compute_score("synthetic", answer, gt)["score"], compute_score("synthetic", "Line 1, then 2", gt)["score"]
    (31.0, 0.0)
    >>> torf = GroundTruth(question_type="TorF1", city="demo", map_difficulty="middle", network=network, answer=1)
    >>> compute_score("synthetic", "\\\\boxed{yes}", torf, mode="released")["score"]
    12.0
    """
    options = RewardOptions(
        mode=mode,
        alpha=alpha,
        map_weights=map_weights,
        transfer_weight=transfer_weight,
        format_reward=format_reward,
    )
    mode = options.mode
    ctx = released_context(ground_truth) if mode == "released" else question_context(ground_truth)
    gt = ctx.gt
    weight = difficulty_weight(
        gt.question_type,
        gt.map_difficulty,
        gt.question_transfer_count,
        map_weights=options.map_weights,
        transfer_weight=options.transfer_weight,
    )
    text = _as_text(solution_str)
    detail = 0.0
    if gt.question_type == "planning":
        correct, fmt, detail = _planning(text, ctx, mode)
    else:
        correct, fmt = _vqa(text, gt, mode)
    acc = 1.0 if correct else 0.0
    fmt_value = 1.0 if fmt else 0.0
    if mode == "released":
        score = weight * (CORRECT_POINTS * acc + RELEASED_ALPHA * detail)
    elif mode == "fixed":
        score = weight * (options.format_reward * fmt_value + CORRECT_POINTS * acc + options.alpha * detail)
    else:
        score = CORRECT_POINTS * acc
    return ScoreResult(score=float(score), acc=acc, format=fmt_value, detail=float(detail), weight=float(weight))


__all__ = ["MODES", "SCORE_KEYS", "RewardOptions", "ScoreResult", "compute_score", "planning_format"]
