"""Correctness (the +10 of the reward, and ReasonMap / ReasonMap-Plus accuracy) of planning and VQA answers.

Planning, as the released code and the benchmark decide it: the answer parses into at least one block; the first
block's departure is the origin and the last block's arrival the destination; every route name is a line of the
city (after the released code's two hard-coded renames, "八通" -> "Line 1" and "大兴" -> "Line 4"); both stops of
every block lie on that block's line; each block's arrival is the next block's departure. Stop order along the
line, the number of transfers and optimality are not checked. Stations compare after ``normalize_station``.

The rule is the same in every mode; what differs is how a response becomes legs: ``released_legs`` from the strict
parser (released semantics, stops normalised twice as the released code does), ``tolerant_legs`` from the
tolerant parser with ``QuestionContext.tolerant_line`` names.

VQA: exact match of the extracted answer. TorF ground truth 1/0 -> "yes"/"no", Counting1 option index 0-3 <->
letter A-D, Counting2/3 an integer.
"""

from __future__ import annotations

from collections.abc import Sequence

from reward_fns.context import Leg, QuestionContext
from reward_fns.ground_truth import GroundTruth
from reward_fns.network import normalize_station
from reward_fns.parsing import RouteBlock, StrictBlock

_LETTER_INDEX = {"a": 0, "b": 1, "c": 2, "d": 3}
_MAX_INT_CHARS = 4300  # CPython's default int() digit limit: longer strings are never parsed (and never quadratic)


def released_legs(blocks: Sequence[StrictBlock], ctx: QuestionContext) -> list[Leg]:
    """Legs of strictly parsed blocks, as the released code compares them.

    Stops were normalised at parse time and are normalised again here (the released code calls ``clean_string``
    on already-cleaned stops), which differs from one pass only on odd input such as "站站" or "METRO".
    """
    return [
        Leg(ctx.released_line(b.route_name), normalize_station(b.departure), normalize_station(b.arrival))
        for b in blocks
    ]


def tolerant_legs(blocks: Sequence[RouteBlock], ctx: QuestionContext) -> list[Leg]:
    """Legs of tolerantly parsed blocks: lines resolved with ``tolerant_line``, stops normalised once."""
    return [
        Leg(ctx.tolerant_line(b.route_name), normalize_station(b.departure), normalize_station(b.arrival))
        for b in blocks
    ]


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
    if gt.question_type.startswith("TorF"):
        return "yes" if gt.answer == 1 else "no"
    return int(gt.answer) if gt.answer is not None else -1


def vqa_correct_released(answer: str, gt: GroundTruth) -> bool:
    """The released exact-match rule on an answer from ``parsing.extract_vqa_answer_released``.

    TorF: ``answer.lower()`` equals "yes"/"no". Counting2/3: ``int(answer)`` (Python's int: signs, surrounding
    whitespace, underscores and non-ASCII decimal digits accepted) equals the ground truth. Counting1: the lower-case
    answer is one letter a-d whose index equals the ground truth.
    """
    qtype = gt.question_type
    if qtype.startswith("TorF"):
        return answer.lower() == expected_vqa_answer(gt)
    if qtype in ("Counting2", "Counting3"):
        if len(answer) > _MAX_INT_CHARS:
            return False
        try:
            return int(answer) == gt.answer
        except (ValueError, TypeError):
            return False
    if qtype == "Counting1":
        return _LETTER_INDEX.get(answer.lower(), -1) == gt.answer
    return False


def vqa_correct(normalized: str | int | None, gt: GroundTruth) -> bool:
    """Exact match of an answer from ``parsing.normalize_vqa_answer`` (None never matches)."""
    return normalized is not None and normalized == expected_vqa_answer(gt)
