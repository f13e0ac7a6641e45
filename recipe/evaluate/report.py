"""``report.md`` of a results folder: the summary as Markdown tables, both rule sets side by side, the paper's rows.

Accuracies are printed in percent (two decimals, as the papers print them); map scores in points (max 20 short,
40 long). A group without questions prints "-".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from recipe.evaluate.paper import PAPER_RULES, QWEN25_VL_7B_ROWS
from reward_fns.benchmark import FORMS, PLUS_READING_OF_RULES, PLUS_READINGS, QUESTION_LEVELS, RULE_SETS
from reward_fns.ground_truth import MAP_DIFFICULTIES, VQA_TYPES

RULES_NOTE = (
    "Rule sets: `released` is what the released benchmark code computes, bit for bit (fscdc/ReasonMap `main.py`, "
    "`main_plus.py`; its eight documented slips included): the rules the published numbers were produced with. "
    "`fixed` corrects exactly those slips (reference line names mapped onto the network, arrival suffixes, "
    "template 2 in every city, difficulty weights, station normalisation, missing via-count fields, via-list "
    "splitting, Chinese line numbers) and nothing else. ReasonMap-Plus has no slip: `fixed` reads answers as "
    "`released` (`main_plus.py`), so its ReasonMap-Plus number is the `released` one; `vlmevalkit` is VLMEvalKit's "
    "`ReasonMap_Plus` reading."
)
WEIGHT_NOTE = (
    "ReasonMap weighted accuracy uses the paper appendix's weights 1 + 0.5 x (question level + map level) "
    "('appendix'); the released code's own weight is the constant 1, so its 'weighted' accuracy is the plain "
    "accuracy ('rules' column under `released`). ReasonMap-Plus weights maps 1.0 / 1.5 / 2.0 (easy / middle / hard)."
)


def pct(value: float | None, n: int = 1) -> str:
    return "-" if value is None or n == 0 else f"{100 * value:.2f}"


def pts(value: float | None, n: int = 1) -> str:
    return "-" if value is None or n == 0 else f"{value:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def headline(summary: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """The numbers comparable with the paper's table, per rule set (fractions; None when not measured)."""
    planning, plus = summary["planning"], summary["plus"]
    out: dict[str, dict[str, float | None]] = {}
    for rules in (*RULE_SETS, "vlmevalkit"):
        row: dict[str, float | None] = {}
        for form in FORMS:
            group = planning.get(rules, {}).get(form) if rules in RULE_SETS else None
            row[f"reasonmap_{form}"] = group["appendix_weighted_accuracy"] if group and group["n"] else None
        reading = PLUS_READING_OF_RULES[rules] if rules in RULE_SETS else rules
        group = plus.get(reading, {}).get("overall")
        row["reasonmap_plus"] = group["weighted_accuracy"] if group and group["n"] else None
        out[rules] = row
    return out


def _coverage_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    for source, c in summary["coverage"].items():
        lines.append(
            f"- `{source}`: {c['answered']} / {c['questions']} questions answered "
            f"({c['responses']} / {c['expected_responses']} responses)"
        )
    excluded = summary["planning"].get("excluded_outside_test_cities", 0)
    if excluded:
        lines.append(f"- {excluded} ReasonMap responses outside the 11 test cities left out (`--official-cities`)")
    return lines


def _inputs_lines(summary: Mapping[str, Any]) -> list[str]:
    inputs = summary.get("inputs", {})
    lines = []
    for entry in inputs.get("responses", []):
        model = entry.get("model") or "unknown (no .meta.json beside the responses)"
        settings = entry.get("settings") or {}
        shown = ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None)
        lines.append(f"- model `{model}`" + (f" ({shown})" if shown else "") + f": `{entry['responses']}`")
    for path in inputs.get("test_files", []):
        lines.append(f"- test file `{path}`")
    for path in inputs.get("torn_response_lines_ignored", []):
        lines.append(f"- a torn last line of `{path}` (an interrupted `generate`) was ignored")
    return lines


def _headline_lines(summary: Mapping[str, Any]) -> list[str]:
    rows = []
    for rules, values in headline(summary).items():
        rows.append(
            [
                "this run",
                f"`{rules}`",
                pct(values["reasonmap_short"]),
                pct(values["reasonmap_long"]),
                pct(values["reasonmap_plus"]),
            ]
        )
    for paper in QWEN25_VL_7B_ROWS:
        rows.append(
            [
                f"paper, Qwen2.5-VL-7B: {paper.name}",
                f"`{PAPER_RULES}` (published)",
                f"{paper.reasonmap_short:.2f}",
                f"{paper.reasonmap_long:.2f}",
                f"{paper.reasonmap_plus:.2f}",
            ]
        )
    header = ["", "rules", "ReasonMap short", "ReasonMap long", "ReasonMap-Plus"]
    return ["## Weighted accuracy (%), beside the paper", "", *_table(header, rows), WEIGHT_NOTE, ""]


def _planning_lines(planning: Mapping[str, Any]) -> list[str]:
    sources = ", ".join(f"`{s}`" for s in planning["data_sources"]) or "none"
    lines = [f"## ReasonMap (route planning): {planning['n']} responses ({sources})", ""]
    if not planning["n"]:
        return lines + ["No planning questions were scored.", ""]
    rows = []
    for rules in RULE_SETS:
        for form in (*FORMS, "overall"):
            g = planning[rules][form]
            n = g["n"]
            rows.append(
                [
                    f"`{rules}`",
                    form,
                    str(n),
                    pct(g["accuracy"], n),
                    pct(g["weighted_accuracy"], n),
                    pct(g["appendix_weighted_accuracy"], n),
                    pts(g["map_score"], g["n_map_scored"]),
                    pct(g["map_score_fraction"], g["n_map_scored"]),
                    pts(g["via_count_points"], g["n_map_scored"]) if form != "short" else "-",
                    pts(g["via_stops_points"], g["n_map_scored"]) if form != "short" else "-",
                ]
            )
    header = [
        "rules",
        "form",
        "n",
        "accuracy",
        "weighted (rules)",
        "weighted (appendix)",
        "map score",
        "map score / max",
        "via-count pts",
        "via-stop pts",
    ]
    lines += _table(header, rows)
    lines.append("Map score: mean over questions with reference routes (max 20 short, 40 long).")
    lines.append("")
    for key, title, values in (
        ("by_map_difficulty", "By map difficulty", MAP_DIFFICULTIES),
        ("by_question_difficulty", "By question difficulty (transfers 0 / 1 / 2+)", QUESTION_LEVELS),
    ):
        rows = []
        for form in FORMS:
            for rules in RULE_SETS:
                groups = planning[rules][key][form]
                rows.append(
                    [form, f"`{rules}`"]
                    + [f"{pct(groups[v]['accuracy'], groups[v]['n'])} (n={groups[v]['n']})" for v in values]
                )
        lines += [f"### {title}: accuracy (%)", "", *_table(["form", "rules", *values], rows)]
    cities = sorted(planning["released"]["by_city"]["short"])
    rows = []
    for city in cities:
        cells = [city]
        for form in FORMS:
            for rules in RULE_SETS:
                g = planning[rules]["by_city"][form][city]
                cells.append(pct(g["accuracy"], g["n"]))
        n = sum(planning["released"]["by_city"][form][city]["n"] for form in FORMS)
        rows.append([*cells, str(n)])
    header = ["city", *(f"{form} `{rules}`" for form in FORMS for rules in RULE_SETS), "n"]
    lines += ["### By city: accuracy (%)", "", *_table(header, rows)]
    return lines


def _plus_lines(plus: Mapping[str, Any]) -> list[str]:
    sources = ", ".join(f"`{s}`" for s in plus["data_sources"]) or "none"
    lines = [f"## ReasonMap-Plus (perception): {plus['n']} responses ({sources})", ""]
    if not plus["n"]:
        return lines + ["No ReasonMap-Plus questions were scored.", ""]
    groups = ("overall", "counting", "torf", "torf1", "torf2")
    rows = []
    for reading in PLUS_READINGS:
        cells = [f"`{reading}`"]
        for name in groups:
            g = plus[reading][name]
            cells += [pct(g["accuracy"], g["n"]), pct(g["weighted_accuracy"], g["n"])]
        rows.append(cells)
    header = ["reading"] + [
        f"{name} {kind}" for name in ("overall", "Counting", "TorF", "TorF1", "TorF2") for kind in ("acc", "weighted")
    ]
    lines += _table(header, rows)
    rows = []
    for qtype in VQA_TYPES:
        cells = [qtype, str(plus["released"][qtype]["n"])]
        for reading in PLUS_READINGS:
            g = plus[reading][qtype]
            cells += [pct(g["accuracy"], g["n"]), pct(g["weighted_accuracy"], g["n"])]
        rows.append(cells)
    header = ["type", "n"] + [f"`{r}` {kind}" for r in PLUS_READINGS for kind in ("acc", "weighted")]
    lines += ["### Per question type (%)", "", *_table(header, rows)]
    rows = []
    for reading in PLUS_READINGS:
        by = plus["by_map_difficulty"][reading]
        rows.append(
            [f"`{reading}`"] + [f"{pct(by[d]['accuracy'], by[d]['n'])} (n={by[d]['n']})" for d in MAP_DIFFICULTIES]
        )
    lines += ["### By map difficulty: accuracy (%)", "", *_table(["reading", *MAP_DIFFICULTIES], rows)]
    return lines


def _pass_lines(summary: Mapping[str, Any]) -> list[str]:
    passes = summary.get("pass_at_k")
    if not passes:
        return []
    rows = []
    for section, readings in (("planning", RULE_SETS), ("plus", PLUS_READINGS)):
        p = passes[section]
        if p["questions"]:
            rows += [[section, f"`{r}`", str(p["k"]), str(p["questions"]), pct(p[r])] for r in readings]
    return ["## pass@k (%)", "", *_table(["questions", "rules", "k", "n", "pass@k"], rows)]


def render_report(summary: Mapping[str, Any], *, plots: Sequence[str] = ()) -> str:
    """The Markdown report of a summary (``recipe.evaluate.scoring.summarize``)."""
    lines = ["# Evaluation report", "", *_inputs_lines(summary), "", "Coverage:", "", *_coverage_lines(summary), ""]
    lines += [RULES_NOTE, ""]
    lines += _headline_lines(summary)
    lines += _planning_lines(summary["planning"])
    lines += _plus_lines(summary["plus"])
    lines += _pass_lines(summary)
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    return "\n".join(lines).rstrip() + "\n"
