"""``compare``: several results folders (base vs trained, ablations) as one table and plots.

Writes ``compare.md`` (the headline weighted accuracies and the plain accuracies and map scores of every folder,
per rule set), ``compare.json`` (the same numbers), ``comparison.png`` and, with training logs,
``training_comparison.png``. The output folder is built beside itself and put in place atomically
(``data_prep.atomic_dir.replacing``): an interrupted or killed ``compare`` leaves the previous output or the new one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from data_prep import atomic_dir
from recipe.evaluate import plots
from recipe.evaluate.files import EvalInputError, write_json_atomic, write_text_atomic
from recipe.evaluate.paper import PAPER_RULES, QWEN25_VL_7B_ROWS
from recipe.evaluate.report import WEIGHT_NOTE, headline, pct, pts
from recipe.evaluate.scoring import load_summary
from recipe.evaluate.training_logs import read_training_log
from reward_fns.benchmark import FORMS, PLUS_READING_OF_RULES, PLUS_READINGS, RULE_SETS

COMPARE_REPORT = "compare.md"


def _names(folders: Sequence[str], names: Sequence[str] | None) -> list[str]:
    if names:
        if len(names) != len(folders):
            raise EvalInputError(f"--names: {len(names)} names for {len(folders)} folders")
        return list(names)
    out: list[str] = []
    for folder in folders:
        name = Path(folder).resolve().name or str(folder)
        base, k = name, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out.append(name)
    return out


def _details(summary: Mapping[str, Any]) -> dict[str, Any]:
    planning, plus = summary["planning"], summary["plus"]
    out: dict[str, Any] = {}
    for rules in RULE_SETS:
        for form in FORMS:
            g = planning[rules][form]
            out[f"{rules}/{form}/accuracy"] = g["accuracy"] if g["n"] else None
            out[f"{rules}/{form}/map_score"] = g["map_score"] if g["n_map_scored"] else None
    for reading in PLUS_READINGS:
        g = plus[reading]["overall"]
        out[f"{reading}/plus/accuracy"] = g["accuracy"] if g["n"] else None
    return out


def _training_logs(specs: Sequence[str]) -> dict[str, Any]:
    logs = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        logs[name] = read_training_log(path)
    return logs


def render_compare(names: Sequence[str], summaries: Sequence[Mapping[str, Any]], image_names: Sequence[str]) -> str:
    lines = ["# Comparison", ""]
    header = ["run", "rules", "ReasonMap short", "ReasonMap long", "ReasonMap-Plus"]
    rows = []
    for name, summary in zip(names, summaries, strict=True):
        for rules, values in headline(summary).items():
            rows.append(
                [name, f"`{rules}`", *(pct(values[k]) for k in ("reasonmap_short", "reasonmap_long", "reasonmap_plus"))]
            )
    for paper in QWEN25_VL_7B_ROWS:
        rows.append(
            [
                f"paper: {paper.name}",
                f"`{PAPER_RULES}` (published)",
                f"{paper.reasonmap_short:.2f}",
                f"{paper.reasonmap_long:.2f}",
                f"{paper.reasonmap_plus:.2f}",
            ]
        )
    lines += ["## Weighted accuracy (%)", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows] + ["", WEIGHT_NOTE, ""]
    header = ["run", "rules", "short acc", "short map", "long acc", "long map", "Plus acc"]
    rows = []
    for name, summary in zip(names, summaries, strict=True):
        d = _details(summary)
        for rules in RULE_SETS:
            rows.append(
                [
                    name,
                    f"`{rules}`",
                    pct(d[f"{rules}/short/accuracy"]),
                    pts(d[f"{rules}/short/map_score"]),
                    pct(d[f"{rules}/long/accuracy"]),
                    pts(d[f"{rules}/long/map_score"]),
                    pct(d[f"{PLUS_READING_OF_RULES[rules]}/plus/accuracy"]),
                ]
            )
        rows.append([name, "`vlmevalkit`", "-", "-", "-", "-", pct(d["vlmevalkit/plus/accuracy"])])
    lines += [
        "## Plain accuracy (%) and map score (points)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    coverage = []
    for name, summary in zip(names, summaries, strict=True):
        parts = [f"{s}: {c['answered']}/{c['questions']}" for s, c in summary["coverage"].items()]
        coverage.append(f"- {name}: " + ", ".join(parts))
    lines += ["## Coverage (questions answered / expected)", "", *coverage, ""]
    if len({json.dumps(s["coverage"], sort_keys=True) for s in summaries}) > 1:
        lines += ["**The runs do not cover the same questions: their numbers are not directly comparable.**", ""]
    if image_names:
        lines += ["## Plots", ""] + [f"![{n}]({n})" for n in image_names] + [""]
    return "\n".join(lines)


def run_compare(
    folders: Sequence[str], out: str, *, names: Sequence[str] | None = None, training_logs: Sequence[str] = ()
) -> Path:
    if len(folders) < 2:
        raise EvalInputError("compare needs two or more results folders")
    summaries = [load_summary(f) for f in folders]
    run_names = _names(folders, names)
    logs = _training_logs(training_logs)
    target = Path(out)
    with atomic_dir.replacing(target, is_complete=is_compare_folder) as tmp:
        headlines = {name: headline(s) for name, s in zip(run_names, summaries, strict=True)}
        images = [plots.comparison(headlines, tmp / "comparison.png")]
        if logs:
            images.append(plots.training_comparison(logs, tmp / "training_comparison.png"))
        data = {
            "runs": [
                {"name": n, "folder": str(Path(f).resolve()), "headline": headlines[n], "details": _details(s)}
                for n, f, s in zip(run_names, folders, summaries, strict=True)
            ]
        }
        write_json_atomic(tmp / "compare.json", data)
        write_text_atomic(tmp / COMPARE_REPORT, render_compare(run_names, summaries, images))
    return target


def is_compare_folder(folder: Path) -> bool:
    """Whether ``folder`` is a whole ``compare`` output (its report, written last, exists)."""
    return (folder / COMPARE_REPORT).is_file()
