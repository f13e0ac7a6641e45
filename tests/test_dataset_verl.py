"""Rows load through StagedRLHFDataset the way verl loads them, and verl's agent loop accepts the samples.

The agent-loop part runs verl's own code: ``SingleTurnAgentLoop.run`` (image extraction through the dataset class,
Continuous Token prompt building with the processor) against a fake LLM server, then the ``AgentLoopWorker``
post-processing that builds ``pixel_values``/``image_grid_thw`` and the M-RoPE position ids, then a forward pass
of the tiny model on the result.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl.protocol import DataProto
from verl.trainer.ppo.utils import create_rl_dataset
from verl.utils.dataset.rl_dataset import collate_fn, get_dataset_class

from data_prep.schema import EXTRA_INFO_KEYS
from recipe.dataset import PLAN_EXTRA_KEYS, StagedRLHFDataset, fetch_image
from tests.fixtures.agent_loop import FakeServer, run_agent_loop
from tests.fixtures.stage_data import MAX_PIXELS, make_row, png_bytes, write_rows, write_stage_file

BATCH = 4
PROMPT_LENGTH = 64
RESPONSE_LENGTH = 16
BIG = (300, 200)  # not pre-resized: 60000 pixels against a budget of MAX_PIXELS = 12544


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """verl's data defaults plus the recipe's keys; length filter on with a tiny limit (must drop nothing)."""
    import verl

    directory = tmp_path_factory.mktemp("stages")
    torf = write_stage_file(directory, "torf", 8)
    planning = write_rows(
        directory / "planning.parquet",
        [make_row("planning", 100 + i, size=BIG if i % 2 else (112, 84)) for i in range(8)],
    )
    val = write_stage_file(directory, "counting", 3, start=900, name="val")
    defaults = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/data/legacy_data.yaml")
    return OmegaConf.merge(
        defaults,
        {
            "train_files": [str(torf), str(planning)],
            "val_files": [str(val)],
            "train_batch_size": BATCH,
            "seed": 0,
            "shuffle": False,
            "filter_overlong_prompts": True,
            "max_prompt_length": 8,
            "cache_dir": str(directory / "cache"),
            "custom_cls": {"path": "pkg://recipe.dataset", "name": "StagedRLHFDataset"},
            "stages": [
                {"name": "torf", "files": [str(torf)], "epochs": 1},
                {"name": "planning", "files": [str(planning)], "epochs": 1, "shuffle": False},
            ],
        },
    )


def test_custom_cls_path_selects_the_class(config):
    assert get_dataset_class(config) is StagedRLHFDataset


def test_train_and_validation_datasets(config, tiny):
    tokenizer, processor = tiny
    train = create_rl_dataset(config.train_files, config, tokenizer, processor, is_train=True)
    val = create_rl_dataset(config.val_files, config, tokenizer, processor, is_train=False)
    assert isinstance(train, StagedRLHFDataset) and train.plan is not None and len(train) == 16
    assert isinstance(val, StagedRLHFDataset) and val.plan is None
    # filter_overlong_prompts=True with max_prompt_length=8 would drop every row; nothing is dropped
    assert len(train.dataframe) == 16 and len(val) == 3
    keys = {tuple(sample["extra_info"]) for ds in (train, val) for sample in (ds[i] for i in range(len(ds)))}
    assert keys == {(*EXTRA_INFO_KEYS, *PLAN_EXTRA_KEYS)}  # verl takes the key list from sample 0
    assert [train[i]["extra_info"]["plan_stage_name"] for i in (0, 7, 8, 15)] == ["torf"] * 2 + ["planning"] * 2
    assert val[0]["extra_info"]["plan_stage"] == -1 and val[0]["extra_info"]["plan_stage_name"] == "validation"


def test_mode_errors(config, tiny):
    tokenizer, processor = tiny
    same = OmegaConf.merge(config, {"val_files": list(config.train_files)})
    with pytest.raises(ValueError, match="train_files and data.val_files are the same files"):
        StagedRLHFDataset(same.train_files, tokenizer, same, processor)
    shuffled = OmegaConf.merge(config, {"shuffle": True})
    with pytest.raises(ValueError, match="set data.shuffle=False"):
        StagedRLHFDataset(shuffled.train_files, tokenizer, shuffled, processor)
    partial = OmegaConf.merge(config, {"train_files": [config.train_files[0]]})
    with pytest.raises(ValueError, match="must list the stage files.*planning.parquet"):
        StagedRLHFDataset(partial.train_files, tokenizer, partial, processor)


def test_fetch_image_fits_the_budget():
    image = fetch_image({"type": "image", "bytes": png_bytes(112, 84), "max_pixels": MAX_PIXELS})
    assert image.size == (112, 84)  # pre-resized: unchanged
    image = fetch_image({"type": "image", "bytes": png_bytes(*BIG), "max_pixels": MAX_PIXELS})
    assert image.size == (112, 84) and image.mode == "RGB"


def test_agent_loop_accepts_the_samples(config, tiny, tiny_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer, processor = tiny
    dataset = create_rl_dataset(config.train_files, config, tokenizer, processor, is_train=True)
    # steps 2 and 3 are the planning stage, unshuffled: pre-resized (112 x 84) and oversized images alternate
    batch = DataProto.from_single_dict(collate_fn([dataset[i] for i in range(8, 16)]))
    assert {"raw_prompt", "extra_info", "reward_model", "index"} <= set(batch.non_tensor_batch)
    answer = tokenizer.encode("Route Name: Line 1", add_special_tokens=False) + [
        tokenizer.convert_tokens_to_ids("<|im_end|>")
    ]
    server = FakeServer(answer)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_dir).eval()
    image_token = processor.image_token_id

    for i in range(len(batch)):
        kwargs = {k: v[i] for k, v in batch.non_tensor_batch.items()}
        run = run_agent_loop(kwargs, tiny, dataset, config, PROMPT_LENGTH, RESPONSE_LENGTH, server=server)
        output, input_ids, mm, position_ids = run.output, run.input_ids, run.multi_modal_inputs, run.position_ids
        (image,) = output.multi_modal_data["images"]
        assert image.size == (112, 84)  # both the pre-resized and the oversized map end inside the budget
        assert output.response_ids == answer and server.requests[-1]["image_data"] == [image]

        grid = (84 // 14, 112 // 14)
        assert mm["image_grid_thw"].tolist() == [[1, *grid]]
        assert tuple(mm["pixel_values"].shape) == (grid[0] * grid[1], 3 * 2 * 14 * 14)
        assert int((input_ids == image_token).sum()) == grid[0] * grid[1] // 4 == 12
        assert tuple(position_ids.shape) == (1, 4, PROMPT_LENGTH + RESPONSE_LENGTH)
        with torch.no_grad():
            logits = model(
                input_ids=input_ids,
                attention_mask=run.attention_mask,
                pixel_values=mm["pixel_values"],
                image_grid_thw=mm["image_grid_thw"],
            ).logits
        assert logits.shape[:2] == input_ids.shape and torch.isfinite(logits).all()


def test_module_imports_light_in_a_fresh_process(tmp_path: Path):
    """The agent loop imports the dataset class in every worker: no qwen_vl_utils, torchvision or vllm needed (the
    fresh process sees them as not installed), and neither verl's trainer nor its experimental packages load."""
    image = tmp_path / "map.png"
    image.write_bytes(png_bytes(*BIG))
    script = f"""
import json, sys
for absent in ("qwen_vl_utils", "torchvision", "vllm"):
    sys.modules[absent] = None  # import raises ImportError, as where they are not installed
from recipe.dataset import StagedRLHFDataset
messages = [{{"role": "user", "content": [{{"type": "image", "image": {str(image)!r}, "max_pixels": {MAX_PIXELS}}},
                                       {{"type": "text", "text": "How many lines?"}}]}}]
images, videos, audios = StagedRLHFDataset._process_multi_modal_info(messages, 14, {{}})
heavy = [m for m in ("verl.trainer", "verl.experimental") if m in sys.modules]
print(json.dumps({{"sizes": [i.size for i in images], "videos": videos, "heavy": heavy}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"sizes": [[112, 84]], "videos": None, "heavy": []}


def test_every_sample_has_the_same_extra_info_types(config, tiny):
    tokenizer, processor = tiny
    train = create_rl_dataset(config.train_files, config, tokenizer, processor, is_train=True)
    batch = collate_fn([train[i] for i in range(len(train))])
    types = {tuple((k, type(v).__name__) for k, v in e.items()) for e in batch["extra_info"]}
    assert len(types) == 1
    assert np.array_equal([e["plan_index"] for e in batch["extra_info"]], np.arange(len(train)))


# --- images stored once beside the Parquet files --------------------------------------------------------------


def _staged_config(data_dir: str, cache: Path) -> Any:
    """A staged data config over a prepared folder's torf and planning files, given as ``data_dir/<file>``."""
    import verl

    files = [f"{data_dir}/torf.parquet", f"{data_dir}/planning.parquet"]
    defaults = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/data/legacy_data.yaml")
    return OmegaConf.merge(
        defaults,
        {
            "train_files": files,
            "train_batch_size": BATCH,
            "seed": 0,
            "shuffle": False,
            "cache_dir": str(cache),
            "custom_cls": {"path": "pkg://recipe.dataset", "name": "StagedRLHFDataset"},
            "stages": [{"name": Path(f).stem, "files": [f], "epochs": 1, "shuffle": False} for f in files],
        },
    )


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    """A folder written by the writer: two maps (one per stage) shared by 8 rows each."""
    from data_prep.writer import write_dataset

    rows = [make_row("torf", i) for i in range(8)] + [make_row("planning", 8 + i, size=(84, 112)) for i in range(8)]
    return write_dataset(tmp_path / "shared" / "data", {"train": rows}, manifest_extra={})


def test_a_copied_folder_given_by_a_relative_path_serves_workers_in_another_cwd(
    prepared: Path, tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from data_prep.writer import read_manifest

    assert len(read_manifest(prepared)["image_files"]) == 2  # 16 rows, 2 maps, each stored once
    scratch = tmp_path / "node-local"
    shutil.copytree(prepared, scratch / "data")
    shutil.rmtree(prepared)  # only the node-local copy exists now
    monkeypatch.chdir(scratch)
    config = _staged_config("data", tmp_path / "cache")  # relative to the driver's cwd
    tokenizer, processor = tiny
    dataset = create_rl_dataset(config.train_files, config, tokenizer, processor, is_train=True)
    samples = [dataset[i] for i in (0, 8)]

    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # an agent-loop worker: another working directory, the same node
    answer = tokenizer.encode("yes", add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    for sample, size in zip(samples, [(112, 84), (84, 112)], strict=True):
        (item,) = [c for c in sample["raw_prompt"][0]["content"] if c["type"] == "image"]
        assert set(item) == {"type", "image", "min_pixels", "max_pixels"}  # a path travels, not the PNG
        assert Path(item["image"]).is_absolute() and Path(item["image"]).parent == scratch / "data" / "images"
        run = run_agent_loop(sample, tiny, dataset, config, PROMPT_LENGTH, RESPONSE_LENGTH, answer_ids=answer)
        (image,) = run.output.multi_modal_data["images"]
        assert image.size == size


def test_a_folder_copied_without_its_images_fails_naming_the_image(prepared: Path, tmp_path: Path, tiny) -> None:
    from data_prep.images import ImageError

    parquet_only = tmp_path / "parquet-only"
    parquet_only.mkdir()
    for name in ("torf.parquet", "planning.parquet"):
        (parquet_only / name).write_bytes((prepared / name).read_bytes())
    config = _staged_config(str(parquet_only), tmp_path / "cache")
    tokenizer, processor = tiny
    dataset = create_rl_dataset(config.train_files, config, tokenizer, processor, is_train=True)
    with pytest.raises(
        ImageError, match=r"row torf-0: images\[0\]: image 'images/[0-9a-f]{64}\.png' not found"
    ) as info:
        dataset[0]
    assert str(parquet_only) in str(info.value) and "copy the whole prepared folder" in str(info.value)


def test_rows_embedding_bytes_still_load(tmp_path: Path, tiny) -> None:
    """Folders written before the images/ layout embed the PNG in every row; they still serve samples."""
    import pyarrow.parquet as pq

    legacy = write_stage_file(tmp_path, "torf", 4)
    assert pq.read_table(legacy).to_pylist()[0]["images"][0]["bytes"]  # the PNG is in the row
    tokenizer, processor = tiny
    config = OmegaConf.create({"cache_dir": str(tmp_path / "cache"), "filter_overlong_prompts": False})
    dataset = StagedRLHFDataset(str(legacy), tokenizer, config, processor)
    (item,) = [c for c in dataset[0]["raw_prompt"][0]["content"] if c["type"] == "image"]
    (image,), _, _ = StagedRLHFDataset._process_multi_modal_info(dataset[0]["raw_prompt"], 14, config)
    assert image.size == (112, 84)
