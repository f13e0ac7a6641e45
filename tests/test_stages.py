"""recipe.stages and recipe.plan_record: the curriculum's sample order, its errors and the checkpoint plan record."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from recipe.plan_record import (
    PLAN_RECORD_NAME,
    StagePlanMismatchError,
    check_plan_record,
    check_plan_state,
    write_plan_record,
)
from recipe.stages import StagePlanError, build_plan, plan_from_data_config
from tests.fixtures.stage_data import make_row, write_rows, write_stage_file

SIZES = {"torf.parquet": 10, "counting.parquet": 7, "stops.parquet": 5, "planning.parquet": 9}


def counts(path: str) -> int:
    """Row counts without files, for the pure planning rules."""
    return SIZES[path]


def stage(name: str, files: list[str], **kw: object) -> dict:
    return {"name": name, "files": files, **kw}


def four_stages(**planning: object) -> list[dict]:
    return [
        stage("torf", ["torf.parquet"], epochs=1),
        stage("counting", ["counting.parquet"], epochs=1.5),
        stage("counting_stops", ["stops.parquet"], steps=3, shuffle=False),
        stage("planning", ["planning.parquet"], **({"epochs": 2, "replay": 0.25} | planning)),
    ]


def rows_of(plan, name: str) -> set[int]:
    """Global row ids of a stage's files."""
    st = next(s for s in plan.stages if s.name == name)
    return {r for i in st.file_indices for r in range(plan.files[i].offset, plan.files[i].offset + plan.files[i].rows)}


def test_stage_order_and_boundaries_on_batch_boundaries():
    plan = build_plan(four_stages(), batch_size=4, seed=1, count_rows=counts)
    # torf 10 rows x 1 -> 2 steps (2 dropped); counting 10 of 7x1.5 -> 2 steps; stops 3 steps;
    # planning 18 own samples at 3 per batch (1 replayed) -> 6 steps.
    assert [s.num_steps for s in plan.stages] == [2, 2, 3, 6]
    assert [s.dropped for s in plan.stages] == [2, 2, 0, 0]
    assert plan.boundaries == (0, 2, 4, 7)
    assert plan.total_steps == 13 and plan.num_samples == 13 * 4 == len(plan.order)
    assert [plan.stage_at_step(k)[1] for k in range(13)] == ["torf"] * 2 + ["counting"] * 2 + ["counting_stops"] * 3 + [
        "planning"
    ] * 6
    assert plan.stage_at_step(7) == (3, "planning")
    with pytest.raises(IndexError):
        plan.stage_at_step(13)
    batches = plan.order.reshape(plan.total_steps, plan.batch_size)
    for step, batch in enumerate(batches):
        index, name = plan.stage_at_step(step)
        st = plan.stages[index]
        own, replayed = batch[: st.own_per_batch], batch[st.own_per_batch :]
        assert set(own.tolist()) <= rows_of(plan, name)
        earlier = set().union(*(rows_of(plan, s.name) for s in plan.stages[:index])) if index else set()
        assert set(replayed.tolist()) <= earlier
        assert len(replayed) == st.replay_per_batch


def test_epochs_cover_each_row_evenly_and_drop_the_remainder():
    sizes = {"a.parquet": 8, "b.parquet": 10}
    plan = build_plan(
        [stage("a", ["a.parquet"], epochs=2), stage("b", ["b.parquet"], epochs=1)],
        batch_size=4,
        seed=0,
        count_rows=sizes.__getitem__,
    )
    a, b = plan.order[:16], plan.order[16:]
    assert Counter(a.tolist()) == {r: 2 for r in range(8)}  # two full epochs, each row twice
    assert sorted(set(a[:8].tolist())) == list(range(8))  # the first epoch is a permutation
    assert len(b) == 8 and len(set(b.tolist())) == 8  # 10 rows -> 2 batches, 2 rows dropped, no repeat
    assert plan.stages[1].dropped == 2


def test_fractional_epochs_and_steps():
    sizes = {"a.parquet": 16, "b.parquet": 7}
    plan = build_plan(
        [stage("a", ["a.parquet"], epochs=0.5), stage("b", ["b.parquet"], steps=5)],
        batch_size=4,
        seed=0,
        count_rows=sizes.__getitem__,
    )
    assert plan.stages[0].num_steps == 2 and len(set(plan.order[:8].tolist())) == 8  # half the rows, distinct
    b = plan.order[8:].tolist()
    assert len(b) == 20  # 5 steps x 4, cycling epochs of 7 rows
    assert sorted(b[:7]) == list(range(16, 23)) and sorted(b[7:14]) == list(range(16, 23))


def test_no_shuffle_keeps_file_then_row_order():
    sizes = {"x.parquet": 3, "y.parquet": 5}
    plan = build_plan(
        [stage("s", ["y.parquet", "x.parquet"], epochs=1, shuffle=False)],
        batch_size=4,
        seed=7,
        count_rows=sizes.__getitem__,
    )
    # files are numbered by first appearance: y rows 0..4, x rows 5..7; 8 rows = 2 batches
    assert plan.order.tolist() == list(range(8))
    assert [f.path for f in plan.files] == ["y.parquet", "x.parquet"]


def test_deterministic_for_a_seed_and_different_for_another():
    one = build_plan(four_stages(), batch_size=4, seed=1, count_rows=counts)
    again = build_plan(four_stages(), batch_size=4, seed=1, count_rows=counts)
    other = build_plan(four_stages(), batch_size=4, seed=2, count_rows=counts)
    assert np.array_equal(one.order, again.order) and one.fingerprint == again.fingerprint
    assert not np.array_equal(one.order, other.order) and one.fingerprint != other.fingerprint
    # same stage table, so only the orders differ
    assert [s.num_steps for s in one.stages] == [s.num_steps for s in other.stages]


def test_fingerprint_follows_file_content_and_config_not_paths(tmp_path: Path, monkeypatch):
    path = write_stage_file(tmp_path / "shared", "torf", 8)

    def plan(file: str, **spec: object):
        return build_plan([stage("torf", [file], **({"epochs": 1} | spec))], batch_size=4, seed=0)

    base = plan(str(path))
    assert plan(str(path)).fingerprint == base.fingerprint
    assert build_plan([stage("torf", [str(path)], epochs=1)], batch_size=2, seed=0).fingerprint != base.fingerprint
    assert plan(str(path), shuffle=False).fingerprint != base.fingerprint
    # the same data elsewhere: copied to node-local scratch, or named relatively from another cwd
    scratch = tmp_path / "node-local" / "data"
    scratch.mkdir(parents=True)
    shutil.copy(path, scratch / "torf.parquet")
    assert plan(str(scratch / "torf.parquet")).fingerprint == base.fingerprint
    monkeypatch.chdir(tmp_path / "node-local")
    relative = plan("data/torf.parquet")
    assert relative.fingerprint == base.fingerprint
    assert relative.record()["stages"][0]["files"][0]["path"] == "data/torf.parquet"  # paths kept for people
    check_plan_state(base.record(), relative)  # the checkpoint's plan: accepted on the copy
    # the same number of different rows at the same path is another plan, and the refusal names the file
    write_rows(path, [make_row("torf", 100 + i) for i in range(8)])
    rewritten = plan(str(path))
    assert rewritten.fingerprint != base.fingerprint
    with pytest.raises(StagePlanMismatchError) as err:
        check_plan_state(base.record(), rewritten)
    old_sha, new_sha = base.files[0].sha256, rewritten.files[0].sha256
    assert (
        f"stage 'torf' files [{path} (8 rows, sha256 {old_sha[:12]})] -> [{path} (8 rows, sha256 {new_sha[:12]})]"
        in (str(err.value))
    )


def test_file_content_comes_from_the_manifest_when_it_can_be_trusted(tmp_path: Path, monkeypatch):
    """The manifest's sha256 is used when it lists the file at its size and the file is older than the manifest."""
    import os

    from data_prep import writer

    out = writer.write_dataset(tmp_path / "data", {"train": [make_row("torf", i) for i in range(8)]}, manifest_extra={})
    file, manifest = out / "torf.parquet", out / "manifest.json"
    listed = writer.read_manifest(out)["files"]["torf.parquet"]["sha256"]
    hashed: list[str] = []
    real = writer.file_sha256
    monkeypatch.setattr(writer, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    written_at = manifest.stat().st_mtime_ns
    os.utime(file, ns=(written_at - 10**9, written_at - 10**9))  # written before the manifest, as the writer does
    assert build_plan([stage("t", [str(file)], epochs=1)], batch_size=4, seed=0).files[0].sha256 == listed
    assert hashed == []
    os.utime(file, ns=(written_at + 10**9, written_at + 10**9))  # touched after the manifest: hashed
    assert build_plan([stage("t", [str(file)], epochs=1)], batch_size=4, seed=0).files[0].sha256 == listed
    assert hashed == ["torf.parquet"]
    data = bytearray(file.read_bytes())
    data[8] ^= 0xFF  # same size, other content (a data page, not the footer), rewritten after the manifest
    file.write_bytes(bytes(data))
    assert build_plan([stage("t", [str(file)], epochs=1)], batch_size=4, seed=0).files[0].sha256 != listed


def test_fingerprint_changes_with_every_plan_input_and_only_with_them(tmp_path: Path, monkeypatch):
    """Same inputs, same fingerprint; a change of files, rows, seed, batch size or any stage setting, or of the
    sample order alone (a numpy upgrade drawing other permutations), a different one."""
    torf, counting = str(write_stage_file(tmp_path, "torf", 8)), str(write_stage_file(tmp_path, "counting", 8))

    def two(first: dict | None = None, second: dict | None = None) -> list[dict]:
        """The base plan, a torf stage then a counting stage, with some of their settings changed."""
        return [
            stage(**{"name": "torf", "files": [torf], "epochs": 1, **(first or {})}),
            stage(**{"name": "counting", "files": [counting], "epochs": 1, **(second or {})}),
        ]

    def fingerprint(stages: list[dict], *, batch_size: int = 4, seed: int = 0) -> str:
        return build_plan(stages, batch_size=batch_size, seed=seed).fingerprint

    base = fingerprint(two())
    assert fingerprint(two()) == base
    changed = {
        "batch size": fingerprint(two(), batch_size=2),
        "seed": fingerprint(two(), seed=1),
        "epochs": fingerprint(two({"epochs": 2})),
        "steps": fingerprint(two({"epochs": None, "steps": 2})),
        "shuffle": fingerprint(two({"shuffle": False})),
        "replay": fingerprint(two(second={"replay": 0.25})),
        "stage name": fingerprint(two({"name": "tf"})),
        "stage order": fingerprint(two()[::-1]),
        "files": fingerprint([stage("both", [torf, counting], epochs=1)]),
        "file order": fingerprint([stage("both", [counting, torf], epochs=1)]),
    }
    assert changed["files"] != changed["file order"]
    for what, value in changed.items():
        assert value != base, what

    write_rows(Path(torf), [make_row("torf", i) for i in range(9)])  # one more row, same path
    assert fingerprint(two()) != base
    moved = str(Path(torf).rename(tmp_path / "moved.parquet"))
    write_rows(Path(torf), [make_row("torf", i) for i in range(8)])  # the original rows back at the original path
    assert fingerprint(two()) == base
    assert fingerprint(two({"files": [moved]})) != base

    import recipe.stages as stages_module

    drawn = stages_module._permutation_stream
    monkeypatch.setattr(stages_module, "_permutation_stream", lambda *a, **k: drawn(*a, **k)[::-1].copy())
    assert fingerprint(two()) != base  # the same stage table, another sample order


def test_replay_draws_from_earlier_stages_deterministically():
    sizes = {"a.parquet": 8, "b.parquet": 4, "c.parquet": 12}
    stages = [
        stage("a", ["a.parquet"], epochs=1),
        stage("b", ["b.parquet"], epochs=1),
        stage("c", ["c.parquet"], epochs=1, replay=0.5),
    ]
    plan = build_plan(stages, batch_size=4, seed=3, count_rows=sizes.__getitem__)
    c = plan.stages[2]
    assert (c.own_per_batch, c.replay_per_batch, c.num_steps) == (2, 2, 6)
    batches = plan.order[c.first_step * 4 :].reshape(c.num_steps, 4)
    replayed = batches[:, 2:].reshape(-1).tolist()
    assert len(replayed) == 12 and len(set(replayed)) == 12  # drawn without repeats until the pool of 12 runs out
    assert set(replayed) <= set(range(12))  # rows of a (0..7) and b (8..11)
    assert sorted(batches[:, :2].reshape(-1).tolist()) == list(range(12, 24))  # c's own rows, once each
    again = build_plan(stages, batch_size=4, seed=3, count_rows=sizes.__getitem__)
    assert np.array_equal(plan.order, again.order)


def test_a_file_may_serve_several_stages():
    sizes = {"all.parquet": 8, "plan.parquet": 4}
    plan = build_plan(
        [stage("coarse", ["all.parquet"], epochs=1), stage("mixed", ["all.parquet", "plan.parquet"], epochs=1)],
        batch_size=4,
        seed=0,
        count_rows=sizes.__getitem__,
    )
    assert len(plan.files) == 2 and plan.num_rows == 12
    assert sorted(plan.order[8:].tolist()) == list(range(12))


@pytest.mark.parametrize(
    ("stages", "batch_size", "message"),
    [
        ([], 4, "data.stages is empty"),
        ([stage("torf", [], epochs=1)], 4, "stage 'torf'.*'files' is empty"),
        ([stage("torf", ["nope.parquet"], epochs=1)], 4, "stage 'torf'.*'nope.parquet' does not exist"),
        ([stage("torf", ["torf.parquet"], epochs=1, steps=2)], 4, "stage 'torf'.*exactly one of 'epochs' and 'steps'"),
        ([stage("torf", ["torf.parquet"])], 4, "stage 'torf'.*exactly one of 'epochs' and 'steps'"),
        ([stage("torf", ["torf.parquet"], epochs=1)], 16, r"stage 'torf'.*fewer than one batch.*torf.parquet"),
        ([stage("torf", ["torf.parquet"], epochs=0.3)], 4, "stage 'torf'.*fewer than one batch"),
        ([stage("torf", ["torf.parquet"], epochs=1, replay=0.5)], 4, "stage 'torf'.*needs earlier stages"),
        (
            [stage("a", ["torf.parquet"], epochs=1), stage("b", ["planning.parquet"], epochs=1, replay=0.1)],
            4,
            "stage 'b'.*rounds to 0",
        ),
        ([stage("a", ["torf.parquet"], epochs=1), stage("a", ["stops.parquet"], epochs=1)], 4, "stage 'a'.*more than"),
        ([stage("torf", ["torf.parquet"], epoch=1)], 4, r"stage 'torf'.*unknown keys \['epoch'\]"),
        ([stage("torf", ["torf.parquet", "torf.parquet"], epochs=1)], 4, "listed twice"),
        ([stage("torf", ["torf.parquet"], steps=1.5)], 4, "'steps' must be a positive integer"),
        ([stage("torf", ["torf.parquet"], epochs=1)], 0, "batch_size must be a positive integer"),
    ],
)
def test_errors_name_the_stage_and_file(stages, batch_size, message, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, n in SIZES.items():
        write_rows(tmp_path / name, [make_row("torf", i) for i in range(n)])
    with pytest.raises(StagePlanError, match=message):
        build_plan(stages, batch_size=batch_size, seed=0)


def test_empty_file_is_an_error(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"x": pa.array([], pa.int64())}), path)
    with pytest.raises(StagePlanError, match=f"stage 'e': file '{path}' has no rows"):
        build_plan([stage("e", [str(path)], epochs=1)], batch_size=1, seed=0)


def test_hydra_config_and_seed_default():
    data = OmegaConf.create({"stages": four_stages(), "train_batch_size": 4, "seed": None})
    plan = plan_from_data_config(data, count_rows=counts)
    assert plan.seed == 0
    assert plan.fingerprint == build_plan(four_stages(), batch_size=4, seed=0, count_rows=counts).fingerprint


def test_describe_is_a_readable_table():
    plan = build_plan(four_stages(), batch_size=4, seed=1, count_rows=counts)
    text = plan.describe()
    assert plan.fingerprint[:16] in text and "13 steps x batch 4" in text
    lines = text.splitlines()
    planning = next(line for line in lines if line.startswith("3 "))
    assert planning.split() == ["3", "planning", "9", "2", "epochs", "yes", "3+1", "6", "7..12", "0"]
    assert "  counting_stops: stops.parquet (5 rows)" in lines


def test_plan_record_round_trip_and_refusal(tmp_path: Path):
    plan = build_plan(four_stages(), batch_size=4, seed=1, count_rows=counts)
    step_dir = tmp_path / "global_step_5"
    path = write_plan_record(step_dir, plan)
    assert path.name == PLAN_RECORD_NAME
    record = json.loads(path.read_text())
    assert record["fingerprint"] == plan.fingerprint and [s["name"] for s in record["stages"]][0] == "torf"
    check_plan_record(step_dir, plan)  # same plan: accepted

    changed = build_plan(four_stages(epochs=3), batch_size=4, seed=1, count_rows=counts)
    with pytest.raises(StagePlanMismatchError) as err:
        check_plan_record(step_dir, changed)
    text = str(err.value)
    assert text.startswith("the stage plan changed since this checkpoint was written: ")
    assert "stage 'planning' epochs 2.0 -> 3.0" in text and "total_steps 13 -> 16" in text

    reseeded = build_plan(four_stages(), batch_size=4, seed=9, count_rows=counts)
    with pytest.raises(StagePlanMismatchError, match="seed 1 -> 9"):
        check_plan_record(step_dir, reseeded)

    record["fingerprint"] = "0" * 64  # same table, different order (say, a numpy upgrade)
    path.write_text(json.dumps(record))
    with pytest.raises(StagePlanMismatchError, match="different sample order"):
        check_plan_record(step_dir, plan)


def test_missing_plan_record(tmp_path: Path):
    plan = build_plan(four_stages(), batch_size=4, seed=1, count_rows=counts)
    with pytest.raises(StagePlanError, match=f"no {PLAN_RECORD_NAME} in"):
        check_plan_record(tmp_path, plan)
    check_plan_record(tmp_path, plan, missing_ok=True)
