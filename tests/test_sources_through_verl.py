"""The real output of both data-preparation paths loads through verl the same way.

``data_prep.synthetic.generate_dataset`` and ``data_prep.reasonmap.main`` (on a tiny local copy in the official
ReasonMap-Train schema) each write a dataset folder; for each folder the stage files go through
``StagedRLHFDataset`` (verl's ``data.custom_cls``), verl's ``collate_fn``, and, for one sample of every question
type, verl's agent-loop multimodal preprocessing (``SingleTurnAgentLoop.run`` against the fake server of
``tests/fixtures/agent_loop.py``, then the ``AgentLoopWorker`` post-processing into ``pixel_values``,
``image_grid_thw`` and M-RoPE position ids) with the tiny offline Qwen2.5-VL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from omegaconf import DictConfig, OmegaConf
from verl.protocol import DataProto
from verl.trainer.ppo.utils import create_rl_dataset
from verl.utils.dataset.rl_dataset import collate_fn

from data_prep import reasonmap, synthetic
from data_prep.image_files import open_row_image
from data_prep.images import smart_resize_dims
from data_prep.schema import EXTRA_INFO_KEYS
from data_prep.writer import read_manifest
from recipe.dataset import PLAN_EXTRA_KEYS, StagedRLHFDataset
from tests.fixtures.agent_loop import run_agent_loop
from tests.test_reasonmap_prep import NETWORK, _map_png, _write_jsonl, train_records

SOURCES = ("synthetic", "reasonmap")
DATA_SOURCE = {"synthetic": "synthetic", "reasonmap": "reasonmap_train"}
MAX_PIXELS = 28 * 28 * 64  # small maps: a few dozen image tokens per prompt
MIN_PIXELS = 4 * 28 * 28
FIGURE_SIZE = (300, 180)  # 54000 pixels: the conversion has to downscale it into MAX_PIXELS
PROMPT_LENGTH = 512  # the longest synthetic planning prompt with its image tokens fits
RESPONSE_LENGTH = 16
ALL_TYPES = {"TorF1", "TorF2", "Counting1", "Counting2", "Counting3", "planning"}
# per source: its data config, its training dataset, and all its samples through verl's collate_fn
Loaded = dict[str, tuple[DictConfig, StagedRLHFDataset, dict[str, Any]]]


def _official_copy(root: Path) -> tuple[list[str], Path]:
    """A local ReasonMap-Train copy (jsonl, relative ``figure``/``json`` paths): the prep argv and its --out."""
    (root / "stations" / "testland").mkdir(parents=True)
    (root / "maps" / "testland").mkdir(parents=True)
    (root / "stations" / "testland" / "toy.json").write_text(json.dumps(NETWORK), encoding="utf-8")
    (root / "maps" / "testland" / "toy.png").write_bytes(_map_png(FIGURE_SIZE))
    source = _write_jsonl(root / "ReasonMap-Train.jsonl", train_records())
    out = root / "prepared"
    budget = ["--min-pixels", str(MIN_PIXELS), "--max-pixels", str(MAX_PIXELS)]
    return ["--out", str(out), "--source", f"train={source}", "--stations-root", str(root), *budget], out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both prep paths' output folders."""
    root = tmp_path_factory.mktemp("sources")
    params = synthetic.SyntheticParams(
        cities=2, seed=3, questions_per_city=16, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS
    )
    synth = synthetic.generate_dataset(root / "synthetic", params)
    argv, official = _official_copy(root / "official")
    assert reasonmap.main(argv) == 0
    return {"synthetic": synth, "reasonmap": official}


def _config(folder: Path) -> DictConfig:
    """verl's data defaults plus the recipe's keys, one curriculum stage per stage file in the manifest."""
    import verl

    stage_files = [str(folder / name) for name in read_manifest(folder)["stages"]]
    defaults = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/data/legacy_data.yaml")
    return OmegaConf.merge(
        defaults,
        {
            "train_files": stage_files,
            "train_batch_size": 1,  # every row is planned: the smallest stage has a single row
            "seed": 0,
            "shuffle": False,
            "cache_dir": str(folder.parent / f"{folder.name}_cache"),
            "custom_cls": {"path": "pkg://recipe.dataset", "name": "StagedRLHFDataset"},
            "stages": [{"name": Path(f).stem, "files": [f], "epochs": 1, "shuffle": False} for f in stage_files],
        },
    )


def _stored_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    """source_id -> (width, height) of the PNG stored in the row, over every stage file."""
    sizes: dict[str, tuple[int, int]] = {}
    for name in read_manifest(folder)["stages"]:
        for row in pq.read_table(folder / name, columns=["images", "extra_info"]).to_pylist():
            with open_row_image(row["images"][0], data_dir=folder, where=name) as image:
                sizes[row["extra_info"]["source_id"]] = image.size
    return sizes


@pytest.fixture(scope="module")
def loaded(prepared: dict[str, Path], tiny: tuple[Any, Any]) -> Loaded:
    """Per source: its config, its training StagedRLHFDataset and the collated batch of all its samples."""
    tokenizer, processor = tiny
    out: Loaded = {}
    for source, folder in prepared.items():
        config = _config(folder)
        dataset = create_rl_dataset(config.train_files, config, tokenizer, processor, is_train=True)
        out[source] = (config, dataset, collate_fn([dataset[i] for i in range(len(dataset))]))
    return out


@pytest.mark.parametrize("source", SOURCES)
def test_stage_files_load_and_collate(source: str, prepared: dict[str, Path], loaded: Loaded) -> None:
    _, dataset, batch = loaded[source]
    manifest = read_manifest(prepared[source])
    assert isinstance(dataset, StagedRLHFDataset) and dataset.plan is not None
    assert len(dataset) == manifest["counts"]["train"]["rows"] == len(batch["extra_info"])
    assert {"raw_prompt", "extra_info", "reward_model", "index", "data_source"} <= set(batch)
    assert set(batch["data_source"]) == {DATA_SOURCE[source]}
    assert [e["plan_stage_name"] for e in batch["extra_info"]] == [e["stage"] for e in batch["extra_info"]]
    assert {e["question_type"] for e in batch["extra_info"]} == ALL_TYPES  # both paths cover every type
    source_ids = [e["source_id"] for e in batch["extra_info"]]
    assert len(set(source_ids)) == len(source_ids) and set(source_ids) == set(_stored_sizes(prepared[source]))


def test_extra_info_is_the_same_across_samples_and_sources(loaded: Loaded) -> None:
    layouts = {
        source: {tuple((k, type(v).__name__) for k, v in e.items()) for e in batch["extra_info"]}
        for source, (_, _, batch) in loaded.items()
    }
    expected = (*EXTRA_INFO_KEYS, *PLAN_EXTRA_KEYS)
    for source, layout in layouts.items():
        assert len(layout) == 1, f"{source}: extra_info keys or types differ between samples"
        assert tuple(k for k, _ in next(iter(layout))) == expected  # verl takes the key list from sample 0
    assert layouts["synthetic"] == layouts["reasonmap"]
    assert {s: set(batch["data_source"]) for s, (_, _, batch) in loaded.items()} == {
        "synthetic": {"synthetic"},
        "reasonmap": {"reasonmap_train"},
    }


@pytest.mark.parametrize("source", SOURCES)
def test_agent_loop_preprocesses_every_question_type(
    source: str,
    prepared: dict[str, Path],
    loaded: Loaded,
    tiny: tuple[Any, Any],
) -> None:
    config, dataset, collated = loaded[source]
    batch = DataProto.from_single_dict(collated)
    stored = _stored_sizes(prepared[source])
    first_of_type: dict[str, int] = {}
    for i, extra in enumerate(batch.non_tensor_batch["extra_info"]):
        first_of_type.setdefault(extra["question_type"], i)
    assert set(first_of_type) == ALL_TYPES
    tokenizer, processor = tiny
    image_token = processor.image_token_id
    answer = tokenizer.encode("Yes", add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    for qtype, i in sorted(first_of_type.items()):
        sample = {k: v[i] for k, v in batch.non_tensor_batch.items()}
        width, height = stored[sample["extra_info"]["source_id"]]
        assert width % 28 == 0 and height % 28 == 0 and MIN_PIXELS <= width * height <= MAX_PIXELS
        run = run_agent_loop(sample, tiny, dataset, config, PROMPT_LENGTH, RESPONSE_LENGTH, answer_ids=answer)
        output, input_ids, mm, position_ids = run.output, run.input_ids, run.multi_modal_inputs, run.position_ids
        assert len(output.prompt_ids) <= PROMPT_LENGTH
        (image,) = output.multi_modal_data["images"]
        assert image.size == (width, height), f"{source} {qtype}: the stored map was resized again"
        grid = (height // 14, width // 14)
        assert mm["image_grid_thw"].tolist() == [[1, *grid]], f"{source} {qtype}"
        assert tuple(mm["pixel_values"].shape) == (grid[0] * grid[1], 3 * 2 * 14 * 14)
        assert int((input_ids == image_token).sum()) == grid[0] * grid[1] // 4, f"{source} {qtype}"
        assert tuple(position_ids.shape) == (1, 4, PROMPT_LENGTH + RESPONSE_LENGTH)
    if source == "reasonmap":  # the official figure was downscaled by the conversion, not by the agent loop
        assert set(stored.values()) == {smart_resize_dims(*FIGURE_SIZE, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)}
