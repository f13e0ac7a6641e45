"""A CPU platform for verl 0.9.1 (``cpu`` in verl's platform registry), and the three verl defaults it needs.

verl ships CUDA, NPU and ROCm platforms only. ``PlatformCPU`` is registered through
``verl.plugin.platform.PlatformRegistry.register`` (the route verl documents for external platforms) and selected
the way verl selects any platform, in a fresh process (``recipe.cpu.CPU_ENV``)::

    VERL_PLATFORM=cpu VERL_USE_EXTERNAL_MODULES=recipe.cpu python ...

The device is ``cpu``, the communication backend gloo; ``device_module`` is ``torch.cpu`` plus the memory and RNG
calls verl makes on a device module (``torch.cpu`` lacks them), answered with zeros or forwarded to the CPU
generator.

Three verl defaults assume an accelerator. Each is worked around at the smallest point, applied only by
``apply_cpu_patches()`` (which ``import recipe.cpu`` runs in processes started with ``VERL_PLATFORM=cpu``), and
none edits verl's files:

- Ray resources: ``PlatformBase.ray_resource_options`` asks for ``resources={"CPU": n}``, which Ray rejects (CPU
  is requested with ``num_cpus``): ``PlatformCPU.ray_resource_options`` returns ``{"num_cpus": n}``.
- Process group: ``verl.utils.distributed.initialize_global_process_group_ray`` asks torch for
  ``"cpu:gloo,<device>:<backend>"``, i.e. ``"cpu:gloo,cpu:gloo"`` here, and torch raises "Duplicate device type
  cpu". The patch passes ``backend="gloo"`` when the caller gave none.
- Reference-model offload: verl's FSDP2 engine (``engine/fsdp/transformer_impl.py``) offloads a forward-only model
  with ``CPUOffloadPolicy(pin_memory=True)``; pinning needs an accelerator. The patch swaps the class that module
  imports (``verl.utils.fsdp_utils.CPUOffloadPolicy``) for a subclass that never pins.

``ResourcePoolManager._check_resource_available`` counts only GPU/NPU resources; that one needs no code: the CPU
run's config gives Ray a logical GPU count (``ray_kwargs.ray_init.num_gpus``, configs/dry_run/cpu.yaml).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

PLATFORM_NAME = "cpu"


def _zero(*args: Any, **kwargs: Any) -> int:
    return 0


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _build_device_module() -> ModuleType:
    """``torch.cpu``'s device calls plus the CUDA-style memory and RNG calls verl makes on a device module."""
    module = ModuleType("verl_cpu_device")
    for name in dir(torch.cpu):
        if not name.startswith("_"):
            setattr(module, name, getattr(torch.cpu, name))
    for name in ("memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved"):
        setattr(module, name, _zero)
    for name in ("empty_cache", "ipc_collect", "reset_peak_memory_stats", "set_per_process_memory_fraction"):
        setattr(module, name, _noop)
    module.mem_get_info = lambda *args, **kwargs: (0, 0)
    module.get_device_name = lambda *args, **kwargs: "cpu"
    module.manual_seed = torch.manual_seed
    module.manual_seed_all = torch.manual_seed
    module.get_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    module.set_rng_state = lambda state, *args, **kwargs: torch.set_rng_state(state)
    return module


_DEVICE_MODULE = _build_device_module()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """Host CPU as a verl platform: device ``cpu``, backend gloo, Ray CPUs, no profiler, no IPC."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return _DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # never auto-detected: selected with VERL_PLATFORM=cpu only

    def current_device(self) -> Any:
        # "cpu", not an index: verl moves tensors with ``.to(get_device_id())``, and ``.to(0)`` means cuda:0.
        return torch.cpu.current_device()

    def device_count(self) -> int:
        return torch.cpu.device_count()

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str) -> Iterator[None]:
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        """Ray takes CPUs as ``num_cpus``; the base class passes ``resources={"CPU": n}``, which Ray rejects."""
        return {"num_cpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


# -- the patches ---------------------------------------------------------------------------------------------------
def _gloo_process_group(initialize: Any) -> Any:
    """Wrap ``initialize_global_process_group_ray`` so it asks torch for plain ``gloo`` unless told otherwise."""

    @functools.wraps(initialize)
    def initialize_with_gloo(timeout_second: Any = None, backend: str | None = None) -> Any:
        return initialize(timeout_second=timeout_second, backend=backend or "gloo")

    initialize_with_gloo.rewardmap_cpu_patch = True  # type: ignore[attr-defined]
    return initialize_with_gloo


def _unpinned_offload_policy(policy_cls: type) -> type:
    """A ``CPUOffloadPolicy`` subclass that never pins host memory (pinning needs an accelerator)."""

    class UnpinnedCPUOffloadPolicy(policy_cls):  # type: ignore[misc, valid-type]
        def __init__(self, pin_memory: bool = False) -> None:
            super().__init__(pin_memory=False)

    UnpinnedCPUOffloadPolicy.rewardmap_cpu_patch = True  # type: ignore[attr-defined]
    return UnpinnedCPUOffloadPolicy


def _replace(module_name: str, attribute: str, make: Any) -> None:
    """Replace ``module.attribute`` with ``make(original)`` unless already patched (idempotent)."""
    module = sys.modules.get(module_name)
    if module is None:
        return
    original = getattr(module, attribute, None)
    if original is None or getattr(original, "rewardmap_cpu_patch", False):
        return
    setattr(module, attribute, make(original))


def apply_cpu_patches() -> None:
    """Apply the process-group and offload patches (module doc) in this process; idempotent.

    The patched names are replaced where verl defines them, before the modules that import them by name
    (``verl.workers.engine_workers``, ``verl.workers.engine.fsdp.transformer_impl``) are loaded; if one already
    is, its copy is replaced too.
    """
    import verl.utils.distributed  # noqa: F401
    import verl.utils.fsdp_utils  # noqa: F401

    for module_name in ("verl.utils.distributed", "verl.workers.engine_workers"):
        _replace(module_name, "initialize_global_process_group_ray", _gloo_process_group)
    for module_name in ("verl.utils.fsdp_utils", "verl.workers.engine.fsdp.transformer_impl"):
        _replace(module_name, "CPUOffloadPolicy", _unpinned_offload_policy)
