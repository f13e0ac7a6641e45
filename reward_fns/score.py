"""RewardMap's reward as a verl custom reward function: ``compute_score(data_source, solution_str, ground_truth, ...)``.

Every call returns the same float keys: ``score`` (the reward), ``acc`` (0/1 correctness), ``format`` (0/1: the
answer has the demanded shape), ``detail`` (detail points before alpha; 0 for VQA) and ``weight`` (W_difficulty,
see ``reward_fns.weights``). W is the same for every response to a question.

Modes (W = weight, acc / format in {0, 1}):

``released``  exactly the released reward: ``W x (10 x acc + 0.5 x released_detail)``, no format term, detail for
              planning only; parsing, correctness and detail reproduce the released code, quirks included (e.g. the
              arrival is the rest of its block, so a block followed by an explanation or by the long templates'
              via-stop line never reaches the destination). Range: at most 15 W; no lower bound (each block past
              the transfer count costs 2.5 W). Worked examples: correct one-transfer route, hard map:
              2.0 x (10 + 0.5 x 4) = 24.0; correct direct route, easy map: 1.0 x (10 + 0.5 x 1) = 10.5; correct
              TorF, middle map: 1.2 x 10 = 12.0.
``fixed``     (default) ``W x (format_reward x format + 10 x acc + alpha x fixed_detail)`` with the tolerant parser.
              Range: [0, W x (format_reward + 10 + 10 alpha)] for non-negative alpha and format_reward.
``sparse``    ``10 x acc`` (tolerant acc), unweighted; ``weight``, ``format`` and ``detail`` are still reported.

The two flaws of the released reward that ``fixed`` corrects (``reward_fns.detail`` has the full table):

1. Over-length penalty off by one: the released rule takes 5 points per block with i+1 > transfers, so every
   correct route loses 5 on its last block and a wrong single-block answer to a one-transfer question earns more
   detail than the correct answer. ``fixed`` penalises only blocks beyond transfers+1.
2. No floor and no ordering guarantee: released detail can go far below 0 and padding can pay. ``fixed`` clamps
   detail to [0, 10], pays nothing for padding (a repeated block, a standstill ride, one ride split in two) and
   pays for at most as many rides as a minimum-transfer route needs, so no correct route outscores the shortest
   one even when the question's transfer count exceeds the minimum; with 10 > format_reward + 10 x alpha (true
   for the defaults) a correct answer always outscores an incorrect one.

Also corrected: station names compare after ``normalize_station``, which drops a trailing "站" after whitespace
and brackets ("土桥站 Station" is "土桥"); ``released`` keeps the released order (``normalize_station_released``).

Also: ``fixed`` adds an explicit format term (the released code has none), reads answers tolerantly (markdown,
bullets, case, full-width colons; VQA "yes." / "(B)" / "3 lines") and credits the format only for the exact
demanded shape (labels as in the prompt, blocks separated by ``--``, the via-stop field of long templates, VQA
answers in ``\\boxed{}``).

Options (``RewardOptions``, also what ``reward.reward_kwargs`` holds): ``mode``; ``alpha``, ``transfer_weight`` and
``format_reward`` finite numbers >= 0; ``map_weights`` finite numbers > 0 for exactly easy / middle / hard.
Booleans, strings, nan and inf are refused.

Total on responses: any ``solution_str`` (empty, megabytes, binary junk, not even a str) and any ``extra_info``
give a result; everything is linear in the response length. An invalid ``ground_truth`` or option (a data or
configuration bug) raises ValueError naming the field or option.
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
    """The options of ``compute_score``, checked when built (module docstring); ValueError names the option."""

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
    """Score one response (verl's custom reward contract); see the module docstring for the modes.

    ``data_source``, ``extra_info`` and unknown keyword arguments are accepted and ignored: the ground truth
    carries everything scoring needs. ``alpha`` and ``format_reward`` apply to ``fixed`` only (``released`` uses the
    released 0.5 and no format term); ``map_weights`` / ``transfer_weight`` set W in every mode. The options are
    checked as ``RewardOptions``.
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
