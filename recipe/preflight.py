"""Pre-flight: every check that can fail a run, done in seconds on a laptop before any Ray worker starts.

Checks, in order: the config passes verl's own validation; verl's workarounds reach the Ray workers; every data
file exists and its first rows match the schema (only those rows are read); the stage plan (built by the
dataset's own ``plan_from_data_config``) is consistent with the batch size and step settings; the checkpoint the
run would resume was written under the same training choices (``recipe.run_name``); the model fits the GPUs the
run gets (``recipe.memory_budget``: weights, gradients and optimizer states of the trainable part, activations,
vLLM's share and its KV cache at the configured lengths and image budget); each checked prompt (map image plus
question) fits ``data.max_prompt_length``, measured as the agent loop builds it; the reward manager gives gold
answers full marks and junk none.

Every check ends ``ok``, ``WARN`` (the run works, but something deserves a look), ``SKIPPED`` (it could not run:
the reason says why and how to run it) or ``FAIL``. Only a FAIL stops the launch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from omegaconf import DictConfig

from data_prep.image_files import resolve_row_images
from data_prep.images import IMAGE_FACTOR
from data_prep.schema import RowError, validate_row
from recipe.row_images import chat_messages, image_size, row_images
from reward_fns.gold import gold_response
from reward_fns.ground_truth import GroundTruth

JUNK_RESPONSE = "I am not sure. Route Name: nowhere\n\\boxed{maybe}"
LONG_TEMPLATES = ("long1", "long2")
VAL_FILE_HELP = (
    "get one with the benchmark source of the official conversion (python -m data_prep.reasonmap --out DIR "
    "--source val=PATH_TO_REASONMAP ...) or from the synthetic generator, whose val split is written by "
    "python -m data_prep.synthetic --out DIR --cities N (3 or more cities), or point data.val_files at one"
)


class PreflightError(RuntimeError):
    """A run that would fail: the message says which check and why."""


class Status(str, Enum):
    """Outcome of one check; only FAIL stops a launch."""

    OK = "ok"
    WARN = "WARN"
    SKIPPED = "SKIPPED"
    FAIL = "FAIL"


@dataclass
class Check:
    name: str
    status: Status
    detail: str

    @property
    def ok(self) -> bool:
        """Not a failure (ok, WARN or SKIPPED)."""
        return self.status is not Status.FAIL


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)
    plan_table: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, status: Status, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def status_of(self, name: str) -> Status | None:
        return next((c.status for c in self.checks if c.name == name), None)

    def render(self) -> str:
        lines = ["RewardMap pre-flight"]
        for c in self.checks:
            lines.append(f"  [{c.status.value}] {c.name}: {c.detail}")
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
    _check_verl_workarounds(config, report)
    samples = _check_data_files(config, report)
    _check_stage_plan(config, report)
    _check_resume(config, report)
    _check_gpu_memory(config, samples, report)
    tokenizer, processor = _load_processor(config, report)
    _check_prompt_budget(config, samples, processor, report)
    _check_reward(config, samples, tokenizer, report)
    return report


# -- config ------------------------------------------------------------------------------------------------
def _check_verl_config(config: DictConfig, report: PreflightReport) -> None:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from recipe.advantage import register_estimator

    register_estimator()  # registers the recipe's estimator, as the task runner does

    try:
        validate_config(
            config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
        )
    except Exception as err:  # verl raises AssertionError/ValueError with its own message
        report.add("verl config", Status.FAIL, f"{type(err).__name__}: {err}")
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
    if problems:
        report.add("verl config", Status.FAIL, "; ".join(problems))
    else:
        report.add("verl config", Status.OK, "composes and passes verl's validate_config")


def _check_verl_workarounds(config: DictConfig, report: PreflightReport) -> None:
    """verl's Ray workers must import the nested M-RoPE fix (``recipe.nested_mrope_fix``), and it must work."""
    from recipe import nested_mrope_fix

    env = ((config.get("ray_kwargs") or {}).get("ray_init") or {}).get("runtime_env") or {}
    modules = str((env.get("env_vars") or {}).get("VERL_USE_EXTERNAL_MODULES") or "").split(",")
    key = "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES"
    if nested_mrope_fix.EXTERNAL_MODULE not in modules:
        report.add(
            "verl workarounds",
            Status.FAIL,
            f"{key} does not list {nested_mrope_fix.EXTERNAL_MODULE} (it lists {modules}): without it verl computes "
            "wrong log-probs for batches of equal-length sequences and update_actor crashes (see that module)",
        )
        return
    if not _nested_mrope_fix_works():
        report.add(
            "verl workarounds", Status.FAIL, f"{nested_mrope_fix.EXTERNAL_MODULE} does not fix an equal-length batch"
        )
        return
    report.add("verl workarounds", Status.OK, f"Ray workers import {nested_mrope_fix.EXTERNAL_MODULE} ({key})")


def _nested_mrope_fix_works() -> bool:
    """An equal-length batch of position ids reads back intact through verl's (patched) engine entry fix."""
    import torch
    from tensordict import TensorDict
    from verl.utils import tensordict_utils

    samples = [torch.arange(4 * 6).view(4, 6) + 100 * i for i in range(3)]
    batch = TensorDict({"position_ids": torch.nested.as_nested_tensor(samples, layout=torch.jagged)}, batch_size=[3])
    try:
        tensordict_utils.maybe_fix_3d_position_ids(batch)
        return all(torch.equal(a, b) for a, b in zip(batch["position_ids"].unbind(0), samples, strict=True))
    except RuntimeError:
        return False


# -- data ------------------------------------------------------------------------------------------------------
def _stage_files(config: DictConfig) -> list[str]:
    return list(dict.fromkeys(str(f) for stage in config.data.stages for f in stage.files))


def _val_files(config: DictConfig) -> list[str]:
    val = config.data.get("val_files")
    if not val:
        return []
    return [str(f) for f in ([val] if isinstance(val, str) else val)]


def _check_data_files(config: DictConfig, report: PreflightReport) -> list[SampleRow]:
    n_rows = int(config.rewardmap.preflight_rows)
    samples: list[SampleRow] = []
    problems = []
    stage_files, val_files = _stage_files(config), _val_files(config)
    files = list(dict.fromkeys(stage_files + val_files))
    total_rows = 0
    for file in files:
        path = Path(os.path.expanduser(file))
        if not path.is_file():
            if file in val_files and file not in stage_files:
                problems.append(
                    f"{file}: not found: verl builds a validation dataset from data.val_files; {VAL_FILE_HELP}"
                )
            else:
                problems.append(f"{file}: not found")
            continue
        try:
            rows, file_rows = _first_rows(path, n_rows)
        except Exception as err:
            problems.append(f"{file}: not a readable Parquet file ({err})")
            continue
        total_rows += file_rows
        if file_rows == 0:
            problems.append(f"{file}: no rows")
            continue
        for i, row in enumerate(rows):
            try:
                gt = validate_row(row, where=f"{file} row {i}")
                row = resolve_row_images(row, [path.parent], where=f"{file} row {i}")  # stored paths made absolute
            except RowError as err:
                problems.append(str(err))
                break
            samples.append(SampleRow(file=file, index=i, row=row, gt=gt))
    if not files:
        problems.append("no data files: data.stages lists none")
    if problems:
        report.add("data files", Status.FAIL, "; ".join(problems))
    else:
        report.add(
            "data files",
            Status.OK,
            f"{len(files)} files ({total_rows} rows); the first {len(samples)} rows read match the row schema",
        )
    return samples


def _first_rows(path: Path, n_rows: int) -> tuple[list[dict[str, Any]], int]:
    """The first ``n_rows`` rows of a Parquet file (only the row groups they are in are read) and its row count."""
    with pq.ParquetFile(path) as parquet:
        total = parquet.metadata.num_rows
        batch = next(parquet.iter_batches(batch_size=max(1, n_rows)), None) if total else None
    return (batch.to_pylist()[:n_rows] if batch is not None else []), total


def _check_stage_plan(config: DictConfig, report: PreflightReport) -> None:
    from recipe.stages import StagePlanError, plan_from_data_config

    try:
        plan = plan_from_data_config(config.data)  # exactly the dataset's call (data.seed null -> 0 included)
    except (StagePlanError, ValueError, FileNotFoundError, KeyError, TypeError) as err:
        report.add("stage plan", Status.FAIL, str(err))
        return
    set_steps = config.trainer.get("total_training_steps")
    if set_steps is not None and int(set_steps) > plan.total_steps:
        report.add(
            "stage plan",
            Status.FAIL,
            f"trainer.total_training_steps={set_steps} exceeds the plan's {plan.total_steps} steps",
        )
        return
    report.plan_table = plan.describe()
    report.add("stage plan", Status.OK, f"{plan.total_steps} steps of {config.data.train_batch_size} prompts")


# -- resume ------------------------------------------------------------------------------------------------
def _check_resume(config: DictConfig, report: PreflightReport) -> None:
    """The checkpoint verl would resume must have been written under this run's training choices."""
    from recipe.run_name import RunChoicesMismatchError, check_run_record, resume_checkpoint_dir

    folder = resume_checkpoint_dir(config.trainer)
    if folder is None:
        report.add("resume", Status.OK, f"starts fresh (no checkpoint in {config.trainer.default_local_dir})")
        return
    try:
        matched = check_run_record(folder, config)
    except RunChoicesMismatchError as err:
        report.add("resume", Status.FAIL, str(err))
        return
    if matched:
        report.add("resume", Status.OK, f"resumes {folder}, written under the same training choices")
    else:
        report.add(
            "resume",
            Status.WARN,
            f"resumes {folder}, which records no training choices (written before run records): they cannot be checked",
        )


# -- GPU memory ----------------------------------------------------------------------------------------------
def _check_gpu_memory(config: DictConfig, samples: list[SampleRow], report: PreflightReport) -> None:
    """The memory arithmetic of ``recipe.memory_budget`` for the configured model on the GPUs the run gets."""
    from recipe.memory_budget import estimate_memory

    if str(config.trainer.get("device", "cuda")) != "cuda":
        report.add("gpu memory", Status.SKIPPED, f"trainer.device={config.trainer.device}: no GPU to fit")
        return
    try:
        shape = _model_shape(config)
    except Exception as err:  # a model whose config is neither local nor known: say so, do not guess
        report.add("gpu memory", Status.SKIPPED, f"cannot read the model's shape ({type(err).__name__}: {err})")
        return
    run, where = _run_shape(config, samples)
    estimate = estimate_memory(shape, run)
    trains = (
        f"LoRA rank {config.actor_rollout_ref.model.lora_rank}: {shape.trainable_params / 1e6:.0f}M trainable"
        if run.lora
        else f"full fine-tuning: {shape.trainable_params / 1e9:.2f}B trainable"
    )
    facts = (
        f"{shape.params / 1e9:.2f}B parameters, {trains}; {run.gpus} GPU{'s' * (run.gpus != 1)} of {run.gpu_gib:g} GiB"
    )
    facts += f" ({where})"
    problems = estimate.problems()
    if problems:
        report.add("gpu memory", Status.FAIL, f"{facts}: " + "; ".join(problems))
    else:
        report.add("gpu memory", Status.OK, f"{facts}: {estimate.describe()}")


def _model_shape(config: DictConfig) -> Any:
    """``recipe.memory_budget.model_shape`` of the configured model: its local config, else a known preset's."""
    from transformers import AutoConfig

    from recipe.memory_budget import KNOWN_CONFIGS, model_shape

    model = config.actor_rollout_ref.model
    path = str(model.path)
    try:
        local = path if Path(os.path.expanduser(path)).exists() else _local_hub_snapshot(path)
        hf_config = AutoConfig.from_pretrained(local, trust_remote_code=bool(model.get("trust_remote_code", False)))
    except Exception:
        if path not in KNOWN_CONFIGS:
            raise
        hf_config = AutoConfig.for_model("qwen2_5_vl", **KNOWN_CONFIGS[path])
    return model_shape(
        hf_config,
        lora_rank=int(model.get("lora_rank") or 0),
        target_modules=model.get("target_modules"),
        exclude_modules=model.get("exclude_modules"),
    )


def _run_shape(config: DictConfig, samples: list[SampleRow]) -> tuple[Any, str]:
    """``recipe.memory_budget.RunShape`` of the config, and where the GPU memory figure came from."""
    from data_prep.images import DEFAULT_MAX_PIXELS
    from recipe.memory_budget import GIB, RunShape

    gpu_gib, where = float(config.rewardmap.gpu_memory_gib), "rewardmap.gpu_memory_gib"
    import torch

    if torch.cuda.is_available():
        gpu_gib = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
        where = f"this machine's {torch.cuda.get_device_name(0)}"
    model, actor, rollout = (
        config.actor_rollout_ref.model,
        config.actor_rollout_ref.actor,
        config.actor_rollout_ref.rollout,
    )
    max_pixels = max((int(im["max_pixels"]) for s in samples for im in s.row["images"]), default=DEFAULT_MAX_PIXELS)
    sequence = int(rollout.get("max_model_len") or 0) or int(config.data.max_prompt_length) + int(
        config.data.max_response_length
    )
    run = RunShape(
        gpus=int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes),
        gpu_gib=gpu_gib,
        tensor_parallel=int(rollout.tensor_model_parallel_size),
        gpu_memory_utilization=float(rollout.gpu_memory_utilization),
        sequence_tokens=sequence,
        image_tokens=max_pixels // IMAGE_FACTOR**2 * int(rollout.get("limit_images") or 1),
        micro_batch=int(actor.ppo_micro_batch_size_per_gpu or 1),
        max_num_batched_tokens=int(rollout.max_num_batched_tokens or sequence),
        param_offload=bool(actor.fsdp_config.param_offload),
        optimizer_offload=bool(actor.fsdp_config.optimizer_offload),
        gradient_checkpointing=bool(model.enable_gradient_checkpointing),
        lora=int(model.get("lora_rank") or 0) > 0,
    )
    return run, where


# -- processor ---------------------------------------------------------------------------------------------
def _load_processor(config: DictConfig, report: PreflightReport) -> tuple[Any, Any]:
    """The model's tokenizer and processor, or a tiny local model's with ``preflight_tiny_model``; or Nones."""
    from verl.utils import hf_processor, hf_tokenizer

    model_path = str(config.actor_rollout_ref.model.path)
    if config.rewardmap.preflight_tiny_model:
        from recipe.cpu.tiny_model import build_tiny_qwen

        model_path = str(build_tiny_qwen(Path(os.path.expanduser(config.rewardmap.cache_dir)) / "tiny_qwen2_5_vl"))
        source = f"tiny local Qwen2.5-VL at {model_path} (--tiny-model)"
    else:
        source = model_path
    try:
        local = model_path if Path(os.path.expanduser(model_path)).exists() else _local_hub_snapshot(model_path)
        trust = bool(config.actor_rollout_ref.model.get("trust_remote_code", False))
        tokenizer = hf_tokenizer(local, trust_remote_code=trust)
        processor = hf_processor(local, trust_remote_code=trust)
    except Exception as err:
        report.add(
            "model processor",
            Status.SKIPPED,
            f"cannot load the processor of {model_path} ({type(err).__name__}); the prompt-length and "
            "reward-manager checks below use estimates. Download the model, or add --tiny-model to run them "
            "against a tiny local model.",
        )
        return None, None
    if processor is None:
        report.add("model processor", Status.FAIL, f"{source} has no image processor: not a vision-language model")
        return tokenizer, None
    report.add("model processor", Status.OK, f"loaded from {source}")
    return tokenizer, processor


def _local_hub_snapshot(repo_id: str) -> str:
    """Path of an already downloaded hub model; raises when absent (the pre-flight never downloads)."""
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, local_files_only=True)


# -- prompt budget -----------------------------------------------------------------------------------------
def _check_prompt_budget(config: DictConfig, samples: list[SampleRow], processor: Any, report: PreflightReport) -> None:
    if not samples:
        report.add("prompt budget", Status.SKIPPED, "no rows to measure (see the data files check)")
        return
    limit = int(config.data.max_prompt_length)
    worst, worst_where, problems = 0, "", []
    for s in samples:
        for image in s.row["images"]:
            width, height = image_size(image)
            if width * height > int(image["max_pixels"]) * 1.01:
                problems.append(f"{s.file} row {s.index}: image {width}x{height} exceeds its max_pixels budget")
        if processor is not None:
            length = _prompt_tokens(processor, s.row)
        else:  # estimate: one token per 28x28 pixels of the fitted image, at most one per character of text
            text = "".join(str(m["content"]) for m in s.row["prompt"])
            length = sum(w * h for w, h in (im.size for im in row_images(s.row))) // IMAGE_FACTOR**2
            length += len(text) + 32
        if length > worst:
            worst, worst_where = length, f"{s.file} row {s.index}"
    if worst > limit:
        problems.append(f"{worst_where}: prompt of {worst} tokens exceeds data.max_prompt_length={limit}")
    if problems:
        report.add("prompt budget", Status.FAIL, "; ".join(problems))
        return
    if processor is not None:
        report.add(
            "prompt budget", Status.OK, f"longest prompt {worst} tokens <= {limit} (measured with the processor)"
        )
    else:
        report.add(
            "prompt budget", Status.WARN, f"longest prompt about {worst} tokens <= {limit} (estimated: no processor)"
        )


def _prompt_tokens(processor: Any, row: dict[str, Any]) -> int:
    """Prompt length as the agent loop builds it: the row's images fitted to its own budget, then the processor."""
    text = processor.apply_chat_template(chat_messages(row), add_generation_prompt=True, tokenize=False)
    patch = int(getattr(getattr(processor, "image_processor", None), "patch_size", 0) or 0) or None
    images = row_images(row, patch_size=patch)
    inputs = processor(text=[text], images=images or None, return_tensors="pt")
    return int(inputs["input_ids"].shape[-1])


# -- reward ------------------------------------------------------------------------------------------------
def _check_reward(config: DictConfig, samples: list[SampleRow], tokenizer: Any, report: PreflightReport) -> None:
    import reward_fns
    from recipe.reward_manager import reward_kwargs_from_config

    try:
        reward_kwargs = reward_kwargs_from_config(config)  # the manager's own reading and checks
    except ValueError as err:
        report.add("reward", Status.FAIL, str(err))
        return
    if not samples:
        report.add("reward", Status.SKIPPED, "no rows to score (see the data files check)")
        return
    mode = str(reward_kwargs.get("mode", "fixed"))
    if tokenizer is not None:
        score = _manager_scorer(config, tokenizer)
        how = "through the recipe's reward manager"
    else:

        def score(sample: SampleRow, text: str) -> dict[str, float]:
            return reward_fns.compute_score(
                sample.row["data_source"], text, sample.row["reward_model"]["ground_truth"], None, **reward_kwargs
            )

        how = "with reward_fns.compute_score (no tokenizer for the manager)"
    problems, released_long = [], []
    for s in samples:
        gold, junk = score(s, gold_response(s.gt)), score(s, JUNK_RESPONSE)
        if gold["acc"] == 1.0 and gold["score"] > junk["score"]:
            continue
        if mode == "released" and s.gt.question_type == "planning" and s.gt.template in LONG_TEMPLATES:
            released_long.append(f"{s.file} row {s.index} ({s.gt.template})")
            continue
        problems.append(f"{s.file} row {s.index}: gold answer scored {gold}, junk {junk}")
        break
    if problems:
        report.add("reward", Status.FAIL, "; ".join(problems))
    elif released_long:
        report.add(
            "reward",
            Status.WARN,
            f"reward_mode=released scores the gold answers of long-template planning questions 0 "
            f"({len(released_long)} checked: {', '.join(released_long[:3])}): the released parser reads a long "
            "answer's via-stop line into the arrival stop, so no long answer can be right. Train released mode on "
            "short questions (data_prep --planning-templates short) or use reward_mode=fixed",
        )
    else:
        report.add("reward", Status.OK, f"{len(samples)} rows: gold answers correct and above junk, {how}")


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
