"""Every folder the recipe puts in place goes through ``data_prep.atomic_dir``: a failure, or a SIGKILL at any point
of a replacement, leaves the old folder or the new one, whole, and the next run leaves nothing beside it.

The users: evaluation's results folder (``score``) and comparison folder (``compare``), a verl checkpoint merged
for evaluation (``merge``) and the dry run's warm-started tiny model (``tiny_model``). The kill cases are real, as in
``tests/test_writer_atomic.py``: a child process replaces an ``old`` output with a ``new`` one and pauses at a point
of ``data_prep.atomic_dir`` (hooked in the child only); the test SIGKILLs it there. The heavy work of two users is
replaced by small stand-ins (verl's FSDP merger, the tiny model's build and warm start): what is tested is how
their folder is put in place.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from data_prep import atomic_dir
from data_prep.synthetic import SyntheticParams, generate_dataset
from recipe.evaluate import compare, models, scoring
from recipe.evaluate.testset import load_questions
from reward_fns.gold import gold_response
from reward_fns.ground_truth import GroundTruth
from tests.fixtures.killed_child import kill_when_paused

TINY_MODEL_MODULE = "recipe.cpu.tiny_model"
GENERATIONS = {"old": 1, "new": 2, "again": 3}  # a number per generation: merge shard size, tiny-model seed
USERS = ("score", "compare", "merge", "tiny_model")

CHILD = """
import os, sys, time
from pathlib import Path
from data_prep import atomic_dir
from tests.test_atomic_folders import run_user

user, point, out, inputs, generation = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]

def pause():
    print("paused", flush=True)
    time.sleep(600)

if point == "staged":  # the new folder complete in its staging sibling, the old one untouched
    real_swap_in = atomic_dir.swap_in
    def swap_in(staging, target):
        pause()
    atomic_dir.swap_in = swap_in
elif point == "exchanged":  # the new folder in place, the old one under the staging name, not yet removed
    real_exchange = atomic_dir.exchange
    def exchange(a, b):
        assert real_exchange(a, b), "this filesystem cannot exchange"
        pause()
    atomic_dir.exchange = exchange
run_user(user, out, inputs, generation)
print("finished", flush=True)
"""


# ----------------------------------------------------------------------------------------------------------------
# The users, each replacing ``out`` with a folder of one generation
# ----------------------------------------------------------------------------------------------------------------


class StandInMerger:
    """verl's ``FSDPModelMerger`` interface: writes a config naming the actor folder's generation."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def merge_and_save(self) -> None:
        generation = Path(self.config.local_dir).name
        (Path(self.config.target_dir) / "config.json").write_text(json.dumps({"generation": generation}))

    def cleanup(self) -> None:
        pass


def stand_in_merger() -> Any:
    """verl's merger modules replaced for the block (importing verl would take most of the test)."""
    base = types.ModuleType("verl.model_merger.base_model_merger")
    base.ModelMergerConfig = types.SimpleNamespace  # type: ignore[attr-defined]
    fsdp = types.ModuleType("verl.model_merger.fsdp_model_merger")
    fsdp.FSDPModelMerger = StandInMerger  # type: ignore[attr-defined]
    return mock.patch.dict(sys.modules, {base.__name__: base, fsdp.__name__: fsdp})


def stand_in_tiny_model(module: Any) -> Any:
    """The tiny model's build and warm start replaced for the block by a config naming the generation (by seed)."""
    by_seed = {seed: generation for generation, seed in GENERATIONS.items()}

    def build(directory: Path, *, seed: int, **options: Any) -> Path:
        (Path(directory) / "config.json").write_text(json.dumps({"generation": by_seed[seed]}))
        return Path(directory)

    def warm_start(directory: Path, rows: list[Any], **options: Any) -> list[float]:
        return [1.0]

    return mock.patch.multiple(module, build_tiny_qwen=build, warm_start_tiny_qwen=warm_start)


def run_user(user: str, out: Path, inputs: Path, generation: str) -> None:
    """Have ``user`` create or replace ``out`` with a folder of ``generation`` (inputs built by ``make_inputs``)."""
    if user == "score":
        request = scoring.ScoreRequest(
            responses=[str(inputs / f"{generation}.jsonl")],
            test_files=[str(inputs / "syn" / "test.parquet")],
            out=str(out),
            plots=False,
        )
        scoring.run_score(request, progress=False)
    elif user == "compare":
        compare.run_compare([str(inputs / "results_a"), str(inputs / "results_b")], str(out), names=[generation, "b"])
    elif user == "merge":
        actor = inputs / "actors" / generation
        actor.mkdir(parents=True, exist_ok=True)
        (actor / "model_world_size_1_rank_0.pt").write_bytes(b"\0" * GENERATIONS[generation])
        with stand_in_merger():
            assert models.merge_fsdp_checkpoint(actor, out)
    elif user == "tiny_model":
        module = importlib.import_module(TINY_MODEL_MODULE)
        with stand_in_tiny_model(module):
            _, built = module.prepare_warm_tiny_qwen(
                out, [], hidden_size=8, steps=1, learning_rate=0.1, seed=GENERATIONS[generation]
            )
        assert built
    else:
        raise ValueError(user)


def generation_of(user: str, out: Path) -> str:
    """The generation of a whole ``out`` of ``user`` (AssertionError when ``out`` is not whole)."""
    if user == "score":
        assert scoring.is_results_folder(out)
        summary = json.loads((out / scoring.SUMMARY_FILE).read_text())
        return Path(summary["inputs"]["responses"][0]["responses"]).stem
    if user == "compare":
        assert compare.is_compare_folder(out)
        return json.loads((out / "compare.json").read_text())["runs"][0]["name"]
    assert (out / "config.json").is_file()
    if user == "merge":
        assert (out / models.MERGED_MARKER).is_file()
    return json.loads((out / "config.json").read_text())["generation"]


def is_complete(user: str) -> Any:
    """The completeness test ``user`` gives ``atomic_dir``."""
    return {
        "score": scoring.is_results_folder,
        "compare": compare.is_compare_folder,
        "merge": lambda folder: (folder / models.MERGED_MARKER).is_file(),
        "tiny_model": lambda folder: (folder / importlib.import_module(TINY_MODEL_MODULE).WARM_START_STAMP).is_file(),
    }[user]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic test file, gold responses per generation, and two results folders to compare."""
    root = tmp_path_factory.mktemp("inputs")
    syn = generate_dataset(root / "syn", SyntheticParams(cities=3, seed=3, questions_per_city=4, render=False))
    questions = load_questions([str(syn / "test.parquet")])
    lines = [
        json.dumps({"id": q.id, "sample": 0, "response": gold_response(GroundTruth.from_json(q.ground_truth))})
        for q in questions
    ]
    for generation in GENERATIONS:
        (root / f"{generation}.jsonl").write_text("\n".join(lines) + "\n")
    for name in ("results_a", "results_b"):
        run_user("score", root / name, root, "old")
    return root


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def kill_user_at(point: str, user: str, out: Path, inputs: Path, generation: str) -> None:
    """Run ``user`` in a child that pauses at ``point`` of ``data_prep.atomic_dir``, and SIGKILL it there."""
    kill_when_paused(CHILD, user, point, str(out), str(inputs), generation)


# ----------------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------------

KILL_CASES = [
    pytest.param(user, point, marks=[pytest.mark.slow] if user == "tiny_model" else [])  # torch import: ~10 s
    for user in USERS
    for point in ("staged", "exchanged")
]


@pytest.mark.parametrize(("user", "point"), KILL_CASES)
def test_a_killed_replacement_leaves_the_old_folder_or_the_new(
    user: str, point: str, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_user(user, out, inputs, "old")
    kill_user_at(point, user, out, inputs, "new")
    assert generation_of(user, out) == {"staged": "old", "exchanged": "new"}[point]
    assert len(hidden(tmp_path)) == 1  # the killed writer's staging folder (the new folder, or the old one)

    run_user(user, out, inputs, "again")  # the next run replaces it and removes what the killed one left
    assert generation_of(user, out) == "again" and hidden(tmp_path) == []


@pytest.mark.parametrize("user", USERS)
def test_a_failed_replacement_leaves_the_old_folder(
    user: str, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    run_user(user, out, inputs, "old")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))

    def fails(staging: Path, target: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic_dir, "swap_in", fails)
    with pytest.raises(OSError, match="disk full"):
        run_user(user, out, inputs, "new")
    assert generation_of(user, out) == "old" and sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert [name for name in hidden(tmp_path) if not name.endswith(".partial")] == []


@pytest.mark.parametrize("user", USERS)
def test_a_folder_left_aside_by_a_kill_between_two_renames_is_put_back(user: str, inputs: Path, tmp_path: Path) -> None:
    """Where the filesystem cannot exchange, a replacement is two renames; a kill between them leaves only the
    backup, which the user's next run puts back (then replaces), leaving nothing beside the folder."""
    out = tmp_path / "out"
    run_user(user, out, inputs, "old")
    backup = atomic_dir.sibling_path(out, atomic_dir.BACKUP)
    backup = backup.with_name(backup.name.replace(f"-{os.getpid()}-", "-999999999-", 1))  # its writer is gone
    os.replace(out, backup)
    assert atomic_dir.clean_stale(out, is_complete=is_complete(user)) and generation_of(user, out) == "old"

    os.replace(out, backup)
    run_user(user, out, inputs, "new")
    assert generation_of(user, out) == "new" and hidden(tmp_path) == []
