"""Benchmark metrics: ReasonMap (accuracy, difficulty-weighted accuracy, map score) and ReasonMap-Plus accuracy.

Per response: ``evaluate_planning`` and ``evaluate_vqa``; over a run: ``reasonmap_metrics`` and
``reasonmap_plus_metrics``, which take records (``EvalRecord`` or ``(ground_truth, response)`` pairs, the ground
truth as a GroundTruth or its JSON) and return plain typed dicts. Accuracies are fractions in [0, 1].

ReasonMap accuracy is the correctness rule of ``reward_fns.correctness`` on the benchmark's parse (``parser=
"paper"``: case-sensitive sections split on ``--``; the arrival is the rest of the section for short questions
and the rest of its line for long ones, as the official evaluation reads them). ``parser="tolerant"`` uses the
reward's tolerant parser instead.

Map score (ReasonMap), against each reference route of the question, keeping the best: nothing unless the first
departure is the origin and the last arrival the destination (+1 when they are); then per block, compared in
order with the reference ride: route name +2, departure +1, arrival +1; long template 1 adds 4 per block for an
exact via-stop count, else max(0, 4 - 4 x |error| / reference count) (0 when the reference count is 0), summed
and capped at 10; long template 2 adds (10 x IoU + min(10, matched stops)) / 2, where matched stops counts the
answer's via stops found in the reference ride's, and the IoU is over the via-stop sets of the blocks whose line
matches. Short answers are capped at 10 and get +10 when correct (max 20); long ones at 20 and +20 (max 40).

Where the official evaluation code departs from the paper, this module follows the paper:

- Reference line names (map-app style: "地铁5号线(后关--虎滩新区)", "Metro A Line", "M1-es Metróvonal",
  "5 Train") are mapped onto the network's own line names by ``match_line_name`` and compared with the answer's
  line; the official code applies its non-Chinese rules to the answer's line name instead of the reference's.
- Reference stops are normalised like every station (``normalize_station``); the official code, normalising the
  reference arrival, tests the departure's suffix and can replace the arrival with the departure.
- Template 2 (via stops) is scored for every city, not only Chinese ones, and via stops compare normalised.
- A missing via-stop field earns no via points (the official code reads any digit of the block instead).
- Stations compare after ``normalize_station`` (the released RewardMap ``clean_string``, as the notes' rule
  says). The ReasonMap repository's evaluation script uses a weaker ``clean_string`` that keeps "Station" and
  "站", so there "Union" does not match "Union Station"; accuracies here can be slightly higher than that
  script's on answers that drop the suffix.
- Difficulty-weighted accuracy is computed (the official code leaves it a TODO, weight 1): weight
  1 + 0.5 x (question level + map level), ``reward_fns.weights.reasonmap_eval_weight``.

ReasonMap-Plus: the answer is read as the released reward reads it (``\\boxed{}`` or an "the answer is" phrase,
``parser="paper"``) or tolerantly; weighted accuracy uses map weights 1.0 / 1.5 / 2.0; reported overall, per
question type, and for Counting (1-3) and TorF (1-2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypedDict

from reward_fns.correctness import route_correct, tolerant_legs, vqa_correct
from reward_fns.ground_truth import QUESTION_TYPES, GroundTruth
from reward_fns.line_names import line_key, match_line_name
from reward_fns.network import normalize_station
from reward_fns.question_context import QuestionContext, question_context
from reward_fns.released import (
    extract_vqa_answer_released,
    parse_route_blocks_strict,
    released_legs,
    vqa_correct_released,
)
from reward_fns.route_parsing import first_integer, parse_route_blocks, split_via_stops
from reward_fns.vqa_answers import extract_vqa_answer, normalize_vqa_answer
from reward_fns.weights import plus_eval_weight, reasonmap_eval_weight

Parser = Literal["paper", "tolerant"]

SHORT_CAP, LONG_CAP = 10.0, 20.0
VIA_CAP = 10.0
VIA_COUNT_POINTS = 4.0

# ----------------------------------------------------------------------------------------------------------------
# Per response
# ----------------------------------------------------------------------------------------------------------------


class _AnswerBlock(NamedTuple):
    route_name: str
    departure: str  # normalised
    arrival: str  # normalised
    via_count: int | None
    via_stops: tuple[str, ...] | None  # normalised


class PlanningEval(TypedDict):
    """One planning response: ``map_score`` is None when the question has no reference routes."""

    acc: int
    map_score: float | None
    map_score_max: float
    weight: float
    template: str


class VqaEval(TypedDict):
    """One ReasonMap-Plus response."""

    acc: int
    weight: float
    question_type: str


def _answer_blocks(text: str, ctx: QuestionContext, parser: Parser) -> tuple[list[_AnswerBlock], bool]:
    """The answer's blocks for the map score, and its correctness."""
    template = ctx.gt.template
    if parser == "paper":
        via = "number" if template == "long1" else "list" if template == "long2" else None
        strict = parse_route_blocks_strict(text, arrival="tail" if template == "short" else "line", via=via)
        correct = route_correct(released_legs(strict, ctx), ctx)
        blocks = [_answer_block(b, None if b.via_stops is None else split_via_stops(b.via_stops)) for b in strict]
        return blocks, correct
    tolerant = parse_route_blocks(text)
    correct = route_correct(tolerant_legs(tolerant, ctx), ctx)
    return [_answer_block(b, b.via_stops) for b in tolerant], correct


def _answer_block(block: Any, via_stops: Iterable[str] | None) -> _AnswerBlock:
    """One parsed block (strict or tolerant) with its stations normalised for comparison."""
    return _AnswerBlock(
        block.route_name,
        normalize_station(block.departure),
        normalize_station(block.arrival),
        None if block.num_via_stops is None else (first_integer(block.num_via_stops) or 0),
        None if via_stops is None else tuple(normalize_station(v) for v in via_stops),
    )


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return first_integer(str(value)) if value is not None else None


def _plan_points(blocks: list[_AnswerBlock], plan: Sequence[Mapping[str, Any]], ctx: QuestionContext) -> float:
    """Map-score points against one reference route, before the cap and the correctness bonus."""
    gt = ctx.gt
    lines = ctx.index.network.lines if ctx.index is not None else {}
    points = 1.0
    via_count_points = matched = 0.0
    union: set[str] = set()
    inter: set[str] = set()
    for block, ride in zip(blocks, plan, strict=False):
        if not isinstance(ride, Mapping):
            continue
        ref_name = str(ride.get("route_name", ""))
        ref_line = match_line_name(ref_name, lines, city=gt.city) or ref_name
        answer_line = ctx.tolerant_line(block.route_name) or block.route_name
        same_line = line_key(answer_line) == line_key(ref_line) and bool(line_key(ref_line))
        if same_line:
            points += 2
        if normalize_station(str(ride.get("departure_stop", ""))) == block.departure:
            points += 1
        if normalize_station(str(ride.get("arrival_stop", ""))) == block.arrival:
            points += 1
        if gt.template == "long1" and block.via_count is not None:
            reference = _as_int(ride.get("num_via_stops"))
            if reference is None:
                reference = len(ride.get("via_stops") or ())
            error = abs(block.via_count - reference)
            if error == 0:
                via_count_points += VIA_COUNT_POINTS
            elif reference > 0:
                via_count_points += max(0.0, VIA_COUNT_POINTS - VIA_COUNT_POINTS * error / reference)
        elif gt.template == "long2" and block.via_stops is not None:
            reference_stops = {normalize_station(str(s)) for s in ride.get("via_stops") or ()}
            matched += sum(1 for stop in block.via_stops if stop in reference_stops)
            if same_line:
                answer_stops = set(block.via_stops)
                union |= answer_stops | reference_stops
                inter |= answer_stops & reference_stops
    if gt.template == "long1":
        points += min(VIA_CAP, via_count_points)
    elif gt.template == "long2":
        iou = len(inter) / len(union) if union else 0.0
        points += (10.0 * iou + min(VIA_CAP, matched)) / 2.0
    return points


def evaluate_planning(ground_truth: GroundTruth | str, response: str, *, parser: Parser = "paper") -> PlanningEval:
    """Accuracy, best map score and difficulty weight of one planning response (module docstring)."""
    ctx = question_context(ground_truth)
    gt = ctx.gt
    if gt.question_type != "planning":
        raise ValueError(f"evaluate_planning: {gt.question_type} is not a planning question")
    text = response if isinstance(response, str) else ""
    blocks, correct = _answer_blocks(text, ctx, parser)
    cap = SHORT_CAP if gt.template == "short" else LONG_CAP
    map_score: float | None = None
    routes = gt.routes or {}
    if routes:
        gate = bool(blocks) and blocks[0].departure == ctx.origin and blocks[-1].arrival == ctx.destination
        map_score = 0.0
        for plan in routes.values():
            points = _plan_points(blocks, plan or [], ctx) if gate else 0.0
            points = min(cap, points) + (cap if correct else 0.0)
            map_score = max(map_score, points)
    return PlanningEval(
        acc=int(correct),
        map_score=map_score,
        map_score_max=2 * cap,
        weight=reasonmap_eval_weight(gt.map_difficulty, gt.question_transfer_count),
        template=gt.template,
    )


def evaluate_vqa(ground_truth: GroundTruth | str, response: str, *, parser: Parser = "paper") -> VqaEval:
    """Accuracy and map weight (1.0 / 1.5 / 2.0) of one ReasonMap-Plus response."""
    gt = question_context(ground_truth).gt
    if gt.question_type == "planning":
        raise ValueError("evaluate_vqa: a planning question")
    text = response if isinstance(response, str) else ""
    if parser == "paper":
        correct = vqa_correct_released(extract_vqa_answer_released(text), gt)
    else:
        found = extract_vqa_answer(text)
        correct = found is not None and vqa_correct(normalize_vqa_answer(found.text, gt.question_type), gt)
    return VqaEval(acc=int(correct), weight=plus_eval_weight(gt.map_difficulty), question_type=gt.question_type)


# ----------------------------------------------------------------------------------------------------------------
# Over a run
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalRecord:
    """One benchmark question and the model's response to it."""

    ground_truth: GroundTruth | str
    response: str


class GroupMetrics(TypedDict):
    """Plain and weighted accuracy of a group of questions (0.0 when the group is empty)."""

    n: int
    accuracy: float
    weighted_accuracy: float


class PlanningGroupMetrics(GroupMetrics):
    """ReasonMap group: accuracies plus the mean map score over questions with reference routes."""

    n_map_scored: int
    map_score: float
    map_score_fraction: float  # mean of map score / its maximum (20 short, 40 long)


class ReasonMapReport(TypedDict):
    short: PlanningGroupMetrics
    long: PlanningGroupMetrics
    overall: PlanningGroupMetrics


class ReasonMapPlusReport(TypedDict):
    overall: GroupMetrics
    torf: GroupMetrics
    counting: GroupMetrics
    per_type: dict[str, GroupMetrics]


def _records(records: Iterable[EvalRecord | tuple[Any, str]]) -> Iterable[tuple[Any, str]]:
    for record in records:
        if isinstance(record, EvalRecord):
            yield record.ground_truth, record.response
        else:
            ground_truth, response = record
            yield ground_truth, response


def _group(items: Sequence[tuple[int, float]]) -> GroupMetrics:
    total = sum(w for _, w in items)
    return GroupMetrics(
        n=len(items),
        accuracy=sum(a for a, _ in items) / len(items) if items else 0.0,
        weighted_accuracy=sum(a * w for a, w in items) / total if total else 0.0,
    )


def _planning_group(evals: Sequence[PlanningEval]) -> PlanningGroupMetrics:
    base = _group([(e["acc"], e["weight"]) for e in evals])
    scored = [e for e in evals if e["map_score"] is not None]
    return PlanningGroupMetrics(
        **base,
        n_map_scored=len(scored),
        map_score=sum(e["map_score"] for e in scored) / len(scored) if scored else 0.0,  # type: ignore[misc]
        map_score_fraction=(
            sum(e["map_score"] / e["map_score_max"] for e in scored) / len(scored) if scored else 0.0  # type: ignore[operator]
        ),
    )


def reasonmap_metrics(records: Iterable[EvalRecord | tuple[Any, str]], *, parser: Parser = "paper") -> ReasonMapReport:
    """ReasonMap metrics for short questions, long questions (templates 1 and 2) and both together."""
    evals = [evaluate_planning(gt, response, parser=parser) for gt, response in _records(records)]
    return ReasonMapReport(
        short=_planning_group([e for e in evals if e["template"] == "short"]),
        long=_planning_group([e for e in evals if e["template"] != "short"]),
        overall=_planning_group(evals),
    )


def reasonmap_plus_metrics(
    records: Iterable[EvalRecord | tuple[Any, str]], *, parser: Parser = "paper"
) -> ReasonMapPlusReport:
    """ReasonMap-Plus accuracy and map-weighted accuracy overall, for TorF, for Counting and per question type."""
    evals = [evaluate_vqa(gt, response, parser=parser) for gt, response in _records(records)]

    def pick(types: Iterable[str]) -> GroupMetrics:
        wanted = set(types)
        return _group([(e["acc"], e["weight"]) for e in evals if e["question_type"] in wanted])

    vqa_types = [t for t in QUESTION_TYPES if t != "planning"]
    return ReasonMapPlusReport(
        overall=pick(vqa_types),
        torf=pick(t for t in vqa_types if t.startswith("TorF")),
        counting=pick(t for t in vqa_types if t.startswith("Counting")),
        per_type={t: pick([t]) for t in vqa_types},
    )
