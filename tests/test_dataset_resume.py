"""Exact resume of StagedRLHFDataset through verl's StatefulDataLoader, and refusal of a changed stage plan.

The dataloader is built as verl's trainers build it: ``create_rl_sampler`` (SequentialSampler for
``data.shuffle=False``), verl's ``collate_fn``, ``drop_last=True``, batch ``data.train_batch_size``; its state goes
through ``torch.save``/``torch.load`` like ``global_step_N/data.pt``.
"""

from __future__ import annotations

import gc
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torchdata.stateful_dataloader import StatefulDataLoader
from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler
from verl.utils.dataset.rl_dataset import collate_fn

from recipe.dataset import StagedRLHFDataset
from recipe.plan_record import DataloaderStateError, StagePlanMismatchError, dataloader_state_for
from tests.fixtures.stage_data import write_stage_file

BATCH = 4


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("stages")
    sizes = {"torf": 10, "counting": 7, "planning": 9}
    paths = {s: str(write_stage_file(directory, s, n, start=100 * i)) for i, (s, n) in enumerate(sizes.items())}
    paths["val"] = str(write_stage_file(directory, "planning", 3, start=900, name="val"))
    return paths


def data_config(files: dict[str, str], tmp_path: Path, *, seed: int = 3, stages: bool = True) -> Any:
    """verl's data defaults plus the recipe's keys (stage boundaries at steps 0, 2, 4; 10 steps)."""
    import verl

    defaults = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/data/legacy_data.yaml")
    recipe = {
        "train_files": [files["torf"], files["counting"], files["planning"]],
        "val_files": [files["val"]],
        "train_batch_size": BATCH,
        "seed": seed,
        "shuffle": False,
        "filter_overlong_prompts": True,
        "cache_dir": str(tmp_path / "cache"),
        "custom_cls": {"path": "pkg://recipe.dataset", "name": "StagedRLHFDataset"},
        "stages": [
            {"name": "torf", "files": [files["torf"]], "epochs": 1},
            {"name": "counting", "files": [files["counting"]], "epochs": 1.5},
            {"name": "planning", "files": [files["planning"]], "epochs": 2, "replay": 0.25},
        ]
        if stages
        else None,
    }
    return OmegaConf.merge(defaults, recipe)


def make_loader(config: Any, tiny: tuple[Any, Any], num_workers: int) -> StatefulDataLoader:
    """The train dataloader exactly as verl's trainers construct it."""
    tokenizer, processor = tiny
    dataset = create_rl_dataset(config.train_files, config, tokenizer, processor, is_train=True)
    return StatefulDataLoader(
        dataset=dataset,
        batch_size=config.get("gen_batch_size") or config.train_batch_size,
        num_workers=num_workers,
        drop_last=True,
        collate_fn=collate_fn,
        sampler=create_rl_sampler(config, dataset),
    )


def batch_ids(batch: dict) -> list[tuple[int, int, int]]:
    """(plan position, row index, plan stage) of each sample in a collated batch."""
    return [(e["plan_index"], e["index"], e["plan_stage"]) for e in batch["extra_info"]]


def run(loader: StatefulDataLoader, steps: int | None = None) -> list[list[tuple[int, int, int]]]:
    out = []
    for batch in loader:
        out.append(batch_ids(batch))
        if steps is not None and len(out) == steps:
            break
    return out


def test_loader_serves_the_plan(files, tiny, tmp_path: Path):
    config = data_config(files, tmp_path)
    loader = make_loader(config, tiny, num_workers=0)
    dataset = loader.dataset
    assert isinstance(dataset, StagedRLHFDataset) and dataset.plan is not None
    assert dataset.plan.boundaries == (0, 2, 4) and len(loader) == dataset.plan.total_steps == 10
    batches = run(loader)
    assert [ids[0][0] for ids in batches] == [BATCH * k for k in range(10)]
    for step, ids in enumerate(batches):
        assert {stage for _, _, stage in ids} == {dataset.plan.stage_at_step(step)[0]}
        assert [row for _, row, _ in ids] == [
            dataset.dataframe[int(r)]["extra_info"]["index"] for r in dataset.plan.order[step * BATCH :][:BATCH]
        ]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_exact_across_stage_boundaries(files, tiny, tmp_path: Path, num_workers: int):
    config = data_config(files, tmp_path)
    reference = run(make_loader(config, tiny, num_workers))
    total = len(reference)
    boundaries = make_loader(config, tiny, 0).dataset.plan.boundaries[1:]
    cuts = sorted({c for b in boundaries for c in (b - 1, b, b + 1)} | set(random.Random(0).sample(range(1, total), 3)))
    for cut in cuts:
        first = make_loader(config, tiny, num_workers)
        head = run(first, steps=cut)
        path = tmp_path / f"global_step_{cut}" / "data.pt"
        os.makedirs(path.parent, exist_ok=True)
        torch.save(first.state_dict(), path)  # what verl writes at a checkpoint
        del first

        resumed = make_loader(config, tiny, num_workers)  # a fresh process would build a fresh one
        resumed.load_state_dict(torch.load(path, weights_only=False))
        tail = run(resumed)
        assert head + tail == reference, f"resume after step {cut} lost or repeated samples"


# One worker is enough for the worker path: torchdata then needs ~5 s per worker to shut the failed iterator down.
@pytest.mark.parametrize("num_workers", [0, 1])
def test_dataset_state_refuses_a_changed_plan(files, tiny, tmp_path: Path, num_workers: int):
    first = make_loader(data_config(files, tmp_path, seed=3), tiny, num_workers)
    run(first, steps=3)
    state = first.state_dict()
    del first

    changed = make_loader(data_config(files, tmp_path, seed=4), tiny, num_workers)
    changed.load_state_dict(state)
    with pytest.raises(
        StagePlanMismatchError, match="the stage plan changed since this checkpoint was written: .*seed 3 -> 4"
    ):
        next(iter(changed))
    del changed
    gc.collect()  # shut the failed workers down here (torchdata waits ~5 s per worker), not in the next test


def test_dataset_state_carries_the_fingerprint(files, tiny, tmp_path: Path):
    loader = make_loader(data_config(files, tmp_path), tiny, num_workers=0)
    state = loader.dataset.state_dict()
    assert state["stage_plan"]["fingerprint"] == loader.dataset.plan.fingerprint
    loader.dataset.load_state_dict(state)  # its own state is accepted


def test_plain_dataset_refuses_a_staged_checkpoint(files, tiny, tmp_path: Path):
    staged = make_loader(data_config(files, tmp_path), tiny, num_workers=0)
    run(staged, steps=2)
    state = staged.state_dict()
    plain = make_loader(data_config(files, tmp_path, stages=False), tiny, num_workers=0)
    assert plain.dataset.plan is None
    plain.load_state_dict(state)
    with pytest.raises(StagePlanMismatchError, match="written with data.stages, the current config has none"):
        next(iter(plain))


# --- resume anywhere: another path for the same data, another worker count -----------------------------------------


def test_resume_on_a_copy_of_the_data_at_another_path(files, tiny, tmp_path: Path, monkeypatch):
    """Node-local scratch: the same files copied elsewhere and named relatively continue the checkpoint exactly."""
    import shutil

    config = data_config(files, tmp_path)
    reference = run(make_loader(config, tiny, 0))
    first = make_loader(config, tiny, 0)
    head = run(first, steps=5)
    state = first.state_dict()
    scratch = tmp_path / "node-local"
    (scratch / "data").mkdir(parents=True)
    for name in ("torf", "counting", "planning", "val"):
        shutil.copy(files[name], scratch / "data" / Path(files[name]).name)
    monkeypatch.chdir(scratch)
    copied = {name: f"data/{Path(path).name}" for name, path in files.items()}
    resumed = make_loader(data_config(copied, tmp_path), tiny, 0)
    resumed.load_state_dict(state)
    assert head + run(resumed) == reference


def test_resume_refuses_a_stage_file_rewritten_with_as_many_other_rows(files, tiny, tmp_path: Path):
    import shutil

    own = {name: str(shutil.copy(path, tmp_path / Path(path).name)) for name, path in files.items()}
    first = make_loader(data_config(own, tmp_path), tiny, 0)
    run(first, steps=2)
    state = first.state_dict()
    write_stage_file(tmp_path, "counting", 7, start=500)  # 7 rows again, other rows
    changed = make_loader(data_config(own, tmp_path), tiny, 0)
    changed.load_state_dict(state)
    with pytest.raises(StagePlanMismatchError, match=r"stage 'counting' files \[.*counting.parquet \(7 rows, sha256"):
        next(iter(changed))


@pytest.mark.parametrize(("saved_workers", "resumed_workers"), [(0, 2), (2, 0), (2, 1)])
def test_resume_continues_exactly_when_the_worker_count_changes(
    files, tiny, tmp_path: Path, saved_workers: int, resumed_workers: int
):
    config = data_config(files, tmp_path)
    reference = run(make_loader(config, tiny, 0))
    first = make_loader(config, tiny, saved_workers)
    head = run(first, steps=5)  # past the stage boundary at step 4
    path = tmp_path / "global_step_5" / "data.pt"
    path.parent.mkdir()
    torch.save(first.state_dict(), path)
    del first
    state = torch.load(path, weights_only=False)

    as_saved = make_loader(config, tiny, resumed_workers)
    as_saved.load_state_dict(state)
    with pytest.raises((AssertionError, KeyError)):  # what torchdata does with another worker count
        next(iter(as_saved))
    del as_saved
    gc.collect()

    resumed = make_loader(config, tiny, resumed_workers)
    resumed.load_state_dict(dataloader_state_for(state, num_workers=resumed_workers))
    assert head + run(resumed) == reference


def test_a_converted_state_still_refuses_a_changed_plan(files, tiny, tmp_path: Path):
    first = make_loader(data_config(files, tmp_path, seed=3), tiny, 0)
    run(first, steps=3)
    state = dataloader_state_for(first.state_dict(), num_workers=1)
    changed = make_loader(data_config(files, tmp_path, seed=4), tiny, 1)
    changed.load_state_dict(state)
    with pytest.raises(StagePlanMismatchError, match="seed 3 -> 4"):
        next(iter(changed))
    del changed
    gc.collect()


def test_a_state_that_cannot_convert_exactly_is_refused_naming_both_counts(files, tiny, tmp_path: Path):
    loader = make_loader(data_config(files, tmp_path), tiny, 2)
    run(loader, steps=3)
    state = loader.state_dict()
    del loader
    gc.collect()
    assert dataloader_state_for(state, num_workers=2) == state  # same count: as saved
    stale = {**state, "_steps_since_snapshot": 2}  # a snapshot taken two steps before the checkpoint
    with pytest.raises(DataloaderStateError, match=r"dataloader_num_workers changed .*: 2 -> 0.*=2"):
        dataloader_state_for(stale, num_workers=0)


def test_the_trainer_reshapes_the_restored_state_for_its_worker_count(files, tiny, tmp_path: Path, monkeypatch):
    """recipe.trainer's _load_checkpoint hook, after verl's own restored data.pt into the loader."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    from recipe.plan_record import write_plan_record
    from recipe.trainer import RewardMapTrainer

    config = data_config(files, tmp_path)
    reference = run(make_loader(config, tiny, 0))
    first = make_loader(config, tiny, 2)
    head = run(first, steps=5)
    state = first.state_dict()
    folder = tmp_path / "ckpt" / "global_step_5"
    write_plan_record(folder, first.dataset.plan)
    del first
    gc.collect()

    trainer = RewardMapTrainer.__new__(RewardMapTrainer)
    trainer.config = OmegaConf.create({"trainer": {"default_local_dir": str(tmp_path / "ckpt"), "resume_mode": "auto"}})
    trainer.train_dataloader = make_loader(config, tiny, 0)
    trainer.train_dataset = trainer.train_dataloader.dataset

    def verl_load(self):  # what verl's _load_checkpoint does with global_step_5/data.pt
        self.global_steps = 5
        self.train_dataloader.load_state_dict(state)

    monkeypatch.setattr(PPOTrainer, "_load_checkpoint", verl_load)
    trainer._load_checkpoint()
    assert head + run(trainer.train_dataloader) == reference
