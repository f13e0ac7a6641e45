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


def run_install(tmp_path: Path, **env: str) -> list[str]:
    """Run a copy of install.sh whose .venv holds recording stubs; return the commands it ran, in order."""
    (tmp_path / "install.sh").write_text((REPO / "install.sh").read_text())
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "uv"):
        stub = bin_dir / name
        stub.write_text(RECORDER)
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "log"
    full_env = {k: v for k, v in os.environ.items() if k != "TORCH_INDEX_URL"}
    full_env.update(STUB_LOG=str(log), **env)
    subprocess.run(["bash", "install.sh"], cwd=tmp_path, env=full_env, check=True)
    return log.read_text().splitlines()


def test_default_install_asks_the_configured_index_for_torch_first(tmp_path: Path) -> None:
    calls = run_install(tmp_path)
    assert calls[1] == "python -m pip install -q torch==2.13.0"
    assert calls[2].startswith("uv pip install -q --python .venv/bin/python --compile-bytecode -c constraints/cpu.txt")
    assert calls[2].endswith("-e .[test]")
    assert "index-url" not in " ".join(calls)


@pytest.mark.parametrize("url", ["https://download.pytorch.org/whl/cpu", "file:///srv/wheels/cpu"])
def test_torch_index_url_applies_to_torch_only(tmp_path: Path, url: str) -> None:
    calls = run_install(tmp_path, TORCH_INDEX_URL=url)
    assert calls[1] == f"python -m pip install -q --index-url {url} torch==2.13.0"
    assert "index-url" not in calls[2], "the recipe's own dependencies come from the usual index"
