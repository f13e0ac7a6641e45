"""Where official ReasonMap records come from: the dataset hub by name, or a local copy, streamed record by record.

A source is written ``[ROLE=]NAME_OR_PATH[@SPLIT]``:

- ROLE: ``train`` (training stages), ``val`` (``val.parquet``) or ``test`` (``test.parquet``). Without it the
  role comes from the name: ``*Train*`` -> train, ``*Plus*`` -> test, the benchmark ``FSCCS/ReasonMap`` (or any
  other name containing "reasonmap") -> val.
- SPLIT: the dataset split to read; defaults by role: train -> ``train``, test -> ``test``, val ->
  ``validation`` (the split the benchmark's ``main.py`` loads). A local parquet/json file is one split.
- NAME_OR_PATH: an existing path is local: a ``save_to_disk`` folder (Dataset or DatasetDict), a folder of
  parquet files (hub snapshot layout ``data/<split>-*.parquet``), a ``.parquet`` file, or ``.json``/``.jsonl``.
  Anything else shaped ``owner/name`` goes to ``datasets.load_dataset`` (the hub, on a user's machine).

Records stream in order (parquet by row batches, datasets row by row), so memory holds one batch of embedded
maps, not the dataset. Image columns are read undecoded (``Image(decode=False)``): the bytes are hashed for
the resize cache and decoded once per distinct map.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("train", "val", "test")
DEFAULT_SPLIT = {"train": "train", "val": "validation", "test": "test"}
HUB_SOURCES = ("train=FSCCS/ReasonMap-Train", "val=FSCCS/ReasonMap", "test=FSCCS/ReasonMap-Plus")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PARQUET_BATCH = 16


class SourceError(ValueError):
    """A source that cannot be read (missing path, unknown split, unreadable file)."""


@dataclass
class Source:
    """One parsed ``--source``; ``info`` collects what the manifest records about it."""

    role: str
    location: str
    split: str
    local: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.location).name if self.local else self.location

    def image_roots(self) -> list[Path]:
        """Folders a relative ``figure`` path may be relative to (the released loader tries these too)."""
        if not self.local:
            return []
        path = Path(self.location).resolve()
        base = path if path.is_dir() else path.parent
        return [base, base.parent, base.parent.parent]


def parse_source(text: str) -> Source:
    """``[ROLE=]NAME_OR_PATH[@SPLIT]`` -> Source (role inferred from the name when absent)."""
    role = None
    rest = text.strip()
    head, sep, tail = rest.partition("=")
    if sep and head in ROLES:
        role, rest = head, tail
    split = None
    if "@" in rest and not Path(rest).exists():
        rest, _, split = rest.rpartition("@")
    if not rest:
        raise SourceError(f"source {text!r}: empty name")
    local = Path(rest).exists()
    if not local and not _HUB_NAME.match(rest):
        raise SourceError(f"source {text!r}: no such file or folder, and not a hub name (owner/name)")
    if role is None:
        role = infer_role(rest)
    return Source(role=role, location=rest, split=split or DEFAULT_SPLIT[role], local=local)


def infer_role(name: str) -> str:
    """Role from a dataset name or path: Train -> train, Plus -> test, other ReasonMap -> val."""
    low = Path(name).name.lower() if Path(name).exists() else name.lower()
    if "train" in low:
        return "train"
    if "plus" in low:
        return "test"
    if "reasonmap" in low or "reason_map" in low:
        return "val"
    raise SourceError(f"source {name!r}: cannot tell its role from the name; write train=, val= or test= before it")


def iter_records(source: Source, *, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The source's records, in order, at most ``limit``; fills ``source.info`` (kind, files, fingerprint)."""
    if source.local:
        records = _iter_local(source)
    else:
        records = _iter_dataset(_load_hub(source), source)
    for i, record in enumerate(records):
        if limit is not None and i >= limit:
            break
        yield record


def _load_hub(source: Source) -> Any:
    import datasets

    source.info.update(kind="hub", name=source.location, split=source.split)
    try:
        return datasets.load_dataset(source.location, split=source.split)
    except Exception as err:  # the hub client raises many types; report one line
        raise SourceError(
            f"source {source.location!r} split {source.split!r}: cannot load from the hub: {err}"
        ) from err


def _iter_local(source: Source) -> Iterator[dict[str, Any]]:
    path = Path(source.location)
    if path.is_dir():
        if (
            (path / "dataset_info.json").is_file()
            or (path / "dataset_dict.json").is_file()
            or (path / "state.json").is_file()
        ):
            yield from _iter_dataset(_load_from_disk(path, source), source)
            return
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise SourceError(f"source {str(path)!r}: folder has no save_to_disk dataset and no parquet files")
        chosen = [f for f in files if f.name.startswith(f"{source.split}-") or f.name == f"{source.split}.parquet"]
        chosen = chosen or [f for f in files if f.parent.name == source.split]
        if not chosen:
            if len({f.name.split("-")[0] for f in files}) > 1:
                raise SourceError(f"source {str(path)!r}: no parquet files for split {source.split!r}")
            chosen = files
        yield from _iter_parquet(chosen, source)
        return
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _iter_parquet([path], source)
    elif suffix in (".json", ".jsonl"):
        yield from _iter_json(path, source)
    else:
        raise SourceError(f"source {str(path)!r}: unsupported file type {suffix or '(none)'}; use parquet or json")


def _load_from_disk(path: Path, source: Source) -> Any:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:
        raise SourceError(f"source {str(path)!r}: cannot load save_to_disk folder: {err}") from err
    source.info.update(kind="save_to_disk", path=str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if source.split in loaded:
            split = source.split
        elif len(loaded) == 1:
            split = next(iter(loaded))
        else:
            raise SourceError(f"source {str(path)!r}: no split {source.split!r}; it has {sorted(loaded)}")
        source.info["split"] = split
        return loaded[split]
    source.info["split"] = None
    return loaded


def _iter_dataset(dataset: Any, source: Source) -> Iterator[dict[str, Any]]:
    import datasets

    for column, feature in dataset.features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    source.info.update(
        dataset_rows=len(dataset),
        fingerprint=getattr(dataset, "_fingerprint", None),
        version=str(dataset.info.version) if dataset.info.version else None,
    )
    yield from dataset


def _iter_parquet(files: list[Path], source: Source) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    source.info.update(kind="parquet", files=[_file_info(f) for f in files])
    for file in files:
        try:
            reader = pq.ParquetFile(file)
            for batch in reader.iter_batches(batch_size=_PARQUET_BATCH):
                yield from batch.to_pylist()
        except (OSError, ValueError) as err:
            raise SourceError(f"source {str(file)!r}: cannot read parquet: {err}") from err


def _iter_json(path: Path, source: Source) -> Iterator[dict[str, Any]]:
    source.info.update(kind="json", files=[_file_info(path)])
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading BOM (Windows editors) is not part of the JSON
    except (OSError, UnicodeDecodeError) as err:
        raise SourceError(f"source {str(path)!r}: cannot read: {err}") from err
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SourceError(f"source {str(path)!r}: invalid JSON: {err}") from err
        yield from data
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as err:
            raise SourceError(f"source {str(path)!r}: line {number}: invalid JSON: {err}") from err


def _file_info(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
