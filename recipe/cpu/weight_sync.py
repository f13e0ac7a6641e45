"""Evidence that the rollout engine generates with the actor's weights: digests of synced tensors and their log.

Both CPU rollout backends append one JSON line per weight sync to ``$REWARDMAP_WEIGHT_SYNC_LOG`` (set by the CPU run,
``recipe.cpu.dry_run``). A record names its ``side`` ("actor": what verl's actor worker sent; "rollout": what the
rollout engine received and now holds), the ``engine``, the digest and the number of tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

import torch

WEIGHT_SYNC_LOG_ENV = "REWARDMAP_WEIGHT_SYNC_LOG"


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor (a local copy of a DTensor's shard as verl hands full tensors over)."""
    data = tensor.detach()
    if hasattr(data, "full_tensor"):
        data = data.full_tensor()
    data = data.to("cpu").contiguous()
    return data.view(torch.uint8).numpy().tobytes() if data.numel() else b""


class StateDigest:
    """A digest of named tensors that does not depend on their order: sha256 over the sorted lines
    ``name|dtype|shape|sha256(bytes)``. Streaming tensors through it (the actor's sync) and digesting a whole state
    (a checkpoint, what vLLM received) give the same value for the same weights.

    >>> a, b = StateDigest(), StateDigest()
    >>> _ = list(a.tee_sync([("w", torch.ones(2)), ("b", torch.zeros(1))]))
    >>> b.update("b", torch.zeros(1)); b.update("w", torch.ones(2))
    >>> a.hexdigest() == b.hexdigest(), a.count
    (True, 2)
    """

    def __init__(self) -> None:
        self._lines: dict[str, str] = {}

    @property
    def count(self) -> int:
        return len(self._lines)

    def update(self, name: str, tensor: torch.Tensor) -> None:
        data = hashlib.sha256(tensor_bytes(tensor)).hexdigest()
        self._lines[name] = f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|{data}"

    def tee_sync(self, weights: Iterable[tuple[str, torch.Tensor]]) -> Iterable[tuple[str, torch.Tensor]]:
        """Pass a stream of (name, tensor) on unchanged, digesting each item."""
        for name, tensor in weights:
            self.update(name, tensor)
            yield name, tensor

    async def tee(self, weights: Any) -> AsyncIterator[tuple[str, torch.Tensor]]:
        """Pass a sync or async stream of (name, tensor) on unchanged, digesting each item."""
        if hasattr(weights, "__aiter__"):
            async for name, tensor in weights:
                self.update(name, tensor)
                yield name, tensor
        else:
            for name, tensor in weights:
                self.update(name, tensor)
                yield name, tensor

    def hexdigest(self) -> str:
        return hashlib.sha256("\n".join(self._lines[name] for name in sorted(self._lines)).encode()).hexdigest()


def state_digest(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """``StateDigest`` of a whole state (e.g. a checkpoint's tensors, a model's ``state_dict().items()``)."""
    digest = StateDigest()
    for name, tensor in named_tensors:
        digest.update(name, tensor)
    return digest.hexdigest()


def append_sync_log(record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``$REWARDMAP_WEIGHT_SYNC_LOG``, when that is set."""
    path = os.environ.get(WEIGHT_SYNC_LOG_ENV)
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(record, sort_keys=True) + "\n")
