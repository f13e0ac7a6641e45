"""Workaround for a verl 0.9.1 bug: in a batch of equal-length sequences the nested M-RoPE position ids are ragged on
the wrong dimension, so the actor's log-probs are silently wrong and ``update_actor`` crashes.

verl keeps a batch's Qwen2.5-VL position ids as a jagged nested tensor of per-sample ``(4, L_i)`` tensors, ragged on
the token dimension: values ``(4, sum L_i)``. It builds them with ``torch.nested.as_nested_tensor`` (agent loop:
``tensordict_utils.list_of_dict_to_tensordict``; ``workers/utils/padding.py`` ``left_right_2_no_padding``; and
TransferQueue when it rebuilds batches from samples), and torch infers the ragged dimension: when every L_i is equal
(any batch of one sample, too) it picks dim 1, the four rows: values ``(bs * 4, L)``. Every engine entry then calls
``tensordict_utils.maybe_fix_3d_position_ids``, which sets ``_ragged_idx = 2`` unconditionally (it repairs a ragged
index lost in pickling), and the tensor turns inconsistent: ``compute_log_prob`` (old and reference log-probs) reads
wrong positions without an error, off by up to 8.65 nats on a position-sensitive tiny model, and ``update_actor``
fails in ``unbind`` ("split_with_sizes expects split_sizes to sum exactly to L"). Upstream: verl-project/verl#7899.

The fix replaces ``maybe_fix_3d_position_ids`` with one that recognises the row-ragged layout and rebuilds it as
verl's token-ragged one before doing what verl's does; any other tensor is treated exactly as verl treats it. It is
installed where verl defines the function and in the modules that import it by name, and must run in every process
that hosts a training engine: ``import verl`` imports this module in every Ray worker through
``VERL_USE_EXTERNAL_MODULES`` (``configs/rewardmap.yaml``, ``ray_kwargs.ray_init.runtime_env.env_vars``). The vLLM
rollout computes its own positions and is not involved. Remove it once verl fixes the bug:
``tests/test_nested_mrope_fix.py::test_verls_function_still_breaks_equal_lengths`` pins verl's function as broken
and fails on the verl release that fixes it.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

EXTERNAL_MODULE = __name__  # the name to list in VERL_USE_EXTERNAL_MODULES
M_ROPE_ROWS = (3, 4)  # (t, h, w) or verl's (text, t, h, w)
# verl's own definition first; the others bind the name with ``from verl.utils.tensordict_utils import ...``.
PATCHED_MODULES = (
    "verl.utils.tensordict_utils",
    "verl.workers.engine.base",
    "verl.workers.engine_workers",
    "verl.workers.engine_workers_tinker",
)


def is_ragged_on_rows(position_ids: torch.Tensor) -> bool:
    """True for a nested ``(bs, R, L)`` tensor whose values are ``(bs * R, L)``: equal lengths, ragged on dim 1.

    verl's layout, values ``(R, sum L)``, is never mistaken for it; where both readings coincide (one sample with
    L == R) the values are the same and nothing needs rebuilding.
    """
    values, offsets = position_ids.values(), position_ids.offsets()
    if values.dim() != 2:
        return False
    total = int(offsets[-1])
    if values.shape[0] in M_ROPE_ROWS and total == values.shape[1]:
        return False  # verl's token-ragged layout
    lengths = offsets.diff()
    return total == values.shape[0] and int(lengths[0]) in M_ROPE_ROWS and bool((lengths == lengths[0]).all())


def ragged_on_tokens(position_ids: torch.Tensor) -> torch.Tensor:
    """The same per-sample ``(R, L)`` tensors as a nested tensor ragged on the token dimension (verl's layout)."""
    values, offsets = position_ids.values(), position_ids.offsets()
    batch, rows, length = offsets.numel() - 1, int(offsets.diff()[0]), values.shape[1]
    tokens = values.view(batch, rows, length).transpose(0, 1).reshape(rows, batch * length)  # (R, bs * L)
    token_offsets = torch.arange(batch + 1, dtype=offsets.dtype, device=offsets.device) * length
    return torch.nested.nested_tensor_from_jagged(
        tokens, token_offsets, jagged_dim=2, min_seqlen=length, max_seqlen=length
    )


def maybe_fix_3d_position_ids(data: Any) -> None:
    """verl's ``maybe_fix_3d_position_ids``, after rebuilding row-ragged position ids in verl's layout."""
    if "position_ids" in data.keys() and data["position_ids"].dim() == 3 and data["position_ids"].is_nested:
        if is_ragged_on_rows(data["position_ids"]):
            data["position_ids"] = ragged_on_tokens(data["position_ids"])
        data["position_ids"]._ragged_idx = 2


maybe_fix_3d_position_ids.rewardmap_fix = True  # type: ignore[attr-defined]
verl_maybe_fix_3d_position_ids: Any = None  # verl's function as shipped, kept by install() (tests compare)


def install() -> None:
    """Put the fixed function into verl's module and into each engine module already imported (idempotent).

    Safe while ``import verl`` runs: engine modules imported later pick up the fixed name themselves.
    """
    global verl_maybe_fix_3d_position_ids
    from verl.utils import tensordict_utils

    shipped = tensordict_utils.maybe_fix_3d_position_ids
    if verl_maybe_fix_3d_position_ids is None and not getattr(shipped, "rewardmap_fix", False):
        verl_maybe_fix_3d_position_ids = shipped
    for name in PATCHED_MODULES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "maybe_fix_3d_position_ids"):
            module.maybe_fix_3d_position_ids = maybe_fix_3d_position_ids


def installed() -> bool:
    """True when verl's modules loaded in this process use the fixed function."""
    modules = [sys.modules.get(name) for name in PATCHED_MODULES]
    loaded = [m for m in modules if m is not None and hasattr(m, "maybe_fix_3d_position_ids")]
    return bool(loaded) and all(getattr(m.maybe_fix_3d_position_ids, "rewardmap_fix", False) for m in loaded)


install()
