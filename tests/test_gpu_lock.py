"""The GPU locks agree with setup.py's pins and with verl 0.9.1's own requirements (read from its wheel metadata).

A lock (constraints/gpu-py3XX.txt) is what `pip install -c LOCK -e ".[gpu]"` installs on a cluster; these tests
check it without a network or a GPU: every requirement of setup.py and of verl's vllm/fsdp extras is met by a
pinned version, and the one package left out (flash-attn, a source build) is pinned in constraints/gpu-build.txt.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCKS = {"3.11": REPO / "constraints" / "gpu-py311.txt", "3.12": REPO / "constraints" / "gpu-py312.txt"}
BUILD_STEP = REPO / "constraints" / "gpu-build.txt"
# verl's extras a cluster install needs: `vllm` (rollout) and `fsdp` (training), and what they pull in.
VERL_EXTRAS = ("vllm", "fsdp")
# Built from source in the second step, never in a lock.
SOURCE_BUILDS = {"flash-attn"}


def read_pins(path: Path) -> dict[str, Version]:
    """``name==version`` lines of a requirements/constraints file, by canonical name."""
    pins: dict[str, Version] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path.name}: {line!r} is not an exact pin"
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def setup_lists() -> dict[str, list[str]]:
    """The module-level requirement lists of setup.py (``A = [...]`` and ``B = A + [...]``), without running it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    lists: dict[str, list[str]] = {}

    def value(node: ast.expr) -> list[str]:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return value(node.left) + value(node.right)
        if isinstance(node, ast.Name):
            return lists[node.id]
        return list(ast.literal_eval(node))

    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if isinstance(node.value, ast.List | ast.BinOp):
                lists[node.targets[0].id] = value(node.value)
    return lists


def linux_env(python: str, extra: str = "") -> dict[str, str]:
    """Marker environment of CPython ``python`` (e.g. "3.11") on Linux x86_64, with ``extra`` selected."""
    env = default_environment()
    env.update(
        sys_platform="linux",
        platform_system="Linux",
        platform_machine="x86_64",
        os_name="posix",
        python_version=python,
        python_full_version=f"{python}.0",
        implementation_name="cpython",
        platform_python_implementation="CPython",
        extra=extra,
    )
    return env


def verl_requirements(python: str) -> list[Requirement]:
    """verl 0.9.1's requirements for ``verl[vllm,fsdp]`` on Linux x86_64, self-referencing extras expanded."""
    dist = importlib.metadata.distribution("verl")
    assert dist.version == "0.9.1", "these checks read verl 0.9.1's own metadata"
    all_reqs = [Requirement(r) for r in dist.requires or []]
    wanted, seen, out = ["", *VERL_EXTRAS], set(), []
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in all_reqs:
            if req.marker is not None and not req.marker.evaluate(linux_env(python, extra)):
                continue
            if req.marker is None and extra:
                continue  # unconditional requirements are taken once, with extra ""
            if canonicalize_name(req.name) == "verl":
                wanted.extend(req.extras)
            else:
                out.append(req)
    return out


@pytest.fixture(params=sorted(LOCKS))
def python_and_lock(request: pytest.FixtureRequest) -> tuple[str, dict[str, Version]]:
    return request.param, read_pins(LOCKS[request.param])


def test_lock_pins_verl_exactly_as_setup_py(python_and_lock: tuple[str, dict[str, Version]]) -> None:
    _, lock = python_and_lock
    lists = setup_lists()
    assert "verl==0.9.1" in lists["INSTALL_REQUIRES"]
    assert "verl[vllm]==0.9.1" in lists["GPU_EXTRA"]
    assert lock[canonicalize_name("verl")] == Version("0.9.1")


def test_lock_meets_every_setup_py_requirement(python_and_lock: tuple[str, dict[str, Version]]) -> None:
    python, lock = python_and_lock
    lists = setup_lists()
    for line in lists["INSTALL_REQUIRES"] + lists["GPU_EXTRA"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in lock, f"{line!r} (setup.py) is not in the {python} lock"
        assert req.specifier.contains(lock[name], prereleases=True), f"lock has {name}=={lock[name]}, setup.py {line!r}"


def test_lock_meets_verls_own_requirements(python_and_lock: tuple[str, dict[str, Version]]) -> None:
    """torch, torchvision, vLLM, transformers, tensordict, trl, ...: exactly what verl[vllm,fsdp]==0.9.1 asks."""
    python, lock = python_and_lock
    build = read_pins(BUILD_STEP)
    checked = set()
    for req in verl_requirements(python):
        name = canonicalize_name(req.name)
        if name in SOURCE_BUILDS:
            assert name not in lock, f"{name} builds from source: it belongs in {BUILD_STEP.name}, not the lock"
            assert req.specifier.contains(build[name]), f"{BUILD_STEP.name} has {name}=={build[name]}, verl {req}"
        else:
            assert name in lock, f"verl 0.9.1 requires {req}; missing from the {python} lock"
            assert req.specifier.contains(lock[name], prereleases=True), f"lock {name}=={lock[name]} vs verl {req}"
        checked.add(name)
    # The pins this recipe is reproduced with (verl's `vllm` extra): a change of verl must show up here.
    assert {"torch", "vllm", "transformers", "flash-attn", "tensordict"} <= checked
    assert (lock["torch"], lock["vllm"], lock["transformers"]) == (
        Version("2.11.0"),
        Version("0.24.0"),
        Version("5.9.0"),
    )


def test_cpu_constraints_hold_transformers_at_the_gpu_version() -> None:
    """CPU tests exercise the transformers that GPU users run."""
    cpu = read_pins(REPO / "constraints" / "cpu.txt")
    for lock in LOCKS.values():
        assert cpu["transformers"] == read_pins(lock)["transformers"]


def test_locks_say_platform_and_how_to_regenerate() -> None:
    for python, lock in LOCKS.items():
        head = lock.read_text().splitlines()[:3]
        assert f"Python {python} on Linux x86_64-manylinux_2_31" in head[0]
        assert "bash launch/lock_gpu.sh" in head[1]
        assert f"-c constraints/{lock.name}" in head[2]
    assert read_pins(BUILD_STEP) == {"flash-attn": Version("2.8.3")}


def _write_stub_uv(path: Path, fail_on_check: bool) -> None:
    path.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "with open(os.environ['STUB_LOG'], 'a') as log:\n"
        "    log.write(' '.join(sys.argv[1:]) + '\\n')\n"
        "if '--only-binary' in sys.argv:\n"
        f"    sys.exit({1 if fail_on_check else 0})\n"
        "print('torch==2.11.0')\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("fail_on_check", [False, True])
def test_lock_script_resolves_for_linux_and_checks_wheels(tmp_path: Path, fail_on_check: bool) -> None:
    """launch/lock_gpu.sh: one resolution per Python for manylinux_2_31, a wheels-only check, atomic replace."""
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    (repo / "constraints").mkdir()
    (repo / "launch" / "lock_gpu.sh").write_text((REPO / "launch" / "lock_gpu.sh").read_text())
    (repo / "constraints" / "gpu-py311.txt").write_text("old\n")
    uv = tmp_path / "uv"
    _write_stub_uv(uv, fail_on_check)
    env = {**os.environ, "UV": str(uv), "STUB_LOG": str(tmp_path / "log"), "PYTHON_VERSIONS": "3.11"}
    run = subprocess.run(["bash", "launch/lock_gpu.sh"], cwd=repo, env=env, capture_output=True, text=True)
    calls = (tmp_path / "log").read_text().splitlines()
    assert calls[0].startswith("pip compile setup.py --extra gpu --python-platform x86_64-manylinux_2_31")
    assert "--python-version 3.11" in calls[0]
    assert "--only-binary :all: --no-binary antlr4-python3-runtime" in calls[1]
    lock = (repo / "constraints" / "gpu-py311.txt").read_text()
    leftovers = [p.name for p in (repo / "constraints").iterdir() if ".tmp-" in p.name]
    assert leftovers == []
    if fail_on_check:
        assert run.returncode != 0 and lock == "old\n", "a lock failing the wheels check must not replace the old one"
    else:
        assert run.returncode == 0, run.stderr
        assert lock.splitlines()[-1] == "torch==2.11.0" and lock.startswith("# GPU lock")
