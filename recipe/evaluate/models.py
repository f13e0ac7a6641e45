"""Which model to evaluate: a hub name, a local Hugging Face folder, or a verl checkpoint merged with verl's merger.

``resolve_model(spec)`` accepts

- a Hugging Face folder (``config.json`` plus weights): used as is;
- a verl FSDP checkpoint, at any of its levels: the run's checkpoint root (``latest_checkpointed_iteration.txt``
  names the step), a ``global_step_N`` folder, or its ``actor`` folder (``fsdp_config.json`` and
  ``model_world_size_W_rank_R.pt`` shards, as verl's ``FSDPCheckpointManager`` writes them). If the actor's
  ``huggingface/`` already holds weights (``checkpoint.save_contents`` with ``hf_model``) they are used; otherwise
  the shards are merged with verl's own ``verl.model_merger`` (``FSDPModelMerger``, what
  ``python -m verl.model_merger merge --backend fsdp`` runs) into ``merged_dir`` (default
  ``<actor>/huggingface_merged``), written to a staging sibling and put in place atomically
  (``data_prep.atomic_dir``: a killed merge leaves the previous merge or the new one), and reused by later runs.
  For a LoRA checkpoint verl's merger saves the *base* weights as the model and the adapter beside them
  (``lora_adapter/``, verl 0.9.1 ``model_merger/base_model_merger.py:311`` ``save_lora_adapter``, called at
  line 419); the adapter is then folded into the weights
  with PEFT (``merge_lora_adapter``), so the folder is the trained model, and ``lora_adapter/`` stays for serving;
- anything else that is not an existing path: a hub name, left to the backend to download.

Megatron checkpoints are not merged here: run ``python -m verl.model_merger merge --backend megatron`` and pass
the result.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from data_prep import atomic_dir
from recipe.evaluate.files import EvalInputError, write_json_atomic

CHECKPOINT_POINTER = "latest_checkpointed_iteration.txt"
FSDP_CONFIG = "fsdp_config.json"
MERGED_NAME = "huggingface_merged"
MERGED_MARKER = ".rewardmap_merged.json"
LORA_ADAPTER = "lora_adapter"  # where verl's merger puts a LoRA checkpoint's adapter, beside the base weights
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class ResolvedModel:
    """What to load (``path``: a local folder or a hub name) and where it came from."""

    path: str
    source: str  # "hub" | "hf_folder" | "verl_checkpoint"
    checkpoint: str | None = None  # the verl actor folder, for checkpoints
    merged: bool = False  # whether this run merged the shards


def _has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        p.suffix in _WEIGHT_SUFFIXES and p.name != "training_args.bin" for p in folder.iterdir()
    )


def actor_folder(path: Path) -> Path | None:
    """The verl actor folder a checkpoint path denotes (root, global_step_N or actor), or None."""
    if (path / FSDP_CONFIG).is_file():
        return path
    if (path / "actor" / FSDP_CONFIG).is_file():
        return path / "actor"
    pointer = path / CHECKPOINT_POINTER
    if pointer.is_file():
        step = pointer.read_text().strip()
        actor = path / f"global_step_{step}" / "actor"
        if not (actor / FSDP_CONFIG).is_file():
            raise EvalInputError(f"{pointer}: names step {step!r}, but {actor} holds no FSDP checkpoint")
        return actor
    return None


def _shards_signature(actor: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(actor.glob("model_world_size_*_rank_*.pt"))}


def merge_fsdp_checkpoint(actor: Path, target: Path, *, trust_remote_code: bool = False) -> bool:
    """Merge an FSDP actor checkpoint into a Hugging Face folder with verl's merger; False when already merged."""
    signature = _shards_signature(actor)
    if not signature:
        raise EvalInputError(f"{actor}: no model_world_size_*_rank_*.pt shards (was the model saved?)")
    marker = target / MERGED_MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("shards") == signature:
                return False
        except json.JSONDecodeError:
            pass
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    with atomic_dir.replacing(target, is_complete=lambda folder: (folder / MERGED_MARKER).is_file()) as tmp:
        config = ModelMergerConfig(
            operation="merge",
            backend="fsdp",
            local_dir=str(actor),
            target_dir=str(tmp),
            hf_model_config_path=str(actor / "huggingface"),
            trust_remote_code=trust_remote_code,
        )
        merger = FSDPModelMerger(config)
        merger.merge_and_save()
        merger.cleanup()
        merge_lora_adapter(tmp, trust_remote_code=trust_remote_code)
        write_json_atomic(tmp / MERGED_MARKER, {"checkpoint": str(actor), "shards": signature})
    return True


def merge_lora_adapter(folder: Path, *, trust_remote_code: bool = False) -> bool:
    """Fold ``folder/lora_adapter`` into the base weights saved in ``folder`` (PEFT's ``merge_and_unload``, computed
    in float32, saved in the dtype verl's merger saved); False when there is no adapter. Only the modules the adapter
    holds weights for are adapted."""
    adapter = folder / LORA_ADAPTER
    if not (adapter / "adapter_config.json").is_file():
        return False
    import torch
    from peft import LoraConfig, PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as tensors:
        modules = sorted(
            {key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for key in tensors.keys() if ".lora_" in key}
        )
    lora_config = LoraConfig.from_pretrained(str(adapter))
    lora_config.target_modules = modules  # whole module names: the adapter's own modules, nothing else
    model = AutoModelForImageTextToText.from_pretrained(
        folder, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    merged = PeftModel.from_pretrained(model, str(adapter), config=lora_config).merge_and_unload()
    with safe_open(str(next(folder.glob("model*.safetensors"))), framework="pt") as saved:
        merged.to(saved.get_tensor(next(iter(saved.keys()))).dtype)  # the dtype verl's merger saved (bf16)
    for weights in [*folder.glob("model*.safetensors"), *folder.glob("model.safetensors.index.json")]:
        weights.unlink()
    merged.save_pretrained(folder)
    return True


def resolve_model(
    spec: str, *, merged_dir: str | os.PathLike[str] | None = None, trust_remote_code: bool = False
) -> ResolvedModel:
    """Resolve ``spec`` (module docstring); merges a verl checkpoint when needed. EvalInputError when unusable."""
    path = Path(spec).expanduser()
    if not path.exists():
        if spec.startswith(("/", "./", "../", "~")):
            raise EvalInputError(f"--model {spec!r}: no such folder")
        return ResolvedModel(path=spec, source="hub")
    if not path.is_dir():
        raise EvalInputError(f"--model {spec!r}: not a folder")
    actor = actor_folder(path)
    if actor is not None:
        if (actor / "model" / "dist_ckpt").is_dir():
            raise EvalInputError(f"{actor}: a Megatron checkpoint; merge it with python -m verl.model_merger first")
        saved = actor / "huggingface"
        if saved.is_dir() and _has_weights(saved):
            return ResolvedModel(path=str(saved), source="verl_checkpoint", checkpoint=str(actor))
        target = Path(merged_dir) if merged_dir is not None else actor / MERGED_NAME
        merged = merge_fsdp_checkpoint(actor, target, trust_remote_code=trust_remote_code)
        return ResolvedModel(path=str(target), source="verl_checkpoint", checkpoint=str(actor), merged=merged)
    if _has_weights(path):
        return ResolvedModel(path=str(path), source="hf_folder")
    raise EvalInputError(
        f"--model {spec!r}: neither a Hugging Face model folder (config.json and weights) nor a verl checkpoint "
        f"({CHECKPOINT_POINTER}, global_step_N/actor or an actor folder with {FSDP_CONFIG})"
    )
