"""Peak memory of a process and everything it started (Ray's GCS, raylet and workers are the driver's descendants).

Sampled in a background thread as the sum of each process's proportional set size (PSS: shared pages divided
among the processes that map them, so Ray's shared object store and shared libraries are counted once).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil

GIB = 1024**3


@dataclass
class PeakMemory:
    """Context manager: ``peak_bytes`` is the largest tree-wide PSS seen while inside."""

    interval_s: float = 0.5
    peak_bytes: int = 0
    peak_processes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def sample(self) -> int:
        """Sum of PSS over this process and its descendants now (processes that vanish mid-read are skipped)."""
        root = psutil.Process()
        total, count = 0, 0
        for process in [root, *root.children(recursive=True)]:
            try:
                total += process.memory_full_info().pss
                count += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_processes = total, count
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="rewardmap-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB
