"""What ``python -m recipe.ablate`` reports: per-step curves of a run, the arms' table, plots and ``report.md``.

Curves come from two things verl writes during a run: its file logger (``metrics/*.jsonl``: the reward the arm
trained on, the all-equal GRPO groups, response lengths) and its rollout dumps (``trainer.rollout_data_dir``: every
sampled response with its ground truth). Every response is scored again with the ``fixed`` reward's components,
so accuracy, format, detail and the endpoint rate mean the same in every arm, whatever reward it trained on:

    reward           the arm's own training reward (mean per sample)
    planning_acc     correct routes among planning samples
    vqa_acc          right answers among VQA samples
    format           valid-format answers among all samples (``reward_fns.score.answer_format`` for planning)
    detail           mean fixed detail points of planning samples (0-10)
    endpoints        planning samples whose first departure and last arrival are the question's
    all_equal        fraction of GRPO groups whose rewards are all equal (no signal under a group baseline)
    response_length  mean response length in tokens
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CURVES = ("reward", "planning_acc", "vqa_acc", "format", "detail", "endpoints", "all_equal", "response_length")
CURVE_TITLES = {
    "reward": "training reward (the arm's own)",
    "planning_acc": "planning accuracy",
    "vqa_acc": "VQA accuracy",
    "format": "valid format rate",
    "detail": "detail points (planning, 0-10)",
    "endpoints": "endpoint rate (planning)",
    "all_equal": "all-equal GRPO groups",
    "response_length": "response length (tokens)",
}
LOGGED = {  # curve -> verl file-logger key
    "reward": "rewardmap/reward/score/mean",
    "all_equal": "rewardmap/groups/all_equal_frac",
    "response_length": "response_length/mean",
}
SAMPLE_KEYS = ("step", "uid", "score", "output")


def read_logged(metrics_dir: Path) -> dict[int, dict[str, Any]]:
    """verl's file-logger records of a run (``{"step": N, "data": {...}}`` lines), by step; a step's records are
    merged (a validation logs one of its own at the step it follows), a later one winning a key."""
    steps: dict[int, dict[str, Any]] = {}
    for path in sorted(metrics_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                steps.setdefault(int(record["step"]), {}).update(record.get("data") or {})
            except (ValueError, KeyError, TypeError):
                continue
    return steps


def score_sample(output: str, ground_truth: str) -> dict[str, float | None]:
    """The fixed reward's components of one response, plus whether its endpoints are the question's (planning)."""
    from reward_fns import compute_score
    from reward_fns.correctness import endpoints_match, tolerant_legs
    from reward_fns.question_context import question_context
    from reward_fns.route_parsing import parse_route_blocks

    result = compute_score("synthetic", output, ground_truth, mode="fixed")
    ctx = question_context(ground_truth)
    if ctx.gt.question_type != "planning":
        return {"planning": 0.0, "acc": result["acc"], "format": result["format"], "detail": None, "endpoints": None}
    legs = tolerant_legs(parse_route_blocks(output), ctx)
    return {
        "planning": 1.0,
        "acc": result["acc"],
        "format": result["format"],
        "detail": result["detail"],
        "endpoints": 1.0 if endpoints_match(legs, ctx) else 0.0,
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def rescored(dump: Path) -> dict[str, float | None]:
    """Per-step means of a rollout dump file (one JSON line per sample: output, gts, ...)."""
    planning: dict[str, list[float]] = {"acc": [], "detail": [], "endpoints": []}
    vqa_acc: list[float] = []
    formats: list[float] = []
    for line in dump.read_text().splitlines():
        record = json.loads(line)
        scores = score_sample(str(record.get("output") or ""), str(record.get("gts") or ""))
        formats.append(float(scores["format"] or 0.0))
        if scores["planning"]:
            for key in planning:
                planning[key].append(float(scores[key] or 0.0))
        else:
            vqa_acc.append(float(scores["acc"] or 0.0))
    return {
        "planning_acc": _mean(planning["acc"]),
        "vqa_acc": _mean(vqa_acc),
        "format": _mean(formats),
        "detail": _mean(planning["detail"]),
        "endpoints": _mean(planning["endpoints"]),
    }


def run_curves(run_dir: Path, rollouts_dir: Path) -> dict[int, dict[str, float | None]]:
    """Every curve of ``CURVES`` per training step of one run."""
    logged = read_logged(run_dir / "metrics")
    dumps = {int(p.stem): p for p in rollouts_dir.glob("*.jsonl") if p.stem.isdigit()}
    curves: dict[int, dict[str, float | None]] = {}
    for step in sorted(set(logged) | set(dumps)):
        values: dict[str, float | None] = dict.fromkeys(CURVES)
        for curve, key in LOGGED.items():
            value = logged.get(step, {}).get(key)
            values[curve] = float(value) if isinstance(value, (int, float)) else None
        if step in dumps:
            values.update(rescored(dumps[step]))
        curves[step] = values
    return curves


def keep_samples(dump: Path, out: Path, limit: int = 16) -> None:
    """The first ``limit`` samples of a rollout dump, without prompts and ground truths (a few KB)."""
    lines = dump.read_text().splitlines()[:limit]
    kept = [{key: json.loads(line).get(key) for key in SAMPLE_KEYS} for line in lines]
    out.write_text("".join(json.dumps(k, ensure_ascii=False) + "\n" for k in kept))


# -- aggregation ---------------------------------------------------------------------------------------------------


def window_mean(curves: Mapping[int, Mapping[str, float | None]], curve: str, steps: Sequence[int]) -> float | None:
    """Mean of ``curve`` over ``steps`` (steps without a value skipped)."""
    values = [curves[s][curve] for s in steps if s in curves and curves[s].get(curve) is not None]
    return _mean([float(v) for v in values if v is not None and math.isfinite(float(v))])


def first_last(curves: Mapping[int, Mapping[str, float | None]], curve: str, k: int) -> tuple[float | None, ...]:
    """(mean of the first k steps that have the curve, mean of the last k such steps), over the planning steps
    (those with planning samples) when the run has any, but for ``vqa_acc``: a curriculum arm's reward, format,
    all-equal groups and lengths then compare its planning stage with a planning-only arm's, not with its own
    perception steps."""
    steps = [s for s in sorted(curves) if curves[s].get(curve) is not None]
    planning = [s for s in steps if curves[s].get("endpoints") is not None]
    if planning and curve != "vqa_acc":
        steps = planning
    return window_mean(curves, curve, steps[:k]), window_mean(curves, curve, steps[-k:])


def spread(values: Sequence[float | None]) -> str:
    """ "mean [min, max]" over seeds (values that exist), or "-"."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return f"{present[0]:.3f}"
    return f"{statistics.fmean(present):.3f} [{min(present):.3f}, {max(present):.3f}]"


def arm_table(runs: Mapping[str, Mapping[int, Mapping[int, Mapping[str, Any]]]], k: int) -> list[str]:
    """Markdown rows: per arm and curve, first-k and last-k means over seeds with their range, and the change."""
    lines = [
        f"| arm | curve | first {k} steps | last {k} steps | change (last - first) | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for arm, seeds in runs.items():
        for curve in CURVES:
            firsts, lasts, changes = [], [], []
            for curves in seeds.values():
                first, last = first_last(curves, curve, k)
                firsts.append(first)
                lasts.append(last)
                changes.append(None if first is None or last is None else last - first)
            if all(v is None for v in firsts):
                continue
            lines.append(
                f"| {arm} | {curve} | {spread(firsts)} | {spread(lasts)} | {spread(changes)} | "
                f"{', '.join(str(s) for s in seeds)} |"
            )
    return lines


def plot_curves(
    runs: Mapping[str, Mapping[int, Mapping[int, Mapping[str, Any]]]], out: Path, *, smooth: int = 5
) -> Path:
    """One panel per curve, one colour per arm: each seed thin, their mean (moving average of ``smooth`` steps)
    thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    rows = math.ceil(len(CURVES) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, curve in enumerate(CURVES):
        axis = axes[index // columns][index % columns]
        for a, (arm, seeds) in enumerate(runs.items()):
            colour = colours[a % len(colours)]
            per_step: dict[int, list[float]] = {}
            for curves in seeds.values():
                steps = [s for s in sorted(curves) if curves[s].get(curve) is not None]
                values = [float(curves[s][curve]) for s in steps]
                if steps:
                    axis.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
                for s, v in zip(steps, values, strict=True):
                    per_step.setdefault(s, []).append(v)
            if per_step:
                steps = sorted(per_step)
                means = [statistics.fmean(per_step[s]) for s in steps]
                smoothed = [statistics.fmean(means[max(0, i - smooth + 1) : i + 1]) for i in range(len(means))]
                axis.plot(steps, smoothed, color=colour, linewidth=2.0, label=arm)
        axis.set_title(CURVE_TITLES[curve], fontsize=10)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=8)
        axis.xaxis.get_major_locator().set_params(integer=True)
    for index in range(len(CURVES), rows * columns):
        axes[index // columns][index % columns].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(out, dpi=80)
    plt.close(figure)
    return out
