"""The responses JSONL that ``generate`` appends and ``score`` reads: one line per (question id, sample).

Line: ``{"id": str, "sample": int, "response": str, "finish_reason": str | null, "response_tokens": int | null}``.
Beside it, ``<file>.meta.json`` records the model and generation settings (written before the first line), so a
resumed run refuses to mix settings and ``score`` can name the model. Reading checks every complete line: not JSON,
missing fields, an id that is no question of the test files, or a repeated (id, sample) stop with the file and
line named; a torn last line (a killed writer) is reported as such and ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipe.evaluate.files import EvalInputError, read_jsonl

META_SUFFIX = ".meta.json"


def meta_path(responses: str | os.PathLike[str]) -> Path:
    path = Path(responses)
    return path.with_name(path.name + META_SUFFIX)


@dataclass(frozen=True)
class Response:
    """One generated response (``sample`` numbers the samples of a question from 0)."""

    id: str
    sample: int
    response: str
    finish_reason: str | None = None
    response_tokens: int | None = None
    where: str = ""  # file:line, for messages

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sample": self.sample,
            "response": self.response,
            "finish_reason": self.finish_reason,
            "response_tokens": self.response_tokens,
        }


@dataclass
class ResponseSet:
    """Responses keyed by (id, sample), in file order, and the files they came from (torn tails noted)."""

    by_key: dict[tuple[str, int], Response] = field(default_factory=dict)
    torn_files: list[str] = field(default_factory=list)


def read_responses(paths: list[str | os.PathLike[str]], known_ids: Mapping[str, Any] | None) -> ResponseSet:
    """Read responses files (see module docstring); ``known_ids`` None skips the unknown-id check."""
    out = ResponseSet()
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise EvalInputError(f"{path}: responses file not found")
        content = read_jsonl(path)
        if content.torn:
            out.torn_files.append(str(path))
        for number, value in content.records:
            where = f"{path}:{number}"
            qid, sample, text = value.get("id"), value.get("sample", 0), value.get("response")
            if not isinstance(qid, str) or not qid:
                raise EvalInputError(f"{where}: field 'id': missing or not text")
            if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
                raise EvalInputError(f"{where}: field 'sample': {sample!r} is not a non-negative integer")
            if not isinstance(text, str):
                raise EvalInputError(f"{where}: field 'response': missing or not text")
            if known_ids is not None and qid not in known_ids:
                raise EvalInputError(f"{where}: unknown question id {qid!r} (not in the test files)")
            key = (qid, sample)
            if key in out.by_key:
                first = out.by_key[key].where
                raise EvalInputError(
                    f"{where}: duplicate response for question {qid!r} sample {sample} (first {first})"
                )
            tokens = value.get("response_tokens")
            out.by_key[key] = Response(
                id=qid,
                sample=sample,
                response=text,
                finish_reason=value.get("finish_reason") if isinstance(value.get("finish_reason"), str) else None,
                response_tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
                where=where,
            )
    return out
