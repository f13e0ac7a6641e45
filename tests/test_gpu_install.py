"""The GPU install as README "GPU cluster" writes it, as a cluster user meets it: the flash-attn step's CUDA_HOME,
one MAX_JOBS, the venv's size beside the command, and the pre-flight after the model download.

The flash-attn command runs here exactly as the README writes it, with ``pip`` replaced by a recorder and ``nvcc``
by a stand-in toolkit behind a wrapper script (what the issue's cluster had: ``/usr/local/bin/nvcc`` exec'ing the
real one, from which torch guessed ``CUDA_HOME=/usr/local``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from recipe.cuda_home import RUNTIME_HEADER, NoCudaToolkit, cuda_home
from tests.fixtures.configs import compose_config
from tests.readme_commands import README, readme_commands

REPO = Path(__file__).resolve().parents[1]
FLASH_ATTN_STEP = "-r constraints/gpu-build.txt"
MODEL_7B = "Qwen/Qwen2.5-VL-7B-Instruct"


def readme_command(containing: str) -> str:
    (command,) = [c for c in readme_commands() if containing in c]
    return command


def fake_toolkit(root: Path, *, reports_top: bool = True) -> Path:
    """A CUDA toolkit folder whose ``bin/nvcc`` answers ``--dryrun`` as nvcc 13.0 does (``#$ TOP=`` on stderr)."""
    toolkit = root / "cuda-13.0"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / RUNTIME_HEADER).parent.mkdir(parents=True)
    (toolkit / RUNTIME_HEADER).write_text("/* cuda_runtime.h */\n")
    report = f'echo "#\\$ TOP={toolkit}/bin/.." >&2' if reports_top else "true"
    nvcc = toolkit / "bin" / "nvcc"
    nvcc.write_text(f'#!/bin/sh\ncase " $* " in *" --dryrun "*) echo "#\\$ _NVVM_BRANCH_=nvvm" >&2; {report};; esac\n')
    nvcc.chmod(0o755)
    return toolkit


def install_env(tmp_path: Path, *, nvcc_wrapper_for: Path | None) -> dict[str, str]:
    """PATH with ``python`` (this interpreter), a recording ``pip`` and, when given, an ``nvcc`` wrapper script."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "pip").write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"with open({str(tmp_path / 'pip.jsonl')!r}, 'a') as log:\n"
        "    log.write(json.dumps({'argv': sys.argv[1:], 'CUDA_HOME': os.environ.get('CUDA_HOME'),"
        " 'MAX_JOBS': os.environ.get('MAX_JOBS')}) + '\\n')\n"
    )
    path = [str(bin_dir)]
    if nvcc_wrapper_for is not None:
        wrappers = tmp_path / "usr-local-bin"
        wrappers.mkdir()
        (wrappers / "nvcc").write_text(f'#!/bin/sh\nexec {nvcc_wrapper_for}/bin/nvcc "$@"\n')
        path.append(str(wrappers))
    for tool in (bin_dir / "python", bin_dir / "pip", *(tmp_path / "usr-local-bin").glob("nvcc")):
        tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH", "MAX_JOBS")}
    env.update(PATH=os.pathsep.join([*path, "/usr/bin", "/bin"]), PYTHONPATH=str(REPO))
    return env


def pip_calls(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "pip.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_flash_attn_step(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = readme_command(FLASH_ATTN_STEP)
    return subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_the_flash_attn_step_sets_cuda_home_to_the_toolkit_behind_an_nvcc_wrapper(tmp_path: Path) -> None:
    """The README's ``CUDA_HOME=$(python -m recipe.cuda_home) && export CUDA_HOME && MAX_JOBS=... pip install``:
    pip runs with the toolkit nvcc execs, not two folders above the wrapper (torch's guess)."""
    toolkit = fake_toolkit(tmp_path / "opt")
    result = run_flash_attn_step(install_env(tmp_path, nvcc_wrapper_for=toolkit))
    assert result.returncode == 0, result.stderr
    (call,) = pip_calls(tmp_path)
    assert call["CUDA_HOME"] == str(toolkit.resolve())
    assert not (tmp_path / RUNTIME_HEADER).exists(), "torch's guess, two folders above the wrapper, has no headers"
    assert call["MAX_JOBS"] == readme_max_jobs()
    assert call["argv"] == [
        "install",
        "--no-build-isolation",
        "-c",
        "constraints/gpu-py311.txt",
        *FLASH_ATTN_STEP.split(),
    ]


def test_the_flash_attn_step_stops_before_pip_without_nvcc(tmp_path: Path) -> None:
    result = run_flash_attn_step(install_env(tmp_path, nvcc_wrapper_for=None))
    assert result.returncode != 0
    assert pip_calls(tmp_path) == [], "no build is started that would fail minutes later"
    assert "no nvcc on PATH and CUDA_HOME is unset: load a CUDA 13 toolkit" in result.stderr


def test_cuda_home_keeps_a_set_one_and_checks_every_one(tmp_path: Path) -> None:
    toolkit = fake_toolkit(tmp_path / "opt")
    assert cuda_home({"CUDA_HOME": str(toolkit), "PATH": ""}) == toolkit
    with pytest.raises(NoCudaToolkit, match=f"CUDA_HOME={tmp_path} has no include/cuda_runtime.h"):
        cuda_home({"CUDA_HOME": str(tmp_path), "PATH": ""})
    silent = fake_toolkit(tmp_path / "silent", reports_top=False)  # an nvcc that prints no TOP: its real path
    links = tmp_path / "links"
    links.mkdir()
    (links / "nvcc").symlink_to(silent / "bin" / "nvcc")
    assert cuda_home({"PATH": str(links)}) == silent.resolve()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on PATH here")
def test_the_nvcc_on_this_machine_names_a_toolkit_with_the_runtime_header() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    assert (cuda_home(env) / RUNTIME_HEADER).is_file()


def readme_max_jobs() -> str:
    (value,) = re.findall(r"\bMAX_JOBS=(\d+)", readme_command(FLASH_ATTN_STEP))
    return value


def test_max_jobs_is_one_number_in_one_place() -> None:
    """The README's flash-attn command is the only place that sets MAX_JOBS (it said 8, gpu-build.txt said 16)."""
    places = [
        README,
        REPO / "install.sh",
        *sorted((REPO / "constraints").iterdir()),
        *sorted((REPO / "launch").iterdir()),
    ]
    settings = [(p.name, n) for p in places if p.is_file() for n in re.findall(r"\bMAX_JOBS=(\d+)", p.read_text())]
    assert settings == [("README.md", readme_max_jobs())]


def test_the_venv_size_is_stated_beside_the_install_command() -> None:
    """Cluster home quotas trip on the 11 GB venv: the install block says so, and the Install section says why."""
    install = README.read_text().split("### Install", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", install, flags=re.S).group(1)
    (venv_line,) = [line for line in block.splitlines() if "-m venv" in line]
    assert "11 GB" in venv_line and "quota" in venv_line
    for part in ("nvidia", "flashinfer", "PIP_CACHE_DIR"):
        assert part in install, part


def test_the_preflight_comes_after_the_download_of_the_model_it_checks() -> None:
    """Right after the install the model is not in the cache and the pre-flight SKIPs its processor check: the
    README downloads the model first, and its pre-flight runs the preset of that model."""
    commands = readme_commands()
    download = commands.index(f"hf download {MODEL_7B}")
    offline = next(i for i, c in enumerate(commands) if "HF_HUB_OFFLINE=1" in c)
    (preflight,) = [i for i, c in enumerate(commands) if "--preflight" in c and "recipe.main_rewardmap" in c]
    assert download < offline < preflight
    overrides = [t for t in commands[preflight].split() if "=" in t]
    assert compose_config(*overrides).actor_rollout_ref.model.path == MODEL_7B


def hub_cache_with(model: str, checkpoint: Path, hf_home: Path) -> None:
    """``hf download MODEL`` as it lays the files out in ``$HF_HOME/hub`` (a tiny checkpoint under the name)."""
    repo = hf_home / "hub" / ("models--" + model.replace("/", "--"))
    revision = "0" * 40
    shutil.copytree(checkpoint, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def test_the_readme_preflight_loads_the_downloaded_models_processor_offline(tiny_dir: Path, tmp_path: Path) -> None:
    """The README's pre-flight after the download: "model processor" is ok, read offline from the cache (the tiny
    checkpoint stands in for the 7B one), and the prompts are measured with it, not estimated."""
    hub_cache_with(MODEL_7B, tiny_dir, tmp_path / "hf")
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", REWARDMAP_CACHE=str(tmp_path / "cache"))
    env.pop("RAY_ADDRESS", None)
    command = readme_command("--preflight").split()
    assert command[:3] == ["python", "-m", "recipe.main_rewardmap"]
    small = ["rewardmap.synthetic_cities=3", "rewardmap.synthetic_questions_per_city=24", "data.train_batch_size=4"]
    small.append("actor_rollout_ref.actor.ppo_mini_batch_size=4")
    small.append("actor_rollout_ref.model.trust_remote_code=true")  # the tiny checkpoint's video-processor stand-in
    out = subprocess.run(
        [sys.executable, *command[1:], *small], capture_output=True, text=True, timeout=600, cwd=REPO, env=env
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"[ok] model processor: loaded from {MODEL_7B}" in out.stdout
    assert "measured with the processor" in out.stdout
