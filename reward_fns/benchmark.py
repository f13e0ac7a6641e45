"""ReasonMap and ReasonMap-Plus benchmark metrics under two rule sets, so our numbers compare with the papers'.

Rule sets (ReasonMap planning questions):

- ``released``: what the released benchmark code computes, bit for bit (``reward_fns.benchmark_released``:
  fscdc/ReasonMap ``main.py``, ``main_plus.py``, ``cal_metrics.py``). The published numbers were made with it.
- ``fixed``: the same with its eight documented slips corrected and nothing else (``reward_fns.benchmark_fixed``).

ReasonMap-Plus readings: ``released`` (``main_plus.py``) and ``vlmevalkit`` (VLMEvalKit's ``ReasonMap_Plus``, which
reads answers differently). No slip concerns ReasonMap-Plus, so the ``fixed`` rules read it as ``released``
(``PLUS_READING_OF_RULES``): computed, logged and reported once, under ``released``.

Weights. ReasonMap: the released code's weight is the constant 1 (slip 4), so its ``weighted_accuracy`` is the
plain accuracy; ``fixed`` uses the paper appendix's 1 + 0.5 x (question level + map level)
(``reward_fns.weights.reasonmap_eval_weight``). Every group also reports ``appendix_weighted_accuracy``, the
appendix formula over that rule set's verdicts: the number the papers' tables report. ReasonMap-Plus weighs maps
1.0 / 1.5 / 2.0 in every reading. Accuracies are fractions in [0, 1]; map scores are points (max 20 short,
40 long).

The API: per response ``evaluate_planning`` / ``evaluate_vqa``; per group ``planning_group``, ``plus_group``,
``reasonmap_metrics``, ``reasonmap_plus_metrics``; per validation sample during training ``validation_metrics``
and, from verl's logged means, ``weighted_accuracies``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypedDict

from reward_fns.benchmark_fixed import fixed_planning_score
from reward_fns.benchmark_released import (
    MAP_SCORE_CAP,
    PlanningScore,
    parse_sections,
    plus_answer_vlmevalkit,
    plus_correct_vlmevalkit,
    plus_groups,
    released_planning_score,
)
from reward_fns.ground_truth import VQA_TYPES, GroundTruth
from reward_fns.question_context import question_context
from reward_fns.reward_released import extract_vqa_answer_released, vqa_correct_released
from reward_fns.weights import plus_eval_weight, question_level, reasonmap_eval_weight

Rules = Literal["released", "fixed"]
PlusReading = Literal["released", "vlmevalkit"]
RULE_SETS: tuple[Rules, ...] = ("released", "fixed")
PLUS_READINGS: tuple[PlusReading, ...] = ("released", "vlmevalkit")
# The ReasonMap-Plus reading of each rule set: no slip concerns ReasonMap-Plus, so the fixed rules read it as released.
PLUS_READING_OF_RULES: Mapping[Rules, PlusReading] = MappingProxyType({"released": "released", "fixed": "released"})
FORMS = ("short", "long")
QUESTION_LEVELS = ("easy", "medium", "hard")  # ReasonMap question difficulty by transfers: 0, 1, 2+

# ----------------------------------------------------------------------------------------------------------------
# Per response
# ----------------------------------------------------------------------------------------------------------------


class PlanningEval(TypedDict):
    """One planning response under one rule set.

    ``map_score`` is None when the question has no reference routes; ``map_score_max`` is twice the cap (20 short,
    40 long). ``weight`` is the rule set's accuracy weight (released 1.0, fixed the appendix formula),
    ``appendix_weight`` always the appendix formula. The ``*_points`` are the best plan's breakdown (main.py's
    ``save_*`` values).
    """

    acc: int
    map_score: float | None
    map_score_max: float
    weight: float
    appendix_weight: float
    template: str
    endpoints_points: int
    route_name_points: int
    stop_points: int
    via_count_points: float
    via_stops_points: float


class VqaEval(TypedDict):
    """One ReasonMap-Plus response under one reading: verdict, map weight, type and the answer read."""

    acc: int
    weight: float
    question_type: str
    answer: str


def _text(response: Any) -> str:
    """A response as text (non-strings are still responses: bytes decoded, anything else '')."""
    if isinstance(response, str):
        return response
    if isinstance(response, bytes | bytearray):
        return bytes(response).decode("utf-8", errors="replace")
    return ""


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not one of {tuple(allowed)}")


def _planning_gt(ground_truth: Any) -> GroundTruth:
    gt = question_context(ground_truth).gt
    if gt.question_type != "planning":
        raise ValueError(f"evaluate_planning: {gt.question_type} is not a planning question")
    return gt


def _planning_eval(gt: GroundTruth, score: PlanningScore, rules: Rules) -> PlanningEval:
    appendix = reasonmap_eval_weight(gt.map_difficulty, gt.question_transfer_count)
    return PlanningEval(
        acc=score.acc,
        map_score=score.map_score,
        map_score_max=2.0 * MAP_SCORE_CAP[gt.template],
        weight=1.0 if rules == "released" else appendix,
        appendix_weight=appendix,
        template=gt.template,
        endpoints_points=score.endpoints_points,
        route_name_points=score.route_name_points,
        stop_points=score.stop_points,
        via_count_points=score.via_count_points,
        via_stops_points=score.via_stops_points,
    )


def evaluate_planning(
    ground_truth: GroundTruth | str | Mapping[str, Any], response: Any, *, rules: Rules
) -> PlanningEval:
    """Accuracy, best map score, weights and breakdown of one planning response under ``rules``.

    Args:
        ground_truth: a prepared row's ``reward_model.ground_truth`` (JSON text, or a GroundTruth / dict of its
            fields) of a planning question.
        response: the model's answer; anything gets a result.
        rules: ``released`` or ``fixed``.

    Returns:
        ``PlanningEval``; ValueError for an unknown rule set or a non-planning / invalid ground truth.

    A correct answer outside China: the released rules append " Station" to the reference stops and rewrite the
    model's own line name (slips 1, 2), so only the endpoints point survives (1 + 10 bonus); ``fixed`` gives
    1 + 2 x (2 + 1 + 1) + 10. The weight is 1 under the released rules and the appendix's elsewhere.

    >>> network = {"Line 1": ["A", "B", "C"], "Line 2": ["C", "D"]}
    >>> plan = [{"route_name": "Line 1", "departure_stop": "A", "arrival_stop": "C"},
    ...         {"route_name": "Line 2", "departure_stop": "C", "arrival_stop": "D"}]
    >>> gt = GroundTruth(question_type="planning", city="demo", map_difficulty="hard", network=network,
    ...                  station_1="A", station_2="D", question_transfer_count=1, routes={"0": plan})
    >>> answer = ("Route Name: Line 1\\nDeparture Stop: A\\nArrival Stop: C\\n--\\n"
    ...           "Route Name: Line 2\\nDeparture Stop: C\\nArrival Stop: D\\n")
    >>> [(e["acc"], e["map_score"], e["weight"]) for e in (evaluate_planning(gt, answer, rules=r) for r in RULE_SETS)]
    [(1, 11.0, 1.0), (1, 19.0, 2.5)]
    """
    _check_choice("rules", rules, RULE_SETS)
    gt = _planning_gt(ground_truth)
    text = _text(response)
    score = released_planning_score(gt, text) if rules == "released" else fixed_planning_score(gt, text)
    return _planning_eval(gt, score, rules)


def evaluate_planning_all(
    ground_truth: GroundTruth | str | Mapping[str, Any], response: Any
) -> dict[str, PlanningEval]:
    """``evaluate_planning`` under every rule set, parsing the response once."""
    gt = _planning_gt(ground_truth)
    text = _text(response)
    sections = parse_sections(text, gt.template)
    return {
        "released": _planning_eval(gt, released_planning_score(gt, text, sections), "released"),
        "fixed": _planning_eval(gt, fixed_planning_score(gt, text, sections), "fixed"),
    }


def evaluate_vqa(
    ground_truth: GroundTruth | str | Mapping[str, Any], response: Any, *, reading: PlusReading
) -> VqaEval:
    """Verdict, map weight (1.0 / 1.5 / 2.0) and answer read of one ReasonMap-Plus response under ``reading``."""
    _check_choice("reading", reading, PLUS_READINGS)
    gt = question_context(ground_truth).gt
    if gt.question_type == "planning":
        raise ValueError("evaluate_vqa: a planning question")
    text = _text(response)
    if reading == "vlmevalkit":
        answer = plus_answer_vlmevalkit(text, gt.question_type)
        correct = plus_correct_vlmevalkit(answer, gt)
    else:
        answer = extract_vqa_answer_released(text)
        correct = vqa_correct_released(answer, gt)
    return VqaEval(
        acc=int(correct), weight=plus_eval_weight(gt.map_difficulty), question_type=gt.question_type, answer=answer
    )


# ----------------------------------------------------------------------------------------------------------------
# Over groups of responses
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
    """ReasonMap group: accuracies, and map-score means over the questions that have reference routes."""

    appendix_weighted_accuracy: float
    n_map_scored: int
    map_score: float
    map_score_fraction: float  # mean of map score / its maximum (20 short, 40 long)
    via_count_points: float  # mean of the best plan's template-1 points (cal_metrics' "num via stop score")
    via_stops_points: float  # mean of the best plan's template-2 points (cal_metrics' "via stops score")


class ReasonMapReport(TypedDict):
    short: PlanningGroupMetrics
    long: PlanningGroupMetrics
    overall: PlanningGroupMetrics


class ReasonMapPlusReport(TypedDict):
    overall: GroupMetrics
    torf: GroupMetrics
    counting: GroupMetrics
    per_type: dict[str, GroupMetrics]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _weighted(pairs: Sequence[tuple[float, float]]) -> float:
    total = sum(w for _, w in pairs)
    return sum(a * w for a, w in pairs) / total if total else 0.0


def planning_group(evals: Sequence[Mapping[str, Any]]) -> PlanningGroupMetrics:
    """Aggregate ``PlanningEval``s (or dicts with their keys) of one rule set."""
    scored = [e for e in evals if e["map_score"] is not None]
    return PlanningGroupMetrics(
        n=len(evals),
        accuracy=_mean([e["acc"] for e in evals]),
        weighted_accuracy=_weighted([(e["acc"], e["weight"]) for e in evals]),
        appendix_weighted_accuracy=_weighted([(e["acc"], e["appendix_weight"]) for e in evals]),
        n_map_scored=len(scored),
        map_score=_mean([e["map_score"] for e in scored]),
        map_score_fraction=_mean([e["map_score"] / e["map_score_max"] for e in scored]),
        via_count_points=_mean([e["via_count_points"] for e in scored]),
        via_stops_points=_mean([e["via_stops_points"] for e in scored]),
    )


def plus_group(evals: Sequence[Mapping[str, Any]]) -> GroupMetrics:
    """Aggregate ``VqaEval``s (or dicts with their keys): plain and map-weighted accuracy."""
    return GroupMetrics(
        n=len(evals),
        accuracy=_mean([e["acc"] for e in evals]),
        weighted_accuracy=_weighted([(e["acc"], e["weight"]) for e in evals]),
    )


def plus_summary(evals: Sequence[Mapping[str, Any]]) -> dict[str, GroupMetrics]:
    """cal_metrics' ReasonMap-Plus groups (overall, counting, torf, torf1, torf2) plus one per question type."""
    groups: dict[str, list[Mapping[str, Any]]] = {"overall": list(evals), "counting": [], "torf": []}
    groups.update({"torf1": [], "torf2": []})
    groups.update({t: [] for t in VQA_TYPES})
    for e in evals:
        for name in plus_groups(e["question_type"]):
            groups[name].append(e)
        groups.setdefault(e["question_type"], []).append(e)
    return {name: plus_group(members) for name, members in groups.items()}


def form_of(template: str) -> str:
    """ReasonMap question form of a planning template: short, or long (templates 1 and 2)."""
    return "short" if template == "short" else "long"


def question_difficulty(question_transfer_count: int) -> str:
    """ReasonMap question difficulty: easy (direct), medium (one transfer), hard (two or more)."""
    return QUESTION_LEVELS[question_level(question_transfer_count)]


def _records(records: Iterable[EvalRecord | tuple[Any, str]]) -> Iterable[tuple[Any, str]]:
    for record in records:
        if isinstance(record, EvalRecord):
            yield record.ground_truth, record.response
        else:
            ground_truth, response = record
            yield ground_truth, response


def reasonmap_metrics(records: Iterable[EvalRecord | tuple[Any, str]], *, rules: Rules) -> ReasonMapReport:
    """ReasonMap metrics under ``rules`` for short questions, long ones (templates 1 and 2) and both together."""
    evals = [evaluate_planning(gt, response, rules=rules) for gt, response in _records(records)]
    return ReasonMapReport(
        short=planning_group([e for e in evals if e["template"] == "short"]),
        long=planning_group([e for e in evals if e["template"] != "short"]),
        overall=planning_group(evals),
    )


def reasonmap_plus_metrics(
    records: Iterable[EvalRecord | tuple[Any, str]], *, reading: PlusReading
) -> ReasonMapPlusReport:
    """ReasonMap-Plus accuracy and map-weighted accuracy overall, for TorF, for Counting and per question type."""
    evals = [evaluate_vqa(gt, response, reading=reading) for gt, response in _records(records)]
    summary = plus_summary(evals)
    return ReasonMapPlusReport(
        overall=summary["overall"],
        torf=summary["torf"],
        counting=summary["counting"],
        per_type={t: summary[t] for t in VQA_TYPES},
    )


# ----------------------------------------------------------------------------------------------------------------
# Validation during training
# ----------------------------------------------------------------------------------------------------------------

VALIDATION_PREFIX = "bench"


def _validation_keys() -> tuple[str, ...]:
    keys: list[str] = []
    for form in FORMS:
        for rules in RULE_SETS:
            keys += [f"{VALIDATION_PREFIX}_{rules}_{form}_{m}" for m in ("acc", "map_score", "wacc_num")]
        keys.append(f"{VALIDATION_PREFIX}_{form}_wacc_den")
    for reading in PLUS_READINGS:
        keys += [f"{VALIDATION_PREFIX}_{reading}_plus_acc", f"{VALIDATION_PREFIX}_{reading}_plus_wacc_num"]
    keys.append(f"{VALIDATION_PREFIX}_plus_wacc_den")
    return tuple(keys)


VALIDATION_KEYS: tuple[str, ...] = _validation_keys()


def validation_metrics(ground_truth: GroundTruth | str | Mapping[str, Any], response: Any) -> dict[str, float | None]:
    """The benchmark numbers of one validation sample, keyed so that verl's validation means are the numbers.

    The reward manager's validation hook returns these as ``reward_extra_info``. Always exactly the keys
    ``VALIDATION_KEYS``, each a float or None; never raises on a response (ValueError only for an invalid ground
    truth, a data bug). None means "not applicable to this sample": verl 0.9.1's ``process_validation_metrics``
    drops None before averaging (NaN it would not), so ``val-aux/<data_source>/<key>/mean@N`` is the mean over the
    samples the key applies to, the benchmark number itself. None is named ``acc``: verl fills a missing ``acc``
    with 0. The keys:

    - ``bench_<rules>_<form>_acc`` (rules released | fixed, form short | long): ReasonMap accuracy of a planning
      sample of that form, else None. ``bench_<rules>_<form>_map_score``: its map score (None also when the
      question has no reference routes).
    - Weighted accuracy is a ratio of means, which verl cannot average directly: ``bench_<rules>_<form>_wacc_num``
      is acc x appendix weight and ``bench_<form>_wacc_den`` the appendix weight (1 + 0.5 x (question level + map
      level)), so weighted accuracy = mean(num) / mean(den) (``weighted_accuracies`` computes it from verl's logged
      metrics). Under ``released`` the released code's own weight is 1, i.e. its weighted accuracy is ``acc``; the
      appendix-weighted released number is the one comparable with the papers' tables.
    - ``bench_<reading>_plus_acc`` (reading released | vlmevalkit): ReasonMap-Plus accuracy of a VQA
      sample, else None; ``bench_<reading>_plus_wacc_num`` / ``bench_plus_wacc_den``: acc x map weight
      (1.0 / 1.5 / 2.0) and the weight.

    Groups: verl groups by ``data_source`` (benchmark rows are "reasonmap" and "reasonmap_plus"), then by prompt;
    with several samples per prompt, mean@N is the mean over prompts of the per-prompt mean.

    >>> gt = GroundTruth(question_type="TorF1", city="demo", map_difficulty="hard", network={"L": ["A", "B"]}, answer=1)
    >>> metrics = validation_metrics(gt, "\\\\boxed{yes}")  # a VQA sample: its planning keys do not apply
    >>> metrics["bench_released_plus_acc"], metrics["bench_plus_wacc_den"], metrics["bench_fixed_short_acc"]
    (1.0, 2.0, None)
    """
    out: dict[str, float | None] = dict.fromkeys(VALIDATION_KEYS)
    ctx = question_context(ground_truth)
    gt = ctx.gt
    p = VALIDATION_PREFIX
    if gt.question_type == "planning":
        form = form_of(gt.template)
        appendix = reasonmap_eval_weight(gt.map_difficulty, gt.question_transfer_count)
        out[f"{p}_{form}_wacc_den"] = appendix
        for rules, e in evaluate_planning_all(gt, response).items():
            out[f"{p}_{rules}_{form}_acc"] = float(e["acc"])
            out[f"{p}_{rules}_{form}_map_score"] = None if e["map_score"] is None else float(e["map_score"])
            out[f"{p}_{rules}_{form}_wacc_num"] = e["acc"] * appendix
        return out
    weight = plus_eval_weight(gt.map_difficulty)
    out[f"{p}_plus_wacc_den"] = weight
    for reading in PLUS_READINGS:
        e = evaluate_vqa(gt, response, reading=reading)
        out[f"{p}_{reading}_plus_acc"] = float(e["acc"])
        out[f"{p}_{reading}_plus_wacc_num"] = e["acc"] * weight
    return out


def weighted_accuracies(val_metrics: Mapping[str, Any]) -> dict[str, float]:
    """Weighted accuracies from verl's logged validation means (``val-aux/<source>/<key>/mean@N``).

    Args:
        val_metrics: verl's validation metrics; keys other than ``..._wacc_num`` means are ignored.

    Returns:
        ``val-aux/<source>/<stem>_weighted_acc/mean@N`` = mean(num) / mean(den) for every ``<stem>_wacc_num`` with
        its ``..._wacc_den`` (the same source and statistic).

    >>> weighted_accuracies({"val-aux/reasonmap/bench_fixed_short_wacc_num/mean@1": 0.5,
    ...                      "val-aux/reasonmap/bench_short_wacc_den/mean@1": 2.0})
    {'val-aux/reasonmap/bench_fixed_short_weighted_acc/mean@1': 0.25}
    """
    out: dict[str, float] = {}
    for key, value in val_metrics.items():
        parts = key.split("/")
        if len(parts) != 4 or not parts[2].endswith("_wacc_num") or not parts[3].startswith("mean@"):
            continue
        section, source, name, stat = parts
        stem = name[: -len("_wacc_num")]  # bench_<rules>_<form> or bench_<reading>_plus
        prefix, _, rest = stem.partition("_")
        _, _, form = rest.partition("_")
        den = val_metrics.get(f"{section}/{source}/{prefix}_{form}_wacc_den/{stat}")
        if den:
            out[f"{section}/{source}/{stem}_weighted_acc/{stat}"] = float(value) / float(den)
    return out
