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
from recipe.plan_record import StagePlanMismatchError
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
