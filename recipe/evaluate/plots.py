"""The evaluation's PNG plots (matplotlib, headless), each written atomically.

- ``accuracy_by_difficulty.png``: ReasonMap accuracy by map and by question difficulty, short and long, both rules;
- ``plus_per_type.png``: ReasonMap-Plus accuracy overall, Counting, TorF and per type, per reading;
- ``training_curves.png``: a run's reward components and validation metrics over training steps;
- ``comparison.png`` (``compare``): the headline weighted accuracies of several results folders side by side.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from recipe.evaluate.files import atomic_output  # noqa: E402
from recipe.evaluate.training_logs import Series, read_training_log, reward_series, validation_series  # noqa: E402
from reward_fns.benchmark import FORMS, QUESTION_LEVELS, RULE_SETS  # noqa: E402
from reward_fns.ground_truth import MAP_DIFFICULTIES, VQA_TYPES  # noqa: E402

COLORS = {"released": "#4C72B0", "fixed": "#DD8452", "vlmevalkit": "#55A868"}
DPI = 110


def _save(fig: Any, path: Path) -> str:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
    return path.name


def _bars(ax: Any, labels: Sequence[str], series: Mapping[str, Sequence[tuple[float | None, int]]]) -> None:
    """Grouped bars (percent), one group per label, one bar per series; n printed under empty groups."""
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(labels))]
        heights = [100 * v if v is not None and n else 0.0 for v, n in values]
        bars = ax.bar(xs, heights, width, label=name, color=COLORS.get(name))
        for bar, (v, n) in zip(bars, values, strict=True):
            text = f"{100 * v:.0f}" if v is not None and n else "n=0"
            ax.annotate(
                text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7
            )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.grid(axis="y", alpha=0.3)


def accuracy_by_difficulty(summary: Mapping[str, Any], path: Path) -> str:
    planning = summary["planning"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), squeeze=False, layout="constrained")
    for row, form in enumerate(FORMS):
        for col, (key, values, title) in enumerate(
            (
                ("by_map_difficulty", MAP_DIFFICULTIES, "map difficulty"),
                ("by_question_difficulty", QUESTION_LEVELS, "question difficulty"),
            )
        ):
            ax = axes[row][col]
            series = {
                rules: [(planning[rules][key][form][v]["accuracy"], planning[rules][key][form][v]["n"]) for v in values]
                for rules in RULE_SETS
            }
            counts = [planning["released"][key][form][v]["n"] for v in values]
            _bars(ax, [f"{v}\n(n={n})" for v, n in zip(values, counts, strict=True)], series)
            ax.set_title(f"ReasonMap {form}: accuracy by {title}")
            ax.legend(fontsize=8)
    fig.suptitle(f"ReasonMap accuracy ({planning['n']} planning responses)")
    return _save(fig, path)


def plus_per_type(summary: Mapping[str, Any], path: Path) -> str:
    plus = summary["plus"]
    groups = ["overall", "counting", "torf", *VQA_TYPES]
    labels = ["overall", "Counting", "TorF", *VQA_TYPES]
    fig, ax = plt.subplots(figsize=(11, 4.5), layout="constrained")
    series = {
        reading: [(plus[reading][g]["accuracy"], plus[reading][g]["n"]) for g in groups]
        for reading in ("released", "vlmevalkit")
    }
    counts = [plus["released"][g]["n"] for g in groups]
    _bars(ax, [f"{label}\n(n={n})" for label, n in zip(labels, counts, strict=True)], series)
    ax.set_title(f"ReasonMap-Plus accuracy by type ({plus['n']} responses; `fixed` reads as `released`)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _short_name(name: str) -> str:
    for prefix in ("rewardmap/reward/", "val-aux/", "val-core/"):
        name = name.removeprefix(prefix)
    return name.removesuffix("/mean")


def training_curves(series: Series, path: Path, *, title: str = "") -> str:
    rewards, validation = reward_series(series), validation_series(series)
    if not rewards and not validation:
        raise ValueError("no reward or validation metrics in the training log")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), squeeze=False, layout="constrained")
    for ax, chosen, what in (
        (axes[0][0], rewards, "training reward components"),
        (axes[0][1], validation, "validation"),
    ):
        for name, points in chosen.items():
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=_short_name(name))
        ax.set_title(what if chosen else f"{what}: none logged")
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.grid(alpha=0.3)
        if chosen:
            ax.legend(fontsize=7)
    fig.suptitle(title or "training run")
    return _save(fig, path)


def results_plots(
    summary: Mapping[str, Any], folder: Path, *, training_logs: Sequence[str | os.PathLike[str]]
) -> list[str]:
    """Every plot of a results folder; returns the file names written."""
    written = []
    if summary["planning"]["n"]:
        written.append(accuracy_by_difficulty(summary, folder / "accuracy_by_difficulty.png"))
    if summary["plus"]["n"]:
        written.append(plus_per_type(summary, folder / "plus_per_type.png"))
    for index, log in enumerate(training_logs):
        name = "training_curves.png" if len(training_logs) == 1 else f"training_curves_{index}.png"
        written.append(training_curves(read_training_log(log), folder / name, title=str(log)))
    return written


HEADLINE_COLUMNS = (
    ("reasonmap_short", "ReasonMap short"),
    ("reasonmap_long", "ReasonMap long"),
    ("reasonmap_plus", "ReasonMap-Plus"),
)


def comparison(headlines: Mapping[str, Mapping[str, Mapping[str, float | None]]], path: Path) -> str:
    """Grouped bars: for each rule set a panel, for each headline number a group, one bar per run."""
    rule_sets = ("released", "fixed")
    fig, axes = plt.subplots(1, len(rule_sets), figsize=(12, 4.5), squeeze=False, layout="constrained")
    for ax, rules in zip(axes[0], rule_sets, strict=True):
        series = {
            run: [(values[rules][key], 1 if values[rules][key] is not None else 0) for key, _ in HEADLINE_COLUMNS]
            for run, values in headlines.items()
        }
        width = 0.8 / max(1, len(series))
        for k, (run, values) in enumerate(series.items()):
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(HEADLINE_COLUMNS))]
            heights = [100 * v if v is not None else 0.0 for v, _ in values]
            bars = ax.bar(xs, heights, width, label=run)
            for bar, (v, _) in zip(bars, values, strict=True):
                text = f"{100 * v:.1f}" if v is not None else "-"
                ax.annotate(
                    text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7
                )
        ax.set_xticks(range(len(HEADLINE_COLUMNS)), [label for _, label in HEADLINE_COLUMNS])
        ax.set_ylim(0, 105)
        ax.set_ylabel("weighted accuracy (%)")
        ax.set_title(f"`{rules}` rules")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Comparison of results folders")
    return _save(fig, path)


def training_comparison(logs: Mapping[str, Series], path: Path) -> str:
    """Validation metrics of several runs over training steps, one panel per metric (up to six)."""
    names = sorted({name for series in logs.values() for name in validation_series(series)})[:6]
    if not names:
        raise ValueError("no validation metrics in the training logs")
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False, layout="constrained")
    for ax, name in zip((a for row in axes for a in row), names, strict=False):
        for run, series in logs.items():
            points = series.get(name)
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker="o", markersize=3, label=run)
        ax.set_title(_short_name(name), fontsize=9)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(a for row in axes for a in row)[len(names) :]:
        ax.set_visible(False)
    fig.suptitle("Validation metrics over training")
    return _save(fig, path)
