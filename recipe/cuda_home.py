"""``python -m recipe.cuda_home``: print the CUDA toolkit folder the flash-attn build must use, or say why not.

flash-attn compiles with torch's ``CUDA_HOME``, which torch guesses, when the variable is unset, as two folders
above the first ``nvcc`` on PATH (``torch/utils/cpp_extension.py``, ``_find_cuda_home``). On a cluster that
``nvcc`` is often a wrapper script (``/usr/local/bin/nvcc`` exec'ing ``/usr/local/cuda-13.0/bin/nvcc``), so torch
guesses ``/usr/local`` and the build fails minutes later on a missing ``cuda_runtime.h``. This asks ``nvcc``
itself where its toolkit is (``nvcc --dryrun`` prints ``#$ TOP=<toolkit>/bin/..``), so wrappers and symlinks
resolve, and checks that the folder holds the headers the build includes. README "GPU cluster > Install" runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

RUNTIME_HEADER = Path("include") / "cuda_runtime.h"  # what the flash-attn build failed on
_TOP = "#$ TOP="
_DRYRUN = ("--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull)  # prints nvcc's settings, compiles nothing


class NoCudaToolkit(RuntimeError):
    """No usable CUDA toolkit: the message says what was looked at and what to do."""


def nvcc_toolkit(nvcc: str) -> Path:
    """The toolkit folder ``nvcc`` runs from, as nvcc reports it (``TOP``), else two folders above its real path."""
    try:
        run = subprocess.run([nvcc, *_DRYRUN], capture_output=True, text=True, timeout=60)
        out = run.stdout + run.stderr  # nvcc writes the settings to stderr
    except (OSError, subprocess.SubprocessError):
        out = ""
    top = next((line[len(_TOP) :].strip() for line in out.splitlines() if line.startswith(_TOP)), None)
    return Path(top).resolve() if top else Path(nvcc).resolve().parent.parent


def cuda_home(environ: dict[str, str] | None = None) -> Path:
    """``CUDA_HOME`` (or ``CUDA_PATH``) when set, else the toolkit of the ``nvcc`` on PATH; raises NoCudaToolkit
    when neither exists or the folder lacks ``include/cuda_runtime.h``."""
    env = os.environ if environ is None else environ
    given = env.get("CUDA_HOME") or env.get("CUDA_PATH")
    if given:
        home, source = Path(given), f"CUDA_HOME={given}"
    else:
        nvcc = shutil.which("nvcc", path=env.get("PATH"))
        if nvcc is None:
            raise NoCudaToolkit(
                "no nvcc on PATH and CUDA_HOME is unset: load a CUDA 13 toolkit (e.g. module load cuda/13.0) "
                "or set CUDA_HOME to its folder"
            )
        home = nvcc_toolkit(nvcc)
        source = f"the toolkit of {nvcc} ({home})"
    if not (home / RUNTIME_HEADER).is_file():
        raise NoCudaToolkit(f"{source} has no {RUNTIME_HEADER}: set CUDA_HOME to a CUDA 13 toolkit folder")
    return home


def main() -> None:
    try:
        print(cuda_home())
    except NoCudaToolkit as err:
        print(f"[rewardmap] {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
