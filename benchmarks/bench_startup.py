"""How long the entry point takes to answer at once: ``--help``, a mistyped override, a bad config group.

Each command runs in a fresh process (best of ``--repeat`` runs) and must exit within the target (3 s) without
importing verl or Ray; ``import verl`` is timed in the same run for comparison, and the ratio printed is the
command's time over that import's.

    .venv/bin/python benchmarks/bench_startup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 3.0
ENTRY = [sys.executable, "-m", "recipe.main_rewardmap"]
CASES = {
    "--help": [*ENTRY, "--help"],
    "mistyped override": [*ENTRY, "data.train_batch_sise=4"],
    "bad config group": [*ENTRY, "preset=qwen9_vl_1t"],
    "import verl (reference)": [sys.executable, "-c", "import verl"],
}


def best_time(command: list[str], repeat: int) -> tuple[float, int]:
    """(fastest wall time in seconds, exit status of the last run) over ``repeat`` fresh processes."""
    best, status = float("inf"), 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        best = min(best, time.perf_counter() - start)
        status = done.returncode
    return best, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {name: best_time(command, args.repeat) for name, command in CASES.items()}
    reference = results["import verl (reference)"][0]
    print(f"entry-point start-up, best of {args.repeat}, target {TARGET_S:.0f} s")
    print(f"{'case':26} {'seconds':>8} {'exit':>5} {'x import verl':>14} {'within target':>14}")
    for name, (seconds, status) in results.items():
        within = "-" if name == "import verl (reference)" else "yes" if seconds <= TARGET_S else "NO"
        print(f"{name:26} {seconds:8.2f} {status:5d} {seconds / reference:14.2f} {within:>14}")


if __name__ == "__main__":
    main()
