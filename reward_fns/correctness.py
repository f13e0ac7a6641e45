"""Correctness (the +10 of the reward, and ReasonMap / ReasonMap-Plus accuracy) of planning and VQA answers.

Planning, as the released code and the benchmark decide it: the answer parses into at least one block; the first
block's departure is the origin and the last block's arrival the destination; every route name is a line of the
city (after the released code's two hard-coded renames, "八通" -> "Line 1" and "大兴" -> "Line 4"); both stops of
every block lie on that block's line; each block's arrival is the next block's departure. Stop order along the
line, the number of transfers and optimality are not checked. Stations compare after the context's normaliser
(``normalize_station``; the released code's order in released mode).

The rule is the same in every mode; what differs is how a response becomes legs: ``tolerant_legs`` here, from the
tolerant parser with ``QuestionContext.tolerant_line`` names, and ``reward_fns.reward_released.released_legs`` from the
released code's parser.

VQA: exact match of the extracted answer. TorF ground truth 1/0 -> "yes"/"no", Counting1 option index 0-3 <->
letter A-D, Counting2/3 an integer.
"""

from __future__ import annotations

from collections.abc import Sequence

from reward_fns.ground_truth import YES_NO_TYPES, GroundTruth
from reward_fns.question_context import Leg, QuestionContext
from reward_fns.route_parsing import RouteBlock


def tolerant_legs(blocks: Sequence[RouteBlock], ctx: QuestionContext) -> list[Leg]:
    """Legs of tolerantly parsed blocks: lines resolved with ``tolerant_line``, stops normalised once."""
    return [Leg(ctx.tolerant_line(b.route_name), ctx.normalize(b.departure), ctx.normalize(b.arrival)) for b in blocks]


def endpoints_match(legs: Sequence[Leg], ctx: QuestionContext) -> bool:
    """First departure is the origin and last arrival the destination (the gate of correctness and detail)."""
    return bool(legs) and legs[0].departure == ctx.origin and legs[-1].arrival == ctx.destination


def route_correct(legs: Sequence[Leg], ctx: QuestionContext) -> bool:
    """The planning correctness rule (module docstring) over legs."""
    if ctx.index is None or not endpoints_match(legs, ctx):
        return False
    stations = ctx.index.line_stations
    last = len(legs) - 1
    for i, leg in enumerate(legs):
        if leg.line is None:
            return False
        on_line = stations[leg.line]
        if leg.departure not in on_line or leg.arrival not in on_line:
            return False
        if i < last and leg.arrival != legs[i + 1].departure:
            return False
    return True


def expected_vqa_answer(gt: GroundTruth) -> str | int:
    """The answer a VQA question expects: "yes"/"no" for TorF (1 means yes), else the integer (option index)."""
    if gt.question_type in YES_NO_TYPES:
        return "yes" if gt.answer == 1 else "no"
    return int(gt.answer) if gt.answer is not None else -1


def vqa_correct(normalized: str | int | None, gt: GroundTruth) -> bool:
    """Exact match of an answer from ``vqa_answers.normalize_vqa_answer`` (None never matches)."""
    return normalized is not None and normalized == expected_vqa_answer(gt)
