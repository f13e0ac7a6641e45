"""data_prep.writer under SIGKILL, --overwrite on folders it did not write, and the umask.

The kill cases are real: a child process runs ``write_dataset`` with a hook (monkeypatched in the child only)
that announces the chosen point on stdout and waits; the test SIGKILLs it there, then runs the writer again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from data_prep import atomic_dir
from data_prep.writer import check_replaceable, read_manifest, write_dataset
from tests.fixtures.killed_child import kill_when_paused
from tests.fixtures.stage_data import make_row

CHILD = """
import os, sys, time
from pathlib import Path
from data_prep import writer
from tests.fixtures.stage_data import make_row

point, out, generation = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

def pause():
    print("paused", flush=True)
    time.sleep(600)

if point == "writing":  # after the first Parquet file of the staging folder
    real_write = writer._write_parquet
    def hook(path, rows):
        real_write(path, rows)
        pause()
    writer._write_parquet = hook
elif point == "between-renames":  # the old output moved to its backup, the new one not yet in place
    from data_prep import atomic_dir
    atomic_dir.exchange = lambda a, b: False  # the two-rename path of filesystems without RENAME_EXCHANGE
    real_replace = os.replace
    def hook(src, dst):
        real_replace(src, dst)
        if Path(dst).name.startswith(f".{out.name}.old-"):
            pause()
    os.replace = hook
rows = [make_row("torf", i) for i in range(6)] + [make_row("planning", 6 + i, size=(84, 112)) for i in range(6)]
writer.write_dataset(out, {"train": rows}, manifest_extra={"generation": generation}, overwrite=True)
print("finished", flush=True)
"""


def rows(n: int = 4) -> list[dict]:
    return [make_row("torf", i) for i in range(n)]


def kill_writer_at(point: str, out: Path, generation: str) -> int:
    """Run the writer in a child, SIGKILL it at ``point``; returns the child's pid (reaped)."""
    return kill_when_paused(CHILD, point, str(out), generation)


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_kill_while_writing_leaves_a_staging_folder_the_next_run_removes(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    pid = kill_writer_at("writing", out, "killed")
    (staging,) = hidden(tmp_path)
    assert staging.startswith(f".prepared.tmp-{atomic_dir.host_name()}-{pid}-") and not out.exists()
    assert (tmp_path / staging / "torf.parquet").is_file()  # it was killed mid-write

    write_dataset(out, {"train": rows()}, manifest_extra={"generation": "next"})
    assert hidden(tmp_path) == [] and read_manifest(out)["generation"] == "next"


def test_a_kill_between_the_renames_is_recovered_from_the_backup(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    write_dataset(out, {"train": rows()}, manifest_extra={"generation": "old"})
    old_files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    kill_writer_at("between-renames", out, "killed")
    assert not out.exists()  # the kill fell between moving the old folder away and moving the new one in
    assert sorted(name.split("-")[0] for name in hidden(tmp_path)) == [".prepared.old", ".prepared.tmp"]

    # the next run, without overwrite: the old folder is back and untouched, and the run refuses to replace it
    with pytest.raises(ValueError, match="is not empty"):
        write_dataset(out, {"train": rows(2)}, manifest_extra={"generation": "new"})
    assert read_manifest(out)["generation"] == "old" and hidden(tmp_path) == []
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == old_files
    write_dataset(out, {"train": rows(2)}, manifest_extra={"generation": "new"}, overwrite=True)
    assert read_manifest(out)["generation"] == "new" and hidden(tmp_path) == []


def test_a_replacement_killed_after_both_renames_leaves_no_backup_behind(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    write_dataset(out, {"train": rows()}, manifest_extra={"generation": "old"})
    backup = atomic_dir.sibling_path(out, atomic_dir.BACKUP).name.replace(f"-{os.getpid()}-", "-999999999-", 1)
    (tmp_path / backup).mkdir()  # what a writer killed before removing its backup leaves (pid 999999999: gone)
    write_dataset(out, {"train": rows(2)}, manifest_extra={"generation": "new"}, overwrite=True)
    assert hidden(tmp_path) == [] and read_manifest(out)["generation"] == "new"


def test_siblings_of_a_live_writer_or_another_host_are_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    live = atomic_dir.sibling_path(out, atomic_dir.STAGING)  # this process: alive
    live.mkdir()
    other_host = tmp_path / f".prepared.tmp-elsewhere.example-{os.getpid() + 1}-0-0123abcd"
    other_host.mkdir()
    reused = tmp_path / live.name.replace(f"-{atomic_dir.process_start(os.getpid())}-", "-1-", 1)
    reused.mkdir()  # this pid, but another process start: the pid was reused, the writer is gone
    not_ours = tmp_path / ".prepared.tmp-abc12345"  # the old writer's mkdtemp name: not provably ours
    not_ours.mkdir()
    write_dataset(out, {"train": rows()}, manifest_extra={})
    assert hidden(tmp_path) == sorted([live.name, other_host.name, not_ours.name])


def test_overwrite_refuses_a_folder_this_writer_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "results"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    with pytest.raises(ValueError, match="was not written by data_prep .*refusing to replace it"):
        write_dataset(foreign, {"train": rows()}, manifest_extra={}, overwrite=True)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    ours = write_dataset(tmp_path / "prepared", {"train": rows()}, manifest_extra={})
    check_replaceable(ours)
    (ours / "notes.txt").write_text("added later")
    with pytest.raises(ValueError, match="holds 'notes.txt', which its manifest does not list"):
        write_dataset(ours, {"train": rows(2)}, manifest_extra={}, overwrite=True)
    (ours / "notes.txt").unlink()
    (ours / "images" / "stray.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="holds 'images/stray.png'"):
        write_dataset(ours, {"train": rows(2)}, manifest_extra={}, overwrite=True)
    (ours / "images" / "stray.png").unlink()
    write_dataset(ours, {"train": rows(2)}, manifest_extra={}, overwrite=True, extra_files={"sheet.png": b"png"})
    assert read_manifest(ours)["extra_files"]["sheet.png"]["bytes"] == 3
    write_dataset(ours, {"train": rows(3)}, manifest_extra={}, overwrite=True)  # listed extras may go
    assert read_manifest(ours)["counts"]["train"]["rows"] == 3 and not (ours / "sheet.png").exists()


@pytest.mark.parametrize(("umask", "folder_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_output_follows_the_umask(tmp_path: Path, umask: int, folder_mode: int, file_mode: int) -> None:
    previous = os.umask(umask)
    try:
        out = write_dataset(tmp_path / "prepared", {"train": rows()}, manifest_extra={})
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == folder_mode and (out / "images").stat().st_mode & 0o777 == folder_mode
    for path in [p for p in out.rglob("*") if p.is_file()]:
        assert path.stat().st_mode & 0o777 == file_mode, path.name


def test_the_manifest_lists_extra_files(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "p", {"train": rows()}, manifest_extra={}, extra_files={"sheet.png": b"abc"})
    assert json.loads((out / "manifest.json").read_text())["extra_files"] == {
        "sheet.png": {"bytes": 3, "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
    }
    for bad in ("../x", ".hidden", "torf.parquet", "manifest.json", "images"):
        with pytest.raises(ValueError, match="extra_files names"):
            write_dataset(tmp_path / "q", {"train": rows()}, manifest_extra={}, extra_files={bad: b""})
