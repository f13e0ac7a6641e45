"""recipe.nested_mrope_fix: equal-length batches of M-RoPE position ids read back intact at verl's engine entry.

verl keeps a batch's (4, L_i) position ids as a jagged nested tensor; with equal L_i torch makes the 4 rows ragged
and verl's ``maybe_fix_3d_position_ids`` then corrupts it. Each case reads the ids back the two ways verl's engine
does: ``unbind`` (mini-batch split in ``update_actor``) and ``to_padded_tensor`` with an explicit output size (the
FSDP engine's padded forward).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils

import recipe.nested_mrope_fix as fix

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "equal lengths": [(4, 6)] * 3,
    "one sample": [(4, 9)],
    "one sample, length 4": [(4, 4)],
    "equal lengths, three rows": [(3, 5)] * 2,
    "mixed lengths": [(4, 5), (4, 7), (4, 6)],
    "equal pairs": [(4, 63), (4, 63), (4, 81), (4, 81)],
}


def batch_of(shapes: list[tuple[int, int]]) -> tuple[TensorDict, list[torch.Tensor]]:
    """Position ids as verl's agent loop stores them (``torch.nested.as_nested_tensor``), and the samples."""
    samples = [torch.arange(rows * length).view(rows, length) + 1000 * i for i, (rows, length) in enumerate(shapes)]
    nested = torch.nested.as_nested_tensor(samples, layout=torch.jagged)
    return TensorDict({"position_ids": nested}, batch_size=[len(samples)]), samples


def read_back(data: TensorDict, samples: list[torch.Tensor]) -> tuple[bool, bool]:
    """(unbind gives the samples, the padded tensor holds them), as the engine reads position ids."""
    position_ids = data["position_ids"]
    rows, longest = samples[0].shape[0], max(s.shape[1] for s in samples)
    unbound = all(torch.equal(a, b) for a, b in zip(position_ids.unbind(0), samples, strict=True))
    padded = torch.nested.to_padded_tensor(position_ids, padding=0, output_size=(len(samples), rows, longest))
    held = all(torch.equal(padded[i, :, : s.shape[1]], s) for i, s in enumerate(samples))
    return unbound, held


@pytest.mark.parametrize("case", list(CASES))
def test_fixed_function_keeps_every_layout_intact(case: str) -> None:
    data, samples = batch_of(CASES[case])
    fix.maybe_fix_3d_position_ids(data)
    assert read_back(data, samples) == (True, True)
    assert data["position_ids"]._ragged_idx == 2  # verl's own repair still applies


def test_verls_function_still_breaks_equal_lengths() -> None:
    """Pins the bug the fix exists for; when this fails, verl fixed it and recipe/nested_mrope_fix.py can go."""
    original = fix.verl_maybe_fix_3d_position_ids
    assert original is not None and original.__module__ == "verl.utils.tensordict_utils"
    data, samples = batch_of(CASES["equal lengths"])
    original(data)
    try:
        outcome = read_back(data, samples)
    except RuntimeError:  # unbind: "split_with_sizes expects split_sizes to sum exactly to 6"
        outcome = (False, False)
    assert outcome != (True, True)
    mixed, mixed_samples = batch_of(CASES["mixed lengths"])
    original(mixed)
    assert read_back(mixed, mixed_samples) == (True, True), "verl's function is right on unequal lengths"


def test_engine_modules_get_the_fixed_function_in_a_fresh_process() -> None:
    """Delivered as Ray workers get it: ``import verl`` imports the module listed in VERL_USE_EXTERNAL_MODULES."""
    code = (
        "import verl, verl.workers.engine.base as base, verl.workers.engine_workers as workers\n"
        "from verl.utils import tensordict_utils as tu\n"
        "import recipe.nested_mrope_fix as fix\n"
        "print(all(m.maybe_fix_3d_position_ids is fix.maybe_fix_3d_position_ids for m in (tu, base, workers)),"
        " fix.installed())\n"
    )
    env = {"VERL_USE_EXTERNAL_MODULES": fix.EXTERNAL_MODULE, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["True", "True"]


def test_install_reaches_engine_modules_imported_before_it() -> None:
    import verl.workers.engine.base as base

    base.maybe_fix_3d_position_ids = tensordict_utils.maybe_fix_3d_position_ids = lambda data: None
    assert not fix.installed()
    fix.install()
    assert base.maybe_fix_3d_position_ids is fix.maybe_fix_3d_position_ids and fix.installed()
