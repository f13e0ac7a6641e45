"""``score``: responses + test files -> a results folder (per-question JSONL, summary.json, report.md, plots).

Every response is scored under every rule set: planning questions with the ``released`` and ``fixed`` ReasonMap
rules (``reward_fns.benchmark.evaluate_planning_all``), ReasonMap-Plus questions with the ``released`` and
``vlmevalkit`` readings (the ``fixed`` rules read ReasonMap-Plus as ``released``). The folder::

    scores.jsonl   one line per (question, sample): facts, response, parsed answer, metrics per rule set
    summary.json   the aggregates (``summarize``), coverage, inputs
    report.md      the summary as tables, beside the paper's Qwen2.5-VL-7B rows (``recipe.evaluate.report``)
    *.png          accuracy by difficulty, ReasonMap-Plus per type, training curves (``--training-log``)

Atomic and resumable: the folder is built in ``.<name>.partial`` beside it and put in place when complete
(``data_prep.atomic_dir``), so the results folder is the previous one or the new one, never half-written. Scores
are appended there as they are computed; an interrupted run resumes from them (and from an existing results
folder when its responses are unchanged) without rescoring.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_prep import atomic_dir
from recipe.evaluate.files import (
    EvalInputError,
    JsonlAppender,
    json_line,
    read_jsonl,
    write_json_atomic,
    write_text_atomic,
)
from recipe.evaluate.responses import Response, meta_path, read_responses
from recipe.evaluate.testset import Question, load_questions
from reward_fns.benchmark import (
    FORMS,
    PLUS_READINGS,
    QUESTION_LEVELS,
    RULE_SETS,
    evaluate_planning_all,
    evaluate_vqa,
    planning_group,
    plus_summary,
)
from reward_fns.benchmark_released import REASONMAP_TEST_CITIES, parse_sections
from reward_fns.ground_truth import MAP_DIFFICULTIES

SCORES_FILE = "scores.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
SCORING_VERSION = 1  # bump when a rule changes, so cached scores are recomputed
_APPEND_EVERY = 256


def score_response(question: Question, response: Response) -> dict[str, Any]:
    """The per-question record of one response: facts, response, parsed answer and every rule set's metrics."""
    record: dict[str, Any] = {**question.facts(), "sample": response.sample, "version": SCORING_VERSION}
    record["finish_reason"] = response.finish_reason
    record["response_tokens"] = response.response_tokens
    record["response"] = response.response
    if question.is_planning:
        sections = parse_sections(response.response, question.template)
        record["parsed"] = [{k: v for k, v in asdict(s).items() if k != "text"} for s in sections]
        record.update(evaluate_planning_all(question.ground_truth, response.response))
    else:
        readings = {r: evaluate_vqa(question.ground_truth, response.response, reading=r) for r in PLUS_READINGS}
        record["parsed"] = {"released": readings["released"]["answer"], "vlmevalkit": readings["vlmevalkit"]["answer"]}
        for reading, e in readings.items():
            record[reading] = {k: v for k, v in e.items() if k != "answer"}
    return record


# ----------------------------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------------------------


def _planning_sections(records: Sequence[Mapping[str, Any]], rules: str) -> dict[str, Any]:
    by_form = {form: [r for r in records if r["form"] == form] for form in FORMS}

    def groups(key: str, values: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {
            form: {v: planning_group([r[rules] for r in rows if r[key] == v]) for v in values}
            for form, rows in by_form.items()
        }

    cities = sorted({r["city"] for r in records})
    return {
        **{form: planning_group([r[rules] for r in rows]) for form, rows in by_form.items()},
        "overall": planning_group([r[rules] for r in records]),
        "by_map_difficulty": groups("map_difficulty", MAP_DIFFICULTIES),
        "by_question_difficulty": groups("question_difficulty", QUESTION_LEVELS),
        "by_city": groups("city", cities),
    }


def _pass_at_k(records: Sequence[Mapping[str, Any]], readings: Sequence[str]) -> dict[str, Any]:
    """Per rule set: the fraction of questions with at least one correct sample, and the sample count."""
    by_question: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        by_question[r["id"]].append(r)
    k = max((len(v) for v in by_question.values()), default=0)
    out: dict[str, Any] = {"k": k, "questions": len(by_question)}
    for rules in readings:
        hits = [any(s[rules]["acc"] for s in samples) for samples in by_question.values()]
        out[rules] = sum(hits) / len(hits) if hits else 0.0
    return out


def summarize(
    records: Sequence[Mapping[str, Any]], questions: Sequence[Question], *, samples: int, official_cities: bool
) -> dict[str, Any]:
    """The aggregates of scored records: ReasonMap (planning) and ReasonMap-Plus (VQA) sections, and coverage."""
    planning = [r for r in records if r["question_type"] == "planning"]
    excluded = 0
    if official_cities:
        kept = [r for r in planning if r["data_source"] != "reasonmap" or r["city"] in REASONMAP_TEST_CITIES]
        excluded, planning = len(planning) - len(kept), kept
    vqa = [r for r in records if r["question_type"] != "planning"]
    answered = {r["id"] for r in records}
    coverage: dict[str, Any] = {}
    for source in sorted({q.data_source for q in questions}):
        ids = [q.id for q in questions if q.data_source == source]
        got = sum(1 for r in records if r["data_source"] == source)
        coverage[source] = {
            "questions": len(ids),
            "answered": sum(1 for i in ids if i in answered),
            "responses": got,
            "expected_responses": len(ids) * samples,
        }
    summary: dict[str, Any] = {
        "scoring_version": SCORING_VERSION,
        "samples_per_question": samples,
        "coverage": coverage,
        "planning": {
            "n": len(planning),
            "data_sources": sorted({r["data_source"] for r in planning}),
            "excluded_outside_test_cities": excluded,
            **{rules: _planning_sections(planning, rules) for rules in RULE_SETS},
        },
        "plus": {
            "n": len(vqa),
            "data_sources": sorted({r["data_source"] for r in vqa}),
            **{reading: plus_summary([r[reading] for r in vqa]) for reading in PLUS_READINGS},
            "by_map_difficulty": {
                reading: {
                    d: plus_summary([r[reading] for r in vqa if r["map_difficulty"] == d])["overall"]
                    for d in MAP_DIFFICULTIES
                }
                for reading in PLUS_READINGS
            },
        },
    }
    if samples > 1:
        summary["pass_at_k"] = {
            "planning": _pass_at_k(planning, RULE_SETS),
            "plus": _pass_at_k(vqa, PLUS_READINGS),
        }
    return summary


# ----------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreRequest:
    responses: list[str]
    test_files: list[str]
    out: str
    official_cities: bool = False
    training_logs: list[str] | None = None
    plots: bool = True


def _partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _cached(folder: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Scored records already on disk in ``folder`` (a results or partial folder), by (id, sample)."""
    path = folder / SCORES_FILE
    if not path.is_file():
        return {}
    try:
        content = read_jsonl(path)
    except EvalInputError:
        return {}  # a damaged cache is recomputed, never trusted
    return {(r["id"], r["sample"]): r for _, r in content.records if r.get("version") == SCORING_VERSION}


def _still_valid(record: Mapping[str, Any], question: Question, response: Response) -> bool:
    """A cached score is reused only for the same response to the same question."""
    return record.get("response") == response.response and all(record.get(k) == v for k, v in question.facts().items())


def _model_info(responses: Sequence[str]) -> list[dict[str, Any]]:
    info = []
    for path in responses:
        meta = meta_path(path)
        entry: dict[str, Any] = {"responses": str(Path(path).resolve())}
        if meta.is_file():
            try:
                data = json.loads(meta.read_text(encoding="utf-8"))
                entry.update(model=data.get("model"), settings=data.get("settings"))
            except ValueError:
                pass
        info.append(entry)
    return info


def run_score(request: ScoreRequest, *, progress: bool = True) -> Path:
    """Score responses into the results folder ``request.out`` (module docstring); returns it."""
    from tqdm import tqdm

    questions = load_questions(request.test_files)
    by_id = {q.id: q for q in questions}
    responses = read_responses(request.responses, by_id)
    if not responses.by_key:
        raise EvalInputError(f"{', '.join(request.responses)}: no responses")
    out = Path(request.out)
    if out.exists() and not out.is_dir():
        raise EvalInputError(f"--out {out}: exists and is not a folder")
    atomic_dir.clean_stale(out, is_complete=is_results_folder)  # puts back a results folder a kill left aside
    partial = _partial_dir(out)
    cache = {**_cached(out), **_cached(partial)}
    partial.mkdir(parents=True, exist_ok=True)
    order = {q.id: i for i, q in enumerate(questions)}
    keys = sorted(responses.by_key, key=lambda k: (order[k[0]], k[1]))
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    rescored = 0
    with JsonlAppender(partial / SCORES_FILE) as log, tqdm(total=len(keys), desc="score", disable=not progress) as bar:
        pending: list[dict[str, Any]] = []
        try:
            for key in keys:
                response = responses.by_key[key]
                question = by_id[key[0]]
                record = cache.get(key)
                if record is None or not _still_valid(record, question, response):
                    record = score_response(question, response)
                    pending.append(record)
                    rescored += 1
                    if len(pending) >= _APPEND_EVERY:
                        log.write(pending)
                        pending = []
                records.append(record)
                bar.update(1)
        finally:  # interrupted or done: what is scored is kept for the next run
            log.write(pending)
    samples = max((k[1] for k in keys), default=0) + 1
    summary = summarize(records, questions, samples=samples, official_cities=request.official_cities)
    summary["inputs"] = {
        "responses": _model_info(request.responses),
        "test_files": [str(Path(f).resolve()) for f in request.test_files],
        "torn_response_lines_ignored": responses.torn_files,
        "official_cities": request.official_cities,
    }
    summary["timing"] = {
        "scored": rescored,
        "reused": len(records) - rescored,
        "seconds": time.perf_counter() - started,
    }
    write_text_atomic(partial / SCORES_FILE, "".join(json_line(r) for r in records))
    write_json_atomic(partial / SUMMARY_FILE, summary)
    from recipe.evaluate.report import render_report

    plots: list[str] = []
    if request.plots:
        from recipe.evaluate import plots as plotting

        plots = plotting.results_plots(summary, partial, training_logs=request.training_logs or [])
    write_text_atomic(partial / REPORT_FILE, render_report(summary, plots=plots))
    _put_in_place(partial, out)
    return out


def _put_in_place(partial: Path, out: Path) -> None:
    """Put the completed partial folder in place of ``out`` atomically (``data_prep.atomic_dir``).

    The partial folder first takes a staging name of this process, so a kill from here on leaves the old results
    folder or the new one, and never a finished partial folder that the next run would append to.
    """
    staging = atomic_dir.sibling_path(out, atomic_dir.STAGING)
    os.replace(partial, staging)
    try:
        atomic_dir.swap_in(staging, out)
    except BaseException:
        os.replace(staging, partial)  # the scores stay for the next run
        raise


def is_results_folder(folder: Path) -> bool:
    """Whether ``folder`` is a whole results folder (its report, written last, exists)."""
    return (folder / REPORT_FILE).is_file()


def load_summary(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The summary of a results folder; EvalInputError when ``folder`` is not one."""
    path = Path(folder) / SUMMARY_FILE
    if not path.is_file():
        raise EvalInputError(f"{folder}: not a results folder (no {SUMMARY_FILE}; run `score` first)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise EvalInputError(f"{path}: not JSON ({err})") from err
    if not isinstance(summary, dict) or "planning" not in summary or "plus" not in summary:
        raise EvalInputError(f"{path}: not a summary written by `score`")
    return summary
