"""Crash-safe files for the evaluation: atomic whole-file writes, fsync'd JSONL appends, strict JSONL reading.

A whole file (summary, report, plot, TSV) is written to a temporary sibling and renamed into place, so a reader
never sees half of it. A JSONL log (responses, per-question scores) is appended one complete line per record and
flushed to disk per batch; a process killed mid-write leaves at most a torn last line without its newline, which
``read_jsonl`` reports as ``torn`` (never as bad input) and ``repair_torn_tail`` cuts off before appending again.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


class EvalInputError(ValueError):
    """Bad input to the evaluation (a file, a line, an option); the message names the file and line or field."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp's 0600 would hide results from other users


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], value: Any) -> Path:
    return write_text_atomic(path, json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write to (by any library); renamed onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def json_line(record: Mapping[str, Any]) -> str:
    """One JSONL line: compact JSON (newlines inside strings are escaped, so only the end has one) plus newline."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


@dataclass
class JsonlContent:
    """The complete records of a JSONL file, with their 1-based line numbers, and whether a torn tail was seen."""

    records: list[tuple[int, dict[str, Any]]]
    torn: bool = False


def read_jsonl(path: str | os.PathLike[str]) -> JsonlContent:
    """Every complete line of ``path`` as a JSON object; a last line without newline is a torn write, skipped.

    Raises EvalInputError naming the file and line for a complete line that is not a JSON object.
    """
    path = Path(path)
    content = JsonlContent([])
    try:
        data = path.read_bytes()
    except OSError as err:
        raise EvalInputError(f"{path}: cannot read ({err.strerror or err})") from err
    lines = data.split(b"\n")
    if lines and lines[-1] != b"":
        content.torn = True
    for number, raw in enumerate(lines[:-1], start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise EvalInputError(f"{path}:{number}: not a JSON line ({err})") from err
        if not isinstance(value, dict):
            raise EvalInputError(f"{path}:{number}: not a JSON object")
        content.records.append((number, value))
    return content


def repair_torn_tail(path: str | os.PathLike[str]) -> bool:
    """Cut a torn last line (no newline) off ``path``; True when something was cut."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return False
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        block = 1 << 16
        end = size
        keep = 0
        while end > 0:  # find the last newline from the end
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            index = chunk.rfind(b"\n")
            if index >= 0:
                keep = start + index + 1
                break
            end = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return True


class JsonlAppender:
    """Append records to a JSONL file, one write per batch, flushed and fsync'd (see module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)
        self._file: IO[bytes] = open(self.path, "ab")

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        data = "".join(json_line(r) for r in records).encode("utf-8")
        if data:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
