"""Prepared test files (verl Parquet written by ``data_prep``) as evaluation questions, read without their images.

A question's id is its row's ``extra_info.source_id`` (unique across the official and synthetic sources: source,
record and form), or ``<file name>:<index>`` when that is empty. Loading checks that every file is a prepared
file (the row columns, a valid ground truth per row) and that ids are unique across all files given; any
failure raises EvalInputError naming the file and row. ``iter_rows`` streams full rows (with images) for
generation, one Parquet batch at a time, so a benchmark with thousands of embedded maps never sits in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.image_files import resolve_row_images
from data_prep.images import ImageError
from recipe.evaluate.files import EvalInputError
from reward_fns.benchmark import form_of, question_difficulty
from reward_fns.ground_truth import GroundTruth

ROW_COLUMNS = ("data_source", "prompt", "images", "reward_model", "extra_info")
SCORE_COLUMNS = ("data_source", "reward_model", "extra_info")
_BATCH_ROWS = 32


@dataclass(frozen=True)
class Question:
    """One test question: where it is, what it is, and its ground truth (JSON, as the row carries it)."""

    id: str
    file: str
    row: int
    data_source: str
    question_type: str
    template: str
    city: str
    country: str
    map_difficulty: str
    question_transfer_count: int
    ground_truth: str

    @property
    def is_planning(self) -> bool:
        return self.question_type == "planning"

    @property
    def form(self) -> str:
        """short | long for planning, vqa otherwise."""
        return form_of(self.template) if self.is_planning else "vqa"

    @property
    def question_difficulty(self) -> str:
        return question_difficulty(self.question_transfer_count)

    def facts(self) -> dict[str, Any]:
        """The plain facts the per-question results record."""
        return {
            "id": self.id,
            "data_source": self.data_source,
            "question_type": self.question_type,
            "form": self.form,
            "template": self.template,
            "city": self.city,
            "country": self.country,
            "map_difficulty": self.map_difficulty,
            "question_difficulty": self.question_difficulty if self.is_planning else None,
        }


def _open(path: Path) -> pq.ParquetFile:
    if not path.is_file():
        raise EvalInputError(f"{path}: test file not found")
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise EvalInputError(f"{path}: not a Parquet file ({err})") from err
    missing = [c for c in ROW_COLUMNS if c not in parquet.schema_arrow.names]
    if missing:
        raise EvalInputError(f"{path}: not a prepared test file (no column {missing[0]!r}; see data_prep.schema)")
    return parquet


def iter_rows(path: str | os.PathLike[str], columns: Sequence[str] = ROW_COLUMNS) -> Iterator[tuple[int, dict]]:
    """(row index, row dict) of a prepared file, streamed in batches of ``columns``.

    Stored image paths (``images/<sha256>.png``, see ``data_prep.image_files``) come back absolute, resolved
    against the file's folder, so every reader opens them wherever the prepared folder was copied.
    """
    parquet = _open(Path(path))
    folder = [Path(path).resolve().parent]
    index = 0
    for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=list(columns)):
        for row in batch.to_pylist():
            if "images" in row:
                try:
                    row = resolve_row_images(row, folder, where=f"{path} row {index}")
                except ImageError as err:
                    raise EvalInputError(str(err)) from err
            yield index, row
            index += 1


def _question(path: Path, index: int, row: dict[str, Any]) -> Question:
    where = f"{path} row {index}"
    reward_model = row.get("reward_model") or {}
    text = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
    try:
        gt = GroundTruth.from_json(text)
    except (TypeError, ValueError) as err:
        raise EvalInputError(f"{where}: field 'reward_model.ground_truth': {err}") from err
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    source_id = extra.get("source_id") if isinstance(extra.get("source_id"), str) else ""
    return Question(
        id=source_id or f"{path.name}:{index}",
        file=str(path),
        row=index,
        data_source=str(row.get("data_source") or ""),
        question_type=gt.question_type,
        template=gt.template,
        city=gt.city,
        country=gt.country,
        map_difficulty=gt.map_difficulty,
        question_transfer_count=int(gt.question_transfer_count),
        ground_truth=text,
    )


def load_questions(paths: Sequence[str | os.PathLike[str]]) -> list[Question]:
    """Every question of the given prepared files, in file and row order (module docstring for the checks)."""
    if not paths:
        raise EvalInputError("no test file given (--test)")
    questions: list[Question] = []
    seen: dict[str, Question] = {}
    for raw in paths:
        path = Path(raw)
        count = 0
        for index, row in iter_rows(path, SCORE_COLUMNS):
            question = _question(path, index, row)
            if question.id in seen:
                first = seen[question.id]
                raise EvalInputError(
                    f"{path} row {index}: duplicate question id {question.id!r} (also {first.file} row {first.row})"
                )
            seen[question.id] = question
            questions.append(question)
            count += 1
        if count == 0:
            raise EvalInputError(f"{path}: no rows")
    return questions
