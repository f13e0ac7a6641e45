"""launch/apptainer_bin.sh: `python` and `ray` wrappers that run inside the image with the venv's Python.

The launch scripts are not changed for a container: with the wrappers first on PATH, every `python` and `ray`
they call runs in the image (the apptainer stub runs the command here, as the image would).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.fixtures.cluster_stubs import REPO, calls_of, read_calls, stub_env

NAME = "qwen2_5_vl_7b-rl_baseline"


def make_wrappers(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(image, venv, wrapper folder); the venv's python is the recording python stub."""
    image = tmp_path / "images" / "verl vllm024.sif"  # a space in the path must survive
    image.parent.mkdir()
    image.write_text("")
    venv = tmp_path / "rm-venv"
    (venv / "bin").mkdir(parents=True)
    stub_env(tmp_path)  # installs the stubs
    (venv / "bin" / "python").symlink_to(tmp_path / "stub-bin" / "python")
    out = tmp_path / "rm-sif-bin"
    made = subprocess.run(
        ["bash", str(REPO / "launch" / "apptainer_bin.sh"), str(image), str(venv), str(out)],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    return image, venv, out


def test_launch_script_runs_unchanged_with_the_wrappers_first_on_path(tmp_path: Path) -> None:
    image, venv, out = make_wrappers(tmp_path)
    env = stub_env(tmp_path, STUB_EXPERIMENT_NAME=NAME)
    env["PATH"] = f"{out}:{env['PATH']}"  # export PATH=~/rm-sif-bin:$PATH
    result = subprocess.run(
        ["bash", "launch/run_rewardmap_qwen2_5_vl_7b.sh", "--no-wait", "+experiment=rl_baseline"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    log = read_calls(tmp_path / "calls.jsonl")
    in_image = calls_of(log, "apptainer", "exec", "--nv", str(image))
    assert [c["argv"][4:6] for c in in_image if c["argv"][4:6] == ["-m", "ray.scripts.scripts"]], "ray in the image"
    assert all(c["argv"][3] == str(venv / "bin" / "python") for c in in_image), "always the venv's Python"
    (submit,) = calls_of(log, "ray", "job", "submit")
    assert submit["argv"][-1] == "+experiment=rl_baseline" and "--no-wait" in submit["argv"]


def test_missing_image_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(REPO / "launch" / "apptainer_bin.sh"), str(tmp_path / "none.sif"), "/v", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "no readable image" in result.stderr
    assert not (tmp_path / "o").exists()
