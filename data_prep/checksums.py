"""Content hashes of files and bytes: the one chunked sha256 the writer, the image cache and the stage plan share."""

from __future__ import annotations

import hashlib
import os

CHUNK_BYTES = 1 << 20  # read 1 MiB at a time: memory stays flat for multi-gigabyte files


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks. Raises OSError when the file cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_sha256(data: bytes | bytearray | memoryview) -> str:
    """Hex sha256 of in-memory bytes (the same digest ``file_sha256`` gives for a file holding them)."""
    return hashlib.sha256(data).hexdigest()
