"""Write schema rows as a prepared dataset folder: curriculum stage files, eval splits and a manifest, atomically.

Layout of ``out_dir`` (every prep path, ReasonMap or synthetic, writes the same one)::

    torf.parquet            train rows, TorF1 + TorF2           (stage 1)
    counting.parquet        train rows, Counting2 + Counting3   (stage 2)
    counting_stops.parquet  train rows, Counting1               (stage 3)
    planning.parquet        train rows, planning                (stage 4)
    val.parquet             when rows_by_split has "val"
    test.parquet            when rows_by_split has "test"
    images/<sha256>.png     each distinct map once; rows name theirs by this relative path (data_prep.image_files)
    manifest.json           files (rows, bytes, sha256), image_files (bytes, sha256, size), counts, pixel budget,
                            versions, caller's extras

A stage (or split) without rows gets no file: an empty Parquet file makes ``datasets.load_dataset`` (and so
verl's RLHFDataset) fail with "BatchSize must be greater than 0". ``manifest["stages"]`` lists the stage files
actually written, in curriculum order (``data_prep.schema.STAGES``); read it rather than assuming all four.
Rows keep their input order inside each file; ordering for training is the curriculum sampler's job.

Every file uses one explicit Arrow schema (``ROW_SCHEMA``), so files from different cities or generators
concatenate (verl loads several parquet files as one dataset) and empty files still carry the types.
Rows arrive with PNG ``bytes`` (``data_prep.schema.build_row``) and are written with ``path`` instead: the
Parquet files hold text only, and a map shared by a hundred questions is stored once.

Atomicity (``data_prep.atomic_dir.replacing``): everything is written into a staging sibling folder that takes
``out_dir``'s place only after the manifest is written and every file is fsynced; on any failure the staging
folder is removed and ``out_dir`` is untouched. A SIGKILL leaves the old folder or the new one; every write first
removes what a killed writer of the same output left (and, on a filesystem that cannot exchange two folders,
puts back an output the kill left aside between two renames).

Replacing: ``overwrite`` replaces only a folder this writer wrote (its ``manifest.json`` has the writer's layout)
holding nothing its manifest does not list; anything else is refused, so no unrelated file is ever deleted.
Folders and files follow the umask.
"""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep import atomic_dir
from data_prep.checksums import file_sha256
from data_prep.image_files import ImageStore
from data_prep.schema import EXTRA_INFO_KEYS, IMAGES_DIR, STAGE_OF_TYPE, STAGES, RowError, validate_row

SPLITS = ("train", "val", "test")
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2  # 2: images stored once under images/, rows carry their path
LAYOUT = "rewardmap-stages-v2"
ROW_GROUP_SIZE = 256  # rows are text (the map is a path); a row group holds a few MB of ground truths

_ARROW_OF_TYPE = {int: pa.int64(), str: pa.string()}
ROW_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        (
            "images",
            pa.list_(
                pa.struct(
                    [
                        ("bytes", pa.binary()),
                        ("path", pa.string()),
                        ("min_pixels", pa.int64()),
                        ("max_pixels", pa.int64()),
                    ]
                )
            ),
        ),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([(key, _ARROW_OF_TYPE[typ]) for key, typ in EXTRA_INFO_KEYS.items()])),
    ]
)
_RESERVED_MANIFEST_KEYS = (
    "manifest_version",
    "layout",
    "stages",
    "files",
    "image_files",
    "counts",
    "pixel_budget",
    "versions",
    "extra_files",
)
LEGACY_UNLISTED = ("contact_sheet.png",)  # written beside a v1 manifest by data_prep.synthetic, outside it


def stage_file(stage: str) -> str:
    """File name of a curriculum stage (``torf`` -> ``torf.parquet``)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")
    return f"{stage}.parquet"


def split_file(split: str) -> str:
    """File name of an evaluation split (``val`` / ``test``)."""
    if split not in ("val", "test"):
        raise ValueError(f"split {split!r} has no single file; train is written per stage")
    return f"{split}.parquet"


def write_dataset(
    out_dir: str | os.PathLike[str],
    rows_by_split: Mapping[str, Sequence[dict[str, Any]]],
    *,
    manifest_extra: Mapping[str, Any],
    overwrite: bool = False,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Validate rows, write the layout above into ``out_dir`` atomically, and return ``out_dir``.

    ``rows_by_split`` keys are "train", "val", "test" (any subset, at least one). ``manifest_extra`` is merged
    into the manifest at top level (e.g. ``sources``, ``skipped``, ``generator``); it must be JSON-serialisable
    and may not reuse the writer's own keys. ``extra_files`` (file name -> bytes, e.g. a contact sheet) are
    written into the folder with the rest, atomically, and listed in the manifest. An existing non-empty
    ``out_dir`` is replaced only with ``overwrite=True``, and only when this writer wrote it (see module doc).
    Raises RowError on an invalid row (naming split and position), ValueError on bad arguments or a folder it
    may not replace, OSError on I/O failure; in every case nothing is left behind.
    """
    out = Path(out_dir)
    unknown = set(rows_by_split) - set(SPLITS)
    if unknown or not rows_by_split:
        raise ValueError(f"rows_by_split keys must be a non-empty subset of {SPLITS}, got {sorted(rows_by_split)}")
    clash = sorted(set(manifest_extra) & set(_RESERVED_MANIFEST_KEYS))
    if clash:
        raise ValueError(f"manifest_extra may not set the writer's keys {clash}")
    json.dumps(dict(manifest_extra), ensure_ascii=False)  # fail before writing anything
    extra = dict(extra_files or {})
    bad_names = [n for n in extra if not _is_plain_name(n) or n == MANIFEST_NAME or n.endswith(".parquet")]
    if bad_names or any(n == IMAGES_DIR for n in extra):
        raise ValueError(f"extra_files names must be plain file names outside the layout, got {sorted(extra)}")
    atomic_dir.clean_stale(out, is_complete=is_complete_dataset)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"output folder {str(out)!r} is not empty (pass overwrite to replace it)")
        check_replaceable(out)

    files = _plan_files(rows_by_split)
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "layout": LAYOUT,
        "stages": [name for name, (_, stage, _) in files.items() if stage is not None],
        "files": {},
        "image_files": {},
        "counts": {split: _counts(rows) for split, rows in rows_by_split.items()},
        "pixel_budget": _pixel_budget(rows_by_split),
        "versions": _versions(),
    }
    manifest.update(manifest_extra)

    with atomic_dir.replacing(out, is_complete=is_complete_dataset) as tmp:
        store = ImageStore(tmp)
        for name, (split, stage, rows) in files.items():
            path = tmp / name
            _write_parquet(
                path, [_with_stored_images(row, store, where=f"{split} row {i}") for i, row in enumerate(rows)]
            )
            manifest["files"][name] = {
                "split": split,
                "stage": stage,
                "rows": len(rows),
                "bytes": path.stat().st_size,
                "sha256": file_sha256(path),
            }
        manifest["image_files"] = store.listing()
        for name, data in extra.items():
            (tmp / name).write_bytes(data)
        manifest["extra_files"] = {
            name: {"bytes": len(data), "sha256": file_sha256(tmp / name)} for name, data in extra.items()
        }
        manifest_path = tmp / MANIFEST_NAME
        manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=False) + "\n")
        _fsync_tree(tmp)
    return out


def is_complete_dataset(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder`` holds a manifest of this writer and every file it lists, at the listed size."""
    folder = Path(folder)
    manifest = _our_manifest(folder)
    if manifest is None:
        return False
    listed = {**manifest.get("files", {}), **manifest.get("image_files", {}), **manifest.get("extra_files", {})}
    return all(
        (folder / name).is_file() and (folder / name).stat().st_size == info.get("bytes")
        for name, info in listed.items()
    )


def check_replaceable(folder: str | os.PathLike[str]) -> None:
    """Raise ValueError unless ``folder`` was written by this writer and holds only what its manifest lists."""
    folder = Path(folder)
    manifest = _our_manifest(folder)
    if manifest is None:
        raise ValueError(
            f"output folder {str(folder)!r} was not written by data_prep (no manifest.json of this writer): "
            "refusing to replace it, which would delete its files; choose a new or empty folder"
        )
    listed = {MANIFEST_NAME, *manifest.get("files", {}), *manifest.get("extra_files", {})}
    if manifest.get("layout") == "rewardmap-stages-v1":
        listed.update(LEGACY_UNLISTED)
    images = set(manifest.get("image_files", {}))
    for entry in sorted(folder.iterdir()):
        if entry.name in listed and entry.is_file():
            continue
        if entry.name == IMAGES_DIR and entry.is_dir():
            unlisted = sorted(p.name for p in entry.iterdir() if f"{IMAGES_DIR}/{p.name}" not in images)
            if not unlisted:
                continue
            entry = entry / unlisted[0]
        raise ValueError(
            f"output folder {str(folder)!r} holds {str(entry.relative_to(folder))!r}, which its manifest does not "
            "list: refusing to replace the folder, which would delete it (move it out first)"
        )


def _our_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest when this writer wrote it (any layout version), else None."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not str(manifest.get("layout", "")).startswith("rewardmap-stages-"):
        return None
    return manifest


def _is_plain_name(name: str) -> bool:
    return bool(name) and name == Path(name).name and not name.startswith(".")


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a prepared dataset folder."""
    return json.loads((Path(out_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))


def content_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a data file's content, from its folder's manifest when that can be trusted, else hashed.

    Trusted when the folder holds this writer's manifest, it lists the file, the size agrees, and the file is
    older than the manifest (the writer writes the manifest last; a file rewritten later is newer). A copy that
    keeps modification times (``cp -a``, ``rsync -a``) keeps the fast path; a plain ``cp -r`` makes the files
    newer than nothing in particular, and they are hashed (about 1 s per GB). Raises OSError if unreadable.
    """
    path = Path(path)
    stat = path.stat()
    manifest = _our_manifest(path.parent)
    listed = (manifest or {}).get("files", {}).get(path.name)
    if isinstance(listed, dict) and listed.get("bytes") == stat.st_size and isinstance(listed.get("sha256"), str):
        if stat.st_mtime_ns < (path.parent / MANIFEST_NAME).stat().st_mtime_ns:
            return listed["sha256"]
    return file_sha256(path)


def _plan_files(
    rows_by_split: Mapping[str, Sequence[dict[str, Any]]],
) -> dict[str, tuple[str, str | None, list[dict[str, Any]]]]:
    """File name -> (split, stage, rows), validating every row first."""
    files: dict[str, tuple[str, str | None, list[dict[str, Any]]]] = {}
    for split in SPLITS:
        if split not in rows_by_split:
            continue
        rows = list(rows_by_split[split])
        for i, row in enumerate(rows):
            _check_row(row, where=f"{split} row {i}", split=split)
        if split == "train":
            by_stage: dict[str, list[dict[str, Any]]] = {s: [] for s in STAGES}
            for row in rows:
                by_stage[STAGE_OF_TYPE[row["extra_info"]["question_type"]]].append(row)
            for stage in STAGES:
                if by_stage[stage]:
                    files[stage_file(stage)] = (split, stage, by_stage[stage])
        elif rows:
            files[split_file(split)] = (split, None, rows)
    if not files:
        raise ValueError("no rows to write")
    return files


def _check_row(row: Any, *, where: str, split: str) -> None:
    if not isinstance(row, dict):
        raise RowError(f"{where}: must be a dict, got {type(row).__name__}")
    extra = set(row) - set(ROW_SCHEMA.names)
    if extra:
        raise RowError(f"{where}: field {sorted(extra)[0]!r}: not in the row schema {ROW_SCHEMA.names}")
    gt = validate_row(row, where=where)
    for i, image in enumerate(row["images"]):
        if not image.get("bytes"):
            raise RowError(f"{where}: field 'images[{i}]': the writer stores images itself; give it the PNG 'bytes'")
    if row["extra_info"]["question_type"] != gt.question_type:
        raise RowError(f"{where}: field 'extra_info.question_type': disagrees with the ground truth")
    if row["extra_info"]["split"] != split:
        raise RowError(f"{where}: field 'extra_info.split': {row['extra_info']['split']!r} written to {split!r}")


def _with_stored_images(row: dict[str, Any], store: ImageStore, *, where: str) -> dict[str, Any]:
    """The row as written: each image's PNG stored once in ``store``, the row keeping its relative path."""
    images = [
        {**image, "bytes": None, "path": store.add(image["bytes"], where=f"{where}: images[{i}]")}
        for i, image in enumerate(row["images"])
    ]
    return {**row, "images": images}


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """One row group at a time, so memory holds one group's images, not the whole file's."""
    with pq.ParquetWriter(path, ROW_SCHEMA, compression="zstd") as writer:
        for start in range(0, len(rows), ROW_GROUP_SIZE):
            chunk = rows[start : start + ROW_GROUP_SIZE]
            writer.write_table(pa.Table.from_pylist(chunk, schema=ROW_SCHEMA), row_group_size=ROW_GROUP_SIZE)


def _counts(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    info = [row["extra_info"] for row in rows]
    by_type = Counter(e["question_type"] for e in info)
    return {
        "rows": len(rows),
        "by_type": dict(sorted(by_type.items())),
        "by_map_difficulty": dict(sorted(Counter(e["map_difficulty"] for e in info).items())),
        "by_type_and_map_difficulty": {
            t: dict(sorted(Counter(e["map_difficulty"] for e in info if e["question_type"] == t).items()))
            for t in sorted(by_type)
        },
        "by_question_transfers": {
            str(k): v
            for k, v in sorted(
                Counter(e["question_transfer_count"] for e in info if e["question_type"] == "planning").items()
            )
        },
        "by_data_source": dict(sorted(Counter(row["data_source"] for row in rows).items())),
        "by_stage": dict(sorted(Counter(e["stage"] for e in info).items())),
        "cities": len({(e["country"], e["city"]) for e in info}),
    }


def _pixel_budget(rows_by_split: Mapping[str, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    budgets = {
        (e["min_pixels"], e["max_pixels"]) for rows in rows_by_split.values() for e in (r["extra_info"] for r in rows)
    }
    if len(budgets) == 1:
        ((lo, hi),) = budgets
        return {"min_pixels": lo, "max_pixels": hi}
    return {"mixed": [{"min_pixels": lo, "max_pixels": hi} for lo, hi in sorted(budgets)]}


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("rewardmap-recipe", "verl", "pyarrow", "pandas", "pillow", "datasets"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (and itself), so a crash after the rename finds whole files."""
    for child in folder.iterdir():
        if child.is_dir():
            _fsync_tree(child)
        else:
            with child.open("rb") as fh:
                os.fsync(fh.fileno())
    atomic_dir.fsync_dir(folder)
