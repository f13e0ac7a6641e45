"""End to end on CPU with the tiny Qwen2.5-VL: generate -> score -> compare, and a verl FSDP checkpoint evaluated.

The tiny model (random weights) answers nothing right; what is checked is the pipeline: prompts and images through
the training dataset's reader, responses for every question, a results folder holding both rule sets and the
paper's rows, a comparison with a second folder, the plots, and a checkpoint in the layout verl's
``FSDPCheckpointManager`` writes merged by verl's own model merger before generating.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from data_prep.synthetic import SyntheticParams, generate_dataset
from data_prep.writer import write_dataset
from recipe.evaluate.cli import main
from recipe.evaluate.files import read_jsonl
from recipe.evaluate.models import MERGED_NAME
from recipe.evaluate.testset import load_questions
from reward_fns.gold import gold_response
from reward_fns.ground_truth import GroundTruth
from tests.test_evaluate import benchmark_rows

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_split(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A small prepared test split (rendered maps at a tiny pixel budget) plus hand-built benchmark rows."""
    root = tmp_path_factory.mktemp("e2e_data")
    synthetic = generate_dataset(
        root / "syn", SyntheticParams(cities=3, seed=1, questions_per_city=8, max_pixels=4 * 3136)
    )
    bench = write_dataset(root / "bench", {"test": benchmark_rows()}, manifest_extra={"generator": "test"})
    return [str(synthetic / "test.parquet"), str(bench / "test.parquet")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_fsdp_checkpoint(model_dir: Path, checkpoint_root: Path, step: int = 2) -> Path:
    """The tiny model saved by verl's FSDPCheckpointManager (FSDP2, one gloo rank on CPU) as a trainer saves it."""
    import torch
    import torch.distributed as dist
    from omegaconf import DictConfig
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    started = not dist.is_initialized()
    if started:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(_free_port())
        dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        processor = AutoProcessor.from_pretrained(model_dir)
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
        fully_shard(model, mesh=init_device_mesh("cpu", (1,), mesh_dim_names=("fsdp",)))
        manager = FSDPCheckpointManager(
            model,
            optimizer=None,
            lr_scheduler=None,
            processing_class=processor,
            checkpoint_config=DictConfig({"save_contents": ["model"], "load_contents": ["model"]}),
        )
        actor = checkpoint_root / f"global_step_{step}" / "actor"
        actor.mkdir(parents=True)
        manager.save_checkpoint(str(actor), global_step=step)
        (checkpoint_root / "latest_checkpointed_iteration.txt").write_text(str(step))
    finally:
        if started:
            dist.destroy_process_group()
    return actor


def _generate(model: str, tests: list[str], out: Path, *extra: str) -> None:
    argv = ["generate", "--model", model, "--test", *tests, "--out", str(out), "--backend", "transformers"]
    assert main([*argv, "--max-new-tokens", "12", "--batch-size", "8", "--no-progress", *extra]) == 0


def test_generate_score_compare_on_cpu(tiny_dir: Path, small_split: list[str], tmp_path: Path) -> None:
    responses = tmp_path / "tiny.jsonl"
    _generate(str(tiny_dir), small_split, responses)
    questions = load_questions(small_split)
    records = [r for _, r in read_jsonl(responses).records]
    assert sorted(r["id"] for r in records) == sorted(q.id for q in questions)
    assert all(isinstance(r["response"], str) and r["finish_reason"] in ("stop", "length") for r in records)

    results = tmp_path / "tiny_results"
    argv = ["score", "--responses", str(responses), "--test", *small_split, "--out", str(results), "--no-progress"]
    assert main(argv) == 0
    report = (results / "report.md").read_text()
    for text in ("`released`", "`fixed`", "`vlmevalkit`", "paper, Qwen2.5-VL-7B: base model", "13.28", "Coverage"):
        assert text in report
    summary = json.loads((results / "summary.json").read_text())
    assert summary["coverage"]["reasonmap"]["answered"] == 2
    assert summary["inputs"]["responses"][0]["model"] == str(tiny_dir)
    for name in ("accuracy_by_difficulty.png", "plus_per_type.png"):
        assert (results / name).read_bytes()[:8] == PNG

    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        "".join(
            json.dumps({"id": q.id, "sample": 0, "response": gold_response(GroundTruth.from_json(q.ground_truth))})
            + "\n"
            for q in questions
        )
    )
    gold_results = tmp_path / "gold_results"
    argv = ["score", "--responses", str(gold), "--test", *small_split, "--out", str(gold_results), "--no-plots"]
    assert main(argv) == 0
    compared = tmp_path / "compare"
    assert main(["compare", str(results), str(gold_results), "--out", str(compared), "--names", "tiny,gold"]) == 0
    table = (compared / "compare.md").read_text()
    assert "| gold | `fixed` | 100.00 | 100.00 | 100.00 |" in table
    assert (compared / "comparison.png").read_bytes()[:8] == PNG


def test_a_verl_checkpoint_is_merged_and_evaluated(tiny_dir: Path, small_split: list[str], tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    actor = write_fsdp_checkpoint(tiny_dir, tmp_path / "checkpoints")
    assert sorted(p.name for p in actor.iterdir()) == [
        "fsdp_config.json",
        "huggingface",
        "model_world_size_1_rank_0.pt",
    ]
    responses = tmp_path / "ckpt.jsonl"
    _generate(str(tmp_path / "checkpoints"), small_split, responses, "--limit", "3")
    merged = actor / MERGED_NAME
    meta = json.loads(Path(str(responses) + ".meta.json").read_text())
    assert meta["resolved_model"] == {
        "path": str(merged),
        "source": "verl_checkpoint",
        "checkpoint": str(actor),
        "merged": True,
    }
    assert len(read_jsonl(responses).records) == 3
    original = load_file(str(tiny_dir / "model.safetensors"))
    restored = load_file(str(merged / "model.safetensors"))
    common = set(original) & set(restored)
    assert len(common) >= len(original) - 1  # the tied lm_head may be dropped
    for key in common:  # verl's merger writes bfloat16
        torch.testing.assert_close(restored[key].float(), original[key].float(), atol=1e-2, rtol=1e-2)
    stamp = (merged / "model.safetensors").stat().st_mtime_ns
    _generate(str(actor.parent), small_split, tmp_path / "again.jsonl", "--limit", "1")  # the merge is reused
    assert (merged / "model.safetensors").stat().st_mtime_ns == stamp
