"""Every command in the README's shell blocks is run by a test (tests/readme_commands.py says which), or says why not.

The check has teeth both ways: a README command missing from the table fails, a table row whose command left
the README fails, a named test must exist, and the named test's file must mention what the command runs (its
``-m`` module, its script, or the variables it exports).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme_commands import COMMANDS, NOT_RUNNABLE_HERE, readme_commands

REPO = Path(__file__).resolve().parents[1]
CI_SCRIPT = REPO / ".ci" / "run"


def test_every_readme_command_has_a_row() -> None:
    missing = [c for c in readme_commands() if c not in COMMANDS]
    assert not missing, f"README commands with no test in tests/readme_commands.py: {missing}"


def test_every_row_is_still_in_the_readme() -> None:
    stale = sorted(set(COMMANDS) - set(readme_commands()))
    assert not stale, f"rows of tests/readme_commands.py whose command is no longer in the README: {stale}"


def what_it_runs(command: str) -> list[str]:
    """The names a test of ``command`` must mention: ``-m`` modules, script file names, exported variables."""
    names = []
    for part in command.split("&&"):
        part = part.strip()
        if part == "bash install.sh" and part in CI_SCRIPT.read_text():
            continue  # CI runs install.sh before every test
        tokens = part.split()
        names += [tokens[i + 1].rstrip(")\"'") for i, t in enumerate(tokens[:-1]) if t == "-m"]  # "$(python -m x)"
        names += [Path(t).name for t in tokens if re.fullmatch(r"[\w./~-]+\.(sh|sbatch|py)", t)]
        if tokens[:1] == ["export"]:
            names += [t.split("=", 1)[0] for t in tokens[1:]]
    return names


def functions_in(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_row_names_a_test_that_runs_the_command(command: str) -> None:
    where = COMMANDS[command]
    if where.startswith(NOT_RUNNABLE_HERE):
        assert len(where) > len(NOT_RUNNABLE_HERE) + 3, f"{command!r}: say why it cannot run on a CPU machine"
        return
    if where == ".ci/run":
        assert command in CI_SCRIPT.read_text()
        return
    file, _, name = where.partition("::")
    path = REPO / file
    assert path.is_file(), f"{command!r}: {file} does not exist"
    assert name.startswith("test_") and name in functions_in(path), f"{command!r}: no {name} in {file}"
    text = path.read_text()
    for needed in what_it_runs(command):
        assert needed in text, f"{command!r}: {file} never mentions {needed!r}, so it cannot run the command"


def test_commands_are_read_from_bash_blocks_only() -> None:
    text = "intro `inline` ignored\n```bash\nfoo --a \\\n   --b  # note\n# comment\n\nbar\n```\n```python\nx = 1\n```\n"
    assert readme_commands(text) == ["foo --a --b", "bar"]


def test_benchmarks_run_on_small_inputs(tmp_path: Path) -> None:
    """The README's benchmark commands, on inputs small enough for the test suite."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    rewards = [sys.executable, "benchmarks/bench_rewards.py", "--questions", "8", "--responses", "8"]
    data = [sys.executable, "benchmarks/bench_data.py", "--cities", "1", "--questions-per-city", "4"]
    data += [
        "--repeats",
        "1",
        "--skip",
        "official",
        "--skip",
        "verl",
        "--storage-maps",
        "2",
        "--storage-rows-per-map",
        "3",
    ]
    data += ["--storage-samples", "2", "--storage-max-pixels", "200704"]
    for command in (rewards, data):
        out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "/s" in out.stdout, out.stdout[-2000:]
    evaluation = [sys.executable, "benchmarks/bench_eval.py"]
    startup = [sys.executable, "benchmarks/bench_startup.py", "--repeat", "1"]
    for command, expected in ((evaluation, "q/s cold"), (startup, "--help")):
        out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert expected in out.stdout, out.stdout[-2000:]


@pytest.mark.slow
def test_bench_cpu_run_times_one_engine(tmp_path: Path) -> None:
    """benchmarks/bench_cpu_run.py with one engine: a prepared cache, one timed launch, its row and targets."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    command = [sys.executable, "benchmarks/bench_cpu_run.py", "--engines", "transformers", "--cache", str(tmp_path)]
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [row] = [line.split() for line in out.stdout.splitlines() if line.startswith("transformers ")]
    wall_s, peak_gib, step_s, probs_diff = (float(value) for value in row[1:5])
    assert wall_s > 0 and peak_gib > 0 and step_s > 0 and 0 <= probs_diff < 1e-3, row
