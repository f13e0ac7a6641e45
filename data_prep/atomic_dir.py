"""Put a folder in place atomically, even under SIGKILL: the one way this project replaces a folder.

``replacing(out, is_complete=...)`` yields a fresh staging folder beside ``out``; when the block ends, the staging
folder takes ``out``'s place, or is removed if the block raised. At every instant ``out`` is the old folder or
the complete new one, never a half-written one:

- ``out`` absent or empty: one rename;
- ``out`` present: one ``renameat2(RENAME_EXCHANGE)`` (Linux: ext4, xfs, btrfs, tmpfs), then the old folder,
  now under the staging name, is removed. Where the filesystem cannot exchange (NFS, non-Linux), two renames via
  a backup sibling: a kill between them leaves no ``out``, and the next writer of ``out`` puts the backup back.

Staging ``.<name>.tmp-<host>-<pid>-<start>-<token>`` and backup ``.<name>.old-...`` siblings carry their writer,
so the next writer of the same output repairs what a killed one left (``clean_stale``): a backup with ``out``
missing is renamed back when complete, every other sibling whose writer is gone is removed. "Whose writer is
gone": host, pid and the process's start time (``/proc/<pid>/stat``, so a reused pid is told apart); a sibling
from another host, or of a live process, is never touched. Folders follow the umask (``os.mkdir``).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     out = Path(tmp) / "results"
...     for text in ("old", "new"):  # create, then replace
...         with replacing(out, is_complete=lambda folder: (folder / "done.txt").is_file()) as staging:
...             _ = (staging / "done.txt").write_text(text)
...     print((out / "done.txt").read_text(), [p.name for p in out.parent.iterdir()])
new ['results']
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import re
import secrets
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

STAGING, BACKUP = "tmp", "old"
_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>[\w.]+)-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]{8}$")


def host_name() -> str:
    """This machine's name as it appears in sibling names (characters other than letters, digits, _ and . -> _)."""
    return re.sub(r"[^\w.]", "_", socket.gethostname()) or "host"


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None when not running.

    Returns 0 where ``/proc`` does not exist (then only the pid is checked).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None if Path("/proc/self/stat").exists() else _pid_exists_or_none(pid)
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name (field 2) may hold spaces


def _pid_exists_or_none(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0
    return 0


def sibling_path(out: Path, kind: str) -> Path:
    """A fresh staging (``tmp``) or backup (``old``) sibling name of ``out`` for this process."""
    pid = os.getpid()
    start = process_start(pid) or 0
    return out.parent / f".{out.name}.{kind}-{host_name()}-{pid}-{start}-{secrets.token_hex(4)}"


def make_staging_dir(out: Path) -> Path:
    """Create this process's staging folder beside ``out`` (mode from the umask) and return it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = sibling_path(out, STAGING)
    os.mkdir(staging)
    return staging


def writer_gone(sibling: Path) -> bool:
    """True when ``sibling`` is a staging or backup folder of ours whose writing process no longer runs here."""
    match = _SIBLING.match(sibling.name)
    if match is None or match["host"] != host_name():
        return False
    start = process_start(int(match["pid"]))
    return start is None or (start != 0 and start != int(match["start"]) and int(match["start"]) != 0)


def siblings(out: Path) -> list[tuple[str, Path]]:
    """(kind, path) of every staging and backup folder named for ``out`` (any writer, any host)."""
    if not out.parent.is_dir():
        return []
    found = []
    for entry in out.parent.iterdir():
        match = _SIBLING.match(entry.name)
        if match is not None and match["name"] == out.name and entry.is_dir() and not entry.is_symlink():
            found.append((match["kind"], entry))
    return sorted(found, key=lambda kp: kp[1].name)


def clean_stale(out: Path, *, is_complete: Callable[[Path], bool]) -> list[str]:
    """Repair after a killed writer of ``out`` (see module doc); returns what was done, one line each."""
    done: list[str] = []
    stale = [(kind, path) for kind, path in siblings(out) if writer_gone(path)]
    backups = sorted((p for kind, p in stale if kind == BACKUP), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for backup in backups:
        if not out.exists() and is_complete(backup):
            os.replace(backup, out)
            fsync_dir(out.parent)
            done.append(f"recovered {str(out)!r} from {backup.name} (a writer was killed while replacing it)")
        elif out.exists():
            shutil.rmtree(backup)
            done.append(f"removed {backup.name} (the backup of a finished replacement)")
        else:
            logger.warning("left %s alone: %s is missing but the backup is incomplete", backup, out)
    for kind, path in stale:
        if kind == STAGING:
            shutil.rmtree(path)
            done.append(f"removed {path.name} (a killed writer's staging folder)")
    for line in done:
        logger.warning("%s", line)
    return done


@contextlib.contextmanager
def replacing(out: Path, *, is_complete: Callable[[Path], bool]) -> Iterator[Path]:
    """A staging folder for the new ``out``, put in place when the block ends and removed if it raises.

    Args:
        out: the folder to create or replace.
        is_complete: whether a folder is a whole ``out`` (e.g. its last-written file exists); decides whether a
            backup left by a killed writer is put back.

    Yields:
        The empty staging folder to write into.
    """
    clean_stale(out, is_complete=is_complete)
    staging = make_staging_dir(out)
    try:
        yield staging
        swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_in(staging: Path, out: Path) -> None:
    """Move ``staging`` onto ``out``: one rename when ``out`` is absent or empty, else an exchange (or two renames
    via a backup where the filesystem cannot exchange) and the old folder removed."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(staging, out)
        fsync_dir(out.parent)
        return
    if exchange(staging, out):  # out is the new folder; the staging name now holds the old one
        fsync_dir(out.parent)
        shutil.rmtree(staging, ignore_errors=True)  # a kill before this leaves a stale staging folder: removed later
        return
    backup = sibling_path(out, BACKUP)
    os.replace(out, backup)
    try:
        os.replace(staging, out)  # a kill between the two renames is repaired by the next clean_stale
    except BaseException:
        os.replace(backup, out)
        raise
    fsync_dir(out.parent)
    shutil.rmtree(backup, ignore_errors=True)


_AT_FDCWD = -100  # <fcntl.h>: paths relative to the working directory
_RENAME_EXCHANGE = 2  # <linux/fs.h>
_NO_EXCHANGE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})  # the filesystem or kernel cannot


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """glibc's ``renameat2`` (2.28+), or None (not Linux, another libc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``RENAME_EXCHANGE``); False where that is not supported.

    Raises OSError for any other failure (a missing path, another filesystem, permissions), as ``os.replace`` would.
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def fsync_dir(folder: Path) -> None:
    """fsync a folder's entry list, so renames and new files in it survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
