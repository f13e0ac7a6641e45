"""Prepared maps stored once per data folder, and the one way to read a row's image whatever its storage.

A written row names its map ``images/<sha256>.png`` (``data_prep.schema.stored_image_path``), relative to the
folder holding the Parquet file. ReasonMap-Train puts about 109 questions on each of its 30 maps, and a map at
the default pixel budget is up to 10 MB of PNG, so storing the map once instead of once per row divides the data
folder (and the ``datasets`` cache verl fills from it) by roughly the number of questions per map.

- ``ImageStore`` (the writer's): writes each distinct PNG once into ``<folder>/images/`` and lists what it wrote
  (bytes, sha256, size) for the manifest.
- ``resolve_row_images`` / ``resolve_image_entry``: a row's stored paths made absolute against the folders its
  Parquet files sit in (at load time, in the process that read the Parquet), so the row can travel to a worker
  with another working directory. Because the name is the content hash, any of those folders that holds the
  name holds the right image.
- ``open_row_image``: a row's image entry (``bytes``, a stored path plus its data folder, or an already
  resolved absolute path) opened as a PIL image. The pre-flight and the evaluation read rows through it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from data_prep.checksums import bytes_sha256
from data_prep.images import DEFAULT_MAX_SOURCE_PIXELS, ImageError, open_image
from data_prep.schema import IMAGES_DIR, is_stored_image_path, stored_image_path


class ImageStore:
    """Writes each distinct PNG once into ``folder/images/<sha256>.png``; ``listing()`` is the manifest's record.

    Rows of one map usually share one ``bytes`` object (the resize cache hands out the same object), so a PNG is
    hashed once per object, not once per row; equal bytes in distinct objects still land in one file.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._by_object: dict[int, tuple[bytes, str]] = {}  # id -> (the object, kept alive so ids stay unique; path)
        self._files: dict[str, dict[str, Any]] = {}

    def add(self, png: bytes | bytearray | memoryview, *, where: str) -> str:
        """Store ``png`` (once) and return its relative path ``images/<sha256>.png``."""
        seen = self._by_object.get(id(png))
        if seen is not None and seen[0] is png:
            return seen[1]
        data = bytes(png)
        sha = bytes_sha256(data)
        path = stored_image_path(sha)
        if path not in self._files:
            with Image.open(io.BytesIO(data)) as image:  # header only: the size, for the manifest
                if image.format != "PNG":
                    raise ImageError(f"{where}: prepared images are PNG, got {image.format}")
                width, height = image.size
            target = self.folder / path
            target.parent.mkdir(exist_ok=True)
            with open(target, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            self._files[path] = {"bytes": len(data), "sha256": sha, "width": width, "height": height}
        self._by_object[id(png)] = (png, path)  # type: ignore[assignment]
        return path

    def listing(self) -> dict[str, dict[str, Any]]:
        """Relative path -> {bytes, sha256, width, height} of every image written, sorted by path."""
        return dict(sorted(self._files.items()))


def resolve_image_entry(entry: Any, data_dirs: Sequence[str | os.PathLike[str]], *, where: str) -> Any:
    """An image entry with a stored relative path turned into one with an absolute ``path``; others unchanged.

    The first of ``data_dirs`` that holds the file wins (content-addressed names make any holder right). Raises
    ImageError naming the path and the folders looked in when none has it.
    """
    if not isinstance(entry, Mapping) or entry.get("bytes") or not is_stored_image_path(entry.get("path")):
        return entry
    relative = entry["path"]
    for folder in data_dirs:
        candidate = os.path.join(os.fspath(folder), relative)
        if os.path.isfile(candidate):
            return {**entry, "path": os.path.abspath(candidate)}
    shown = ", ".join(repr(os.fspath(d)) for d in data_dirs) or "(no data folder given)"
    raise ImageError(
        f"{where}: image {relative!r} not found under {shown}; the {IMAGES_DIR}/ folder must sit beside the "
        "Parquet files (copy the whole prepared folder)"
    )


def resolve_row_images(
    row: Mapping[str, Any], data_dirs: Sequence[str | os.PathLike[str]], *, where: str = "row"
) -> dict[str, Any]:
    """A shallow copy of ``row`` whose stored image paths are absolute (see ``resolve_image_entry``)."""
    images = row.get("images") or []
    resolved = [resolve_image_entry(e, data_dirs, where=f"{where}: images[{i}]") for i, e in enumerate(images)]
    return {**row, "images": resolved}


def image_entry_source(entry: Any, *, data_dir: str | os.PathLike[str] | None = None, where: str) -> bytes | Path:
    """What an image entry points at: its PNG bytes, or the file (a stored path under ``data_dir``, or absolute)."""
    if not isinstance(entry, Mapping):
        raise ImageError(f"{where}: an image entry must be a dict with 'bytes' or 'path', got {type(entry).__name__}")
    data, path = entry.get("bytes"), entry.get("path")
    if data:
        return bytes(data)
    if not path:
        raise ImageError(f"{where}: image entry has neither 'bytes' nor 'path'")
    if os.path.isabs(path):
        return Path(path)
    if data_dir is None:
        raise ImageError(f"{where}: image {path!r} is relative to its data folder, and no data folder was given")
    return Path(data_dir) / path


def open_row_image(
    entry: Any,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    where: str,
    max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS,
) -> Image.Image:
    """A row's image entry opened lazily (header read; ``.load()``/``.convert()`` decode), whatever its storage.

    ``data_dir`` is the folder of the Parquet file the row came from (needed for a stored relative path). Use as a
    context manager to close the file. Raises ImageError naming ``where`` when missing or unreadable.
    """
    source = image_entry_source(entry, data_dir=data_dir, where=where)
    return open_image(source, where=where, max_source_pixels=max_source_pixels)
