"""Replace a folder atomically, even under SIGKILL: staging and backup siblings named by their writer, cleaned later.

A writer builds the new folder in a staging sibling ``.<name>.tmp-<host>-<pid>-<start>-<token>`` and renames it
onto ``<name>``. Replacing an existing folder takes two renames (old -> ``.<name>.old-...``, staging -> name),
so a kill between them leaves no ``<name>``. Nothing can make the two renames one on every filesystem, so the
next writer of the same output repairs instead (``clean_stale``):

- a backup whose writer is gone, with ``<name>`` missing and the backup complete: renamed back (recovered);
- a backup whose writer is gone otherwise, and a staging folder whose writer is gone: removed.

"Whose writer is gone": the name carries host, pid and the process's start time (``/proc/<pid>/stat``, so a
reused pid is told apart); a sibling from another host, or of a live process, is never touched. Folders are
created with ``os.mkdir`` and so follow the umask (``tempfile.mkdtemp`` made them ``drwx------``).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable
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


def swap_in(staging: Path, out: Path) -> None:
    """Move ``staging`` onto ``out``: one rename when ``out`` is absent or empty, else two via a backup."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(staging, out)
        fsync_dir(out.parent)
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


def fsync_dir(folder: Path) -> None:
    """fsync a folder's entry list, so renames and new files in it survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
