"""GPU memory arithmetic of a run: what one GPU holds while vLLM generates and while the actor updates.

The pre-flight (``recipe.preflight``, check "gpu memory") runs ``estimate_memory`` on the configured model and
settings before anything is booked and fails with the numbers when a phase does not fit the GPUs the run gets
(``trainer.n_gpus_per_node`` x ``trainer.nnodes`` GPUs of ``rewardmap.gpu_memory_gib``). It is a rough budget, not yet
checked against a GPU run's measured peaks: good for "7B full fine-tuning on one 80 GB GPU cannot work", not for
tuning ``gpu_memory_utilization`` to the last GiB. What it counts, following verl 0.9.1's hybrid engine (actor and vLLM
share each GPU; vLLM sleeps while the actor updates, the actor offloads while vLLM generates when
``fsdp_config.param_offload`` / ``optimizer_offload`` say so):

- update: the actor's fp32 weights (verl's FSDP ``model_dtype``) sharded over every GPU, fp32 gradients and AdamW's
  two moments for the trainable part only (all weights, or the LoRA adapters), two layers gathered in bf16, the
  activations of one micro-batch of ``max_prompt_length + max_response_length`` tokens with gradient checkpointing
  (one saved hidden state per layer plus one layer recomputed), the bf16 logits and their gradient, the vision tower
  at the image budget (kept for backward only when it trains), and a fixed allowance for CUDA contexts, NCCL and
  allocator slack;
- rollout: what the actor keeps on the GPU, plus vLLM's ``gpu_memory_utilization`` share, inside which vLLM holds
  its bf16 weights over ``tensor_model_parallel_size`` GPUs (plus one LoRA slot), a prefill of
  ``max_num_batched_tokens``, and the KV cache, which must hold at least one full-length sequence.

With LoRA, verl computes the reference log-probs with the actor's adapter switched off, so there is no second model;
without it, the reference model is offloaded while the actor updates (``ref.fsdp_config.param_offload``), and is
not counted.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

GIB = 1024**3
OVERHEAD_GIB = 3.0  # CUDA contexts (actor and vLLM processes), NCCL buffers, allocator fragmentation
FP32, BF16 = 4, 2
# The presets' models by hub name, for a pre-flight on a machine that has not downloaded them: the fields of their
# config.json that decide the parameter count (Qwen/Qwen2.5-VL-{3B,7B}-Instruct). A local model's config is read.
_QWEN2_5_VL_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "in_chans": 3,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": {
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "vision_config": {**_QWEN2_5_VL_VISION, "out_hidden_size": 2048},
    },
    "Qwen/Qwen2.5-VL-7B-Instruct": {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
        "vision_config": {**_QWEN2_5_VL_VISION, "out_hidden_size": 3584},
    },
}


@dataclass(frozen=True)
class ModelShape:
    """The counts of a vision-language model the arithmetic needs (``model_shape`` reads them off a config)."""

    params: int  # every parameter once (tied embeddings once)
    vision_params: int  # the vision tower and its merger
    trainable_params: int  # every parameter, or the LoRA adapters' at the configured rank and targets
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    kv_heads: int
    head_dim: int
    vision_layers: int
    vision_hidden: int
    vision_intermediate: int
    patches_per_image_token: int  # spatial_merge_size ** 2

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer (what FSDP gathers at a time), about."""
        return max(0, (self.params - self.vision_params - self.vocab * self.hidden) // max(1, self.layers))


@dataclass(frozen=True)
class RunShape:
    """The settings of a run that decide its memory, per GPU (``run_shape`` reads them off the config)."""

    gpus: int  # GPUs the run gets: trainer.n_gpus_per_node x trainer.nnodes (FSDP shards over all of them)
    gpu_gib: float  # memory of each GPU
    tensor_parallel: int  # vLLM tensor parallel size
    gpu_memory_utilization: float  # vLLM's share of each GPU
    sequence_tokens: int  # max_prompt_length + max_response_length
    image_tokens: int  # image tokens of the largest map (its pixel budget / 28**2) x images per prompt
    micro_batch: int  # actor.ppo_micro_batch_size_per_gpu
    max_num_batched_tokens: int  # vLLM's prefill batch
    param_offload: bool = True
    optimizer_offload: bool = True
    gradient_checkpointing: bool = True
    lora: bool = False


@dataclass
class MemoryEstimate:
    """GiB on one GPU in each phase, term by term; ``problems()`` says what does not fit, with the numbers."""

    gpu_gib: float
    update: dict[str, float] = field(default_factory=dict)
    rollout: dict[str, float] = field(default_factory=dict)
    vllm: dict[str, float] = field(default_factory=dict)  # inside vLLM's share
    kv_sequence_gib: float = 0.0  # KV cache of one full-length sequence
    layout_problem: str = ""

    @property
    def update_gib(self) -> float:
        return sum(self.update.values())

    @property
    def rollout_gib(self) -> float:
        return sum(self.rollout.values())

    @property
    def kv_cache_gib(self) -> float:
        return self.vllm.get("KV cache", 0.0)

    @property
    def sequences_in_kv_cache(self) -> float:
        return self.kv_cache_gib / self.kv_sequence_gib if self.kv_sequence_gib else 0.0

    def problems(self) -> list[str]:
        """What does not fit, each with its numbers; [] when everything does."""
        out = [self.layout_problem] if self.layout_problem else []
        if self.update_gib > self.gpu_gib:
            out.append(
                f"the actor update needs {self.update_gib:.1f} GiB per GPU > {self.gpu_gib:g} ({_terms(self.update)})"
            )
        if self.rollout_gib > self.gpu_gib:
            out.append(
                f"generation needs {self.rollout_gib:.1f} GiB per GPU > {self.gpu_gib:g} ({_terms(self.rollout)}): "
                "offload the actor (fsdp_config.param_offload/optimizer_offload) or lower gpu_memory_utilization"
            )
        if self.vllm and self.sequences_in_kv_cache < 1:
            out.append(
                f"vLLM's share leaves {self.kv_cache_gib:.1f} GiB for the KV cache, one full-length sequence needs "
                f"{self.kv_sequence_gib:.2f} GiB ({_terms(self.vllm)}): raise gpu_memory_utilization or "
                "tensor_model_parallel_size"
            )
        return out

    def describe(self) -> str:
        """One line: both phases against the GPU, and how many full-length sequences the KV cache holds."""
        text = (
            f"update {self.update_gib:.1f} GiB, generation {self.rollout_gib:.1f} GiB of {self.gpu_gib:g} GiB per GPU"
        )
        if self.vllm:
            text += f"; KV cache {self.kv_cache_gib:.1f} GiB = {self.sequences_in_kv_cache:.0f} full-length sequences"
        return text


def estimate_memory(model: ModelShape, run: RunShape) -> MemoryEstimate:
    """GiB per GPU of a run's two phases (module docstring); pure arithmetic.

    >>> seven = ModelShape(params=8_292_166_656, vision_params=676_550_144, trainable_params=8_292_166_656,
    ...     layers=28, hidden=3584, intermediate=18944, vocab=152064, kv_heads=4, head_dim=128, vision_layers=32,
    ...     vision_hidden=1280, vision_intermediate=3420, patches_per_image_token=4)
    >>> one_gpu = RunShape(gpus=1, gpu_gib=79, tensor_parallel=1, gpu_memory_utilization=0.6, sequence_tokens=22048,
    ...     image_tokens=16384, micro_batch=1, max_num_batched_tokens=24576)
    >>> estimate = estimate_memory(seven, one_gpu)
    >>> round(estimate.update["weights (fp32)"] + estimate.update["gradients"] + estimate.update["optimizer (AdamW)"])
    124
    >>> estimate.problems()[0].startswith("the actor update needs")
    True
    """
    gpus, tp = max(1, run.gpus), max(1, run.tensor_parallel)
    trainable = model.trainable_params
    tokens = run.micro_batch * run.sequence_tokens
    patches = run.micro_batch * run.image_tokens * model.patches_per_image_token
    vision_trains = not run.lora  # LoRA leaves the vision tower frozen (no adapter there)

    saved = tokens * model.hidden * BF16 * model.layers if run.gradient_checkpointing else 0
    layer_work = tokens * (6 * model.hidden + 3 * model.intermediate) * BF16
    recomputed = layer_work if run.gradient_checkpointing else layer_work * model.layers
    vision_block = patches * (6 * model.vision_hidden + 3 * model.vision_intermediate) * BF16
    vision_saved = patches * model.vision_hidden * BF16 * model.vision_layers if vision_trains else 0
    update = {
        "weights (fp32)": model.params * FP32 / gpus,
        "gradients": trainable * FP32 / gpus,
        "optimizer (AdamW)": trainable * 2 * FP32 / gpus,
        "gathered layers": 2 * model.layer_params * (BF16 + (FP32 if not run.lora else 0)),
        "activations": saved + recomputed,
        "logits": tokens * model.vocab * 2 * BF16,
        "vision tower": vision_block + vision_saved,
        "overhead": OVERHEAD_GIB * GIB,
    }

    share = run.gpu_memory_utilization * run.gpu_gib * GIB
    kv_heads_per_gpu = max(1, model.kv_heads // tp)
    kv_per_token = 2 * model.layers * kv_heads_per_gpu * model.head_dim * BF16
    prefill = run.max_num_batched_tokens * (6 * model.hidden + 3 * model.intermediate // tp) * BF16
    vllm = {
        "weights (bf16)": model.params * BF16 / tp,
        "LoRA slot": (trainable * BF16 / tp) if run.lora else 0.0,
        "prefill and vision encoder": prefill + vision_block + GIB,  # + sampler buffers
    }
    vllm["KV cache"] = max(0.0, share - sum(vllm.values()))
    rollout = {
        "actor weights kept": 0.0 if run.param_offload else model.params * FP32 / gpus,
        "optimizer kept": 0.0 if run.optimizer_offload else trainable * 2 * FP32 / gpus,
        "vLLM share": share,
        "overhead": OVERHEAD_GIB * GIB,
    }
    layout = ""
    if gpus % tp:
        layout = f"tensor_model_parallel_size={tp} does not divide the run's {gpus} GPUs"
    return MemoryEstimate(
        gpu_gib=run.gpu_gib,
        update={k: v / GIB for k, v in update.items()},
        rollout={k: v / GIB for k, v in rollout.items()},
        vllm={k: v / GIB for k, v in vllm.items()},
        kv_sequence_gib=run.sequence_tokens * kv_per_token / GIB,
        layout_problem=layout,
    )


def _terms(terms: dict[str, float]) -> str:
    return ", ".join(f"{name} {gib:.1f}" for name, gib in terms.items() if gib >= 0.05)


# -- reading the shapes off a config ------------------------------------------------------------------------------
def model_shape(
    hf_config: Any, *, lora_rank: int = 0, target_modules: Any = "all-linear", exclude_modules: Any = None
) -> ModelShape:
    """Count a model's parameters (and its LoRA adapters') on the meta device: no weights are read or allocated.

    LoRA adapters go where verl's PEFT config puts them (``target_modules``: "all-linear" is every ``nn.Linear``
    but the output head, or a list of module-name suffixes; ``exclude_modules``: a regex matched against the whole
    module name, or a list of names or suffixes), each adding ``rank x (in + out)`` parameters.
    """
    return _model_shape(
        hf_config.to_json_string(), int(lora_rank or 0), _frozen(target_modules), _frozen(exclude_modules)
    )


@functools.lru_cache(maxsize=8)
def _model_shape(config_json: str, lora_rank: int, target_modules: Any, exclude_modules: Any) -> ModelShape:
    import json

    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    data = json.loads(config_json)
    hf_config = AutoConfig.for_model(data.pop("model_type"), **data)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(hf_config)
    params = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for name, p in model.named_parameters() if ".visual." in f".{name}")
    head = model.get_output_embeddings()
    adapters = 0
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.Linear)
            and module is not head
            and _lora_target(name, target_modules, exclude_modules)
        ):
            adapters += lora_rank * (module.in_features + module.out_features)
    text = hf_config.get_text_config()
    vision_config = hf_config.vision_config
    heads = int(text.num_attention_heads)
    return ModelShape(
        params=params,
        vision_params=vision,
        trainable_params=adapters if lora_rank else params,
        layers=int(text.num_hidden_layers),
        hidden=int(text.hidden_size),
        intermediate=int(text.intermediate_size),
        vocab=int(text.vocab_size),
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or text.hidden_size // heads),
        vision_layers=int(vision_config.depth),
        vision_hidden=int(vision_config.hidden_size),
        vision_intermediate=int(vision_config.intermediate_size),
        patches_per_image_token=int(vision_config.spatial_merge_size) ** 2,
    )


def _lora_target(name: str, target_modules: Any, exclude_modules: Any) -> bool:
    """Whether PEFT puts an adapter on module ``name`` (its exclude rule first, then its target rule)."""
    if isinstance(exclude_modules, str):
        if re.fullmatch(exclude_modules, name):
            return False
    elif exclude_modules and any(name == key or name.endswith(f".{key}") for key in exclude_modules):
        return False
    if target_modules == "all-linear":
        return True
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == key or name.endswith(f".{key}") for key in target_modules or ())


def _frozen(value: Any) -> Any:
    """A config value as a hashable (lists to tuples) for the cache."""
    if hasattr(value, "__iter__") and not isinstance(value, str):
        return tuple(str(v) for v in value)
    return value
