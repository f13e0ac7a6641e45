"""launch/apptainer_bin.sh: `python` and `ray` wrappers that run inside the image with the venv's Python."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.fixtures.cluster_stubs import REPO, calls_of, read_calls, stub_env


def test_wrappers_run_the_command_in_the_image_with_the_venv_python(tmp_path: Path) -> None:
    image = tmp_path / "images" / "verl vllm024.sif"  # a space in the path must survive
    image.parent.mkdir()
    image.write_text("")
    out = tmp_path / "sif-bin"
    made = subprocess.run(
        ["bash", str(REPO / "launch" / "apptainer_bin.sh"), str(image), "/shared/rm-venv", str(out)],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    env = stub_env(tmp_path)
    subprocess.run([str(out / "ray"), "start", "--head", "--num-gpus=8"], env=env, check=True)
    subprocess.run([str(out / "python"), "-m", "recipe.main_rewardmap", "x=a b"], env=env, check=True)
    ray_call, python_call = calls_of(read_calls(tmp_path / "calls.jsonl"), "apptainer")
    venv_python = "/shared/rm-venv/bin/python"
    assert ray_call["argv"] == [
        "exec",
        "--nv",
        str(image),
        venv_python,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--num-gpus=8",
    ]
    assert python_call["argv"] == ["exec", "--nv", str(image), venv_python, "-m", "recipe.main_rewardmap", "x=a b"]


def test_missing_image_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(REPO / "launch" / "apptainer_bin.sh"), str(tmp_path / "none.sif"), "/v", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "no readable image" in result.stderr
    assert not (tmp_path / "o").exists()
