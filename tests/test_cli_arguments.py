"""Hydra flags and overrides in any order on ``python -m recipe.main_rewardmap`` (and the launch scripts over it).

Hydra's parser reads the overrides as one run of positional arguments; the entry point adds overrides of its own
(verl's config search path, the CPU dry run), so it must hand Hydra the overrides first and the flags after them,
whatever order the user typed. Each command line is checked with the parser Hydra itself runs.
"""

from __future__ import annotations

import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
from hydra._internal.utils import get_args_parser
from omegaconf import OmegaConf

from recipe.main_rewardmap import command_line, hydra_arguments
from tests.fixtures.cluster_stubs import REPO, calls_of, read_calls, stub_env

PRESET = "preset=qwen2_5_vl_7b"
SEARCHPATH = "hydra.searchpath"


def hydra_parse(argv: list[str], *, has_cuda: bool = False) -> Namespace:
    """What Hydra's parser makes of the command line the entry point builds from ``argv`` (a CPU machine)."""
    args, _ = command_line(argv, has_cuda=has_cuda, ray_cluster=False)
    return get_args_parser().parse_args(hydra_arguments(args))  # argparse exits 2 on a refused command line


def user_overrides(parsed: Namespace) -> list[str]:
    return [o for o in parsed.overrides if not o.startswith(SEARCHPATH)]


@pytest.mark.parametrize(
    ("argv", "flags", "overrides"),
    [
        # the forms of the issue: an override, then a Hydra flag
        pytest.param([PRESET, "--cfg", "job"], {"cfg": "job", "resolve": True}, [PRESET], id="override then --cfg"),
        pytest.param([PRESET, "--help"], {"help": True}, [PRESET], id="override then --help"),
        pytest.param([PRESET, "--info"], {"info": "all"}, [PRESET], id="override then --info"),
        pytest.param([PRESET, "-c", "job"], {"cfg": "job", "resolve": True}, [PRESET], id="override then -c"),
        pytest.param(
            [PRESET, "--cfg", "job", "--resolve"],
            {"cfg": "job", "resolve": True},
            [PRESET],
            id="override then --cfg --resolve",
        ),
        # overrides on both sides of flags, in the order typed (the last of a key wins)
        pytest.param(
            ["a=1", "--cfg", "job", "b=2", "a=3"], {"cfg": "job"}, ["a=1", "b=2", "a=3"], id="overrides around a flag"
        ),
        pytest.param(
            ["--info", "searchpath", PRESET], {"info": "searchpath"}, [PRESET], id="--info with its value first"
        ),
        pytest.param(
            ["--info", "~trainer.x", "+y=1"], {"info": "all"}, ["~trainer.x", "+y=1"], id="--info before a deletion"
        ),
        pytest.param(
            [PRESET, "--cfg=hydra", "-p", "trainer"],
            {"cfg": "hydra", "package": "trainer"},
            [PRESET],
            id="--cfg= and -p",
        ),
        # a flag that does not inspect: the dry run the entry point adds on a CPU machine lands among the overrides
        pytest.param(
            [PRESET, "-m", "trainer.seed=1,2"],
            {"multirun": True},
            [PRESET, "trainer.seed=1,2", "dry_run=cpu"],
            id="multirun with the dry run added",
        ),
        pytest.param(
            ["--dry-run", PRESET, "--cfg", "job"], {"cfg": "job"}, ["dry_run=cpu", PRESET], id="--dry-run with --cfg"
        ),
    ],
)
def test_flags_and_overrides_in_any_order(argv: list[str], flags: dict[str, object], overrides: list[str]) -> None:
    parsed = hydra_parse(argv)
    assert user_overrides(parsed) == overrides
    assert sum(o.startswith(SEARCHPATH) for o in parsed.overrides) == 1  # verl's config folder, added once
    for name, value in flags.items():
        assert getattr(parsed, name) == value, name


def test_a_users_search_path_is_kept_and_none_added() -> None:
    parsed = hydra_parse(["--cfg", "job", "hydra.searchpath=[pkg://verl.trainer.config]"])
    assert parsed.overrides == ["hydra.searchpath=[pkg://verl.trainer.config]"]


def test_an_override_after_a_flag_composes_into_the_printed_job() -> None:
    """The issue's command, with one more override after the flag: it prints the 7B preset's resolved job."""
    argv = [PRESET, "--cfg", "job", "trainer.total_training_steps=3"]
    out = subprocess.run(
        [sys.executable, "-m", "recipe.main_rewardmap", *argv], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-2000:]
    job = OmegaConf.create(out.stdout)
    assert job.actor_rollout_ref.model.path == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert job.trainer.total_training_steps == 3


def test_the_gpu_smoke_script_passes_a_hydra_flag_after_its_overrides(tmp_path: Path) -> None:
    """``bash launch/run_rewardmap_gpu_smoke.sh --cfg job``: the script puts the user's arguments after its own
    overrides; the command it runs (recorded by the stub python, no Ray) is one Hydra accepts."""
    env = stub_env(tmp_path, MODEL="Qwen/Qwen2.5-VL-3B-Instruct", STUB_EXPERIMENT_NAME="gpu_smoke")
    script = REPO / "launch" / "run_rewardmap_gpu_smoke.sh"
    result = subprocess.run(["bash", str(script), "--cfg", "job"], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    (call,) = calls_of(read_calls(tmp_path / "calls.jsonl"), "python", "-m", "recipe.main_rewardmap")
    argv = call["argv"][2:]
    assert argv[-2:] == ["--cfg", "job"]
    parsed = hydra_parse(argv, has_cuda=True)
    assert parsed.cfg == "job" and "trainer.experiment_name=gpu_smoke" in parsed.overrides
    assert user_overrides(parsed) == argv[:-2]
