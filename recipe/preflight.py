"""Pre-flight: every check that can fail a run, done in seconds on a laptop before any Ray worker starts.

Checks, in order: the config passes verl's own validation; every data file exists and its rows match the
schema; the stage plan is consistent with the batch size and step settings; each checked prompt (map image
plus question) fits ``data.max_prompt_length``; the reward manager gives gold answers full marks and junk
none. Checks that need the model's processor say plainly when it cannot be loaded, and the rest still run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from data_prep.image_files import open_row_image, resolve_row_images
from data_prep.images import IMAGE_FACTOR
from data_prep.schema import RowError, validate_row
from reward_fns.gold import gold_response
from reward_fns.ground_truth import GroundTruth

JUNK_RESPONSE = "I am not sure. Route Name: nowhere\n\\boxed{maybe}"


class PreflightError(RuntimeError):
    """A run that would fail: the message says which check and why."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)
    plan_table: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def render(self) -> str:
        lines = ["RewardMap pre-flight"]
        for c in self.checks:
            lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        if self.plan_table:
            lines += ["", self.plan_table]
        return "\n".join(lines)


@dataclass
class SampleRow:
    """One row read back from a data file for the checks below."""

    file: str
    index: int
    row: dict[str, Any]
    gt: GroundTruth


def run_preflight(config: DictConfig) -> PreflightReport:
    """Run every check; the report lists each with its outcome (``report.ok`` is False on any failure)."""
    report = PreflightReport()
    _check_verl_config(config, report)
    samples = _check_data_files(config, report)
    _check_stage_plan(config, report)
    tokenizer, processor = _load_processor(config, report)
    _check_prompt_budget(config, samples, processor, report)
    _check_reward(config, samples, tokenizer, report)
    return report


# -- config ------------------------------------------------------------------------------------------------
def _check_verl_config(config: DictConfig, report: PreflightReport) -> None:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    import recipe.advantage  # noqa: F401  (registers the recipe's estimator, as the task runner does)

    try:
        validate_config(
            config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
        )
    except Exception as err:  # verl raises AssertionError/ValueError with its own message
        report.add("verl config", False, f"{type(err).__name__}: {err}")
        return
    problems = []
    if int(config.trainer.total_epochs) != 1:
        problems.append("trainer.total_epochs must be 1: epochs are set per stage in data.stages")
    if config.data.shuffle:
        problems.append("data.shuffle must be false: the stage plan fixes the order")
    if not config.trainer.get("use_v1", True):
        problems.append(
            "trainer.use_v1 must be true: verl deprecates the legacy trainer, and it has no hook for the "
            "recipe's trainer mode (stage records, per-step reward metrics)"
        )
    report.add("verl config", not problems, "; ".join(problems) or "composes and passes verl's validate_config")


# -- data ------------------------------------------------------------------------------------------------------
def _data_files(config: DictConfig) -> list[str]:
    files: list[str] = []
    for stage in config.data.stages:
        files += [str(f) for f in stage.files]
    val = config.data.get("val_files")
    if val:
        files += [str(f) for f in ([val] if isinstance(val, str) else val)]
    return list(dict.fromkeys(files))


def _check_data_files(config: DictConfig, report: PreflightReport) -> list[SampleRow]:
    n_rows = int(config.rewardmap.preflight_rows)
    samples: list[SampleRow] = []
    problems = []
    files = _data_files(config)
    for file in files:
        path = Path(os.path.expanduser(file))
        if not path.is_file():
            problems.append(f"{file}: not found")
            continue
        try:
            table = pq.read_table(path)
        except Exception as err:
            problems.append(f"{file}: not a readable Parquet file ({err})")
            continue
        if table.num_rows == 0:
            problems.append(f"{file}: no rows")
            continue
        rows = table.slice(0, n_rows).to_pylist()
        for i, row in enumerate(rows):
            try:
                gt = validate_row(row, where=f"{file} row {i}")
                row = resolve_row_images(row, [path.parent], where=f"{file} row {i}")  # stored paths made absolute
            except RowError as err:
                problems.append(str(err))
                break
            samples.append(SampleRow(file=file, index=i, row=row, gt=gt))
    detail = "; ".join(problems) if problems else f"{len(files)} files, {len(samples)} rows match the row schema"
    report.add("data files", not problems, detail)
    return samples


def _check_stage_plan(config: DictConfig, report: PreflightReport) -> None:
    from recipe.stages import build_plan

    try:
        plan = build_plan(
            OmegaConf.to_container(config.data.stages, resolve=True),
            batch_size=int(config.data.train_batch_size),
            seed=int(config.data.seed),
        )
    except (ValueError, FileNotFoundError, KeyError) as err:
        report.add("stage plan", False, str(err))
        return
    set_steps = config.trainer.get("total_training_steps")
    if set_steps is not None and int(set_steps) > plan.total_steps:
        report.add(
            "stage plan",
            False,
            f"trainer.total_training_steps={set_steps} exceeds the plan's {plan.total_steps} steps",
        )
        return
    report.plan_table = plan.describe()
    report.add("stage plan", True, f"{plan.total_steps} steps of {config.data.train_batch_size} prompts")


# -- processor ---------------------------------------------------------------------------------------------
def _load_processor(config: DictConfig, report: PreflightReport) -> tuple[Any, Any]:
    """The model's tokenizer and processor, or a tiny local model's with ``preflight_tiny_model``; or Nones."""
    from verl.utils import hf_processor, hf_tokenizer

    model_path = str(config.actor_rollout_ref.model.path)
    if config.rewardmap.preflight_tiny_model:
        from recipe.tiny_model import build_tiny_qwen

        model_path = str(build_tiny_qwen(Path(os.path.expanduser(config.rewardmap.cache_dir)) / "tiny_qwen2_5_vl"))
        source = f"tiny local Qwen2.5-VL at {model_path} (--tiny-model)"
    else:
        source = model_path
    try:
        local = model_path if Path(os.path.expanduser(model_path)).exists() else _local_hub_snapshot(model_path)
        tokenizer = hf_tokenizer(local)
        processor = hf_processor(local)
    except Exception as err:
        report.add(
            "model processor",
            True,
            f"SKIPPED: cannot load the processor of {model_path} ({type(err).__name__}); the prompt-length and "
            "reward-manager checks below use estimates. Download the model, or add --tiny-model to run them "
            "against a tiny local model.",
        )
        return None, None
    if processor is None:
        report.add("model processor", False, f"{source} has no image processor: not a vision-language model")
        return tokenizer, None
    report.add("model processor", True, f"loaded from {source}")
    return tokenizer, processor


def _local_hub_snapshot(repo_id: str) -> str:
    """Path of an already downloaded hub model; raises when absent (the pre-flight never downloads)."""
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, local_files_only=True)


# -- prompt budget -----------------------------------------------------------------------------------------
def _check_prompt_budget(config: DictConfig, samples: list[SampleRow], processor: Any, report: PreflightReport) -> None:
    limit = int(config.data.max_prompt_length)
    worst, worst_where, problems = 0, "", []
    for s in samples:
        image_info = s.row["images"][0]
        with open_row_image(image_info, where=f"{s.file} row {s.index}") as im:
            width, height = im.size
        if width * height > int(image_info["max_pixels"]) * 1.01:
            problems.append(f"{s.file} row {s.index}: image {width}x{height} exceeds its max_pixels budget")
        if processor is not None:
            length = _prompt_tokens(processor, s.row)
        else:  # estimate: one token per 28x28 pixels, at most one per character of text
            text = "".join(str(m["content"]) for m in s.row["prompt"])
            length = (width * height) // IMAGE_FACTOR**2 + len(text) + 32
        if length > worst:
            worst, worst_where = length, f"{s.file} row {s.index}"
    if worst > limit:
        problems.append(f"{worst_where}: prompt of {worst} tokens exceeds data.max_prompt_length={limit}")
    how = "measured with the processor" if processor is not None else "estimated without a processor"
    detail = "; ".join(problems) if problems else f"longest prompt {worst} tokens <= {limit} ({how})"
    report.add("prompt budget", not problems, detail)


def _prompt_tokens(processor: Any, row: dict[str, Any]) -> int:
    messages = []
    for m in row["prompt"]:
        parts: list[dict[str, Any]] = []
        for k, piece in enumerate(str(m["content"]).split("<image>")):
            if k:
                parts.append({"type": "image"})
            if piece:
                parts.append({"type": "text", "text": piece})
        messages.append({"role": m["role"], "content": parts})
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    images = [open_row_image(im, where="pre-flight prompt image").convert("RGB") for im in row["images"]]
    inputs = processor(text=[text], images=images, return_tensors="pt")
    return int(inputs["input_ids"].shape[-1])


# -- reward ------------------------------------------------------------------------------------------------
def _check_reward(config: DictConfig, samples: list[SampleRow], tokenizer: Any, report: PreflightReport) -> None:
    import reward_fns
    from recipe.reward_manager import reward_kwargs_from_config

    try:
        reward_kwargs = reward_kwargs_from_config(config)  # the manager's own reading and checks
    except ValueError as err:
        report.add("reward", False, str(err))
        return
    problems = []
    scored = 0
    if tokenizer is not None:
        score = _manager_scorer(config, tokenizer)
        how = "through the recipe's reward manager"
    else:

        def score(sample: SampleRow, text: str) -> dict[str, float]:
            return reward_fns.compute_score(
                sample.row["data_source"], text, sample.row["reward_model"]["ground_truth"], None, **reward_kwargs
            )

        how = "with reward_fns.compute_score (no tokenizer for the manager)"
    for s in samples:
        gold, junk = score(s, gold_response(s.gt)), score(s, JUNK_RESPONSE)
        scored += 1
        if gold["acc"] != 1.0 or not gold["score"] > junk["score"]:
            problems.append(f"{s.file} row {s.index}: gold answer scored {gold}, junk {junk}")
            break
    detail = "; ".join(problems) or f"{scored} rows: gold answers correct and above junk, {how}"
    report.add("reward", not problems, detail)


def _manager_scorer(config: DictConfig, tokenizer: Any):
    """Score a response text for a sample row through the configured reward manager's ``run_single``."""
    import torch
    from verl import DataProto

    from recipe.reward_manager import RewardMapRewardManager

    manager = RewardMapRewardManager(config, tokenizer, compute_score=None)

    def score(sample: SampleRow, text: str) -> dict[str, float]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id or 0]
        prompt = torch.zeros((1, 1), dtype=torch.long)
        response = torch.tensor([ids], dtype=torch.long)
        data = DataProto.from_dict(
            tensors={
                "prompts": prompt,
                "responses": response,
                "attention_mask": torch.ones((1, 1 + len(ids)), dtype=torch.long),
            },
            non_tensors={
                key: np.array([sample.row[key]], dtype=object) for key in ("data_source", "reward_model", "extra_info")
            },
        )
        result = manager.loop.run_until_complete(manager.run_single(data))  # the loop the manager captured
        info = dict(result["reward_extra_info"])
        return {"score": float(result["reward_score"]), "acc": float(info.get("acc", 0.0))}

    return score
