"""Peak memory of one measurement, per policy, in one process.

- CUDA: `torch.cuda.reset_peak_memory_stats` before, `max_memory_allocated` after (tensor bytes).
- CPU (Linux): the process's peak resident set (`VmHWM`), reset before each measurement by writing
  5 to `/proc/self/clear_refs`, after `malloc_trim(0)` has handed memory freed by the previous
  measurement back to the system (otherwise glibc keeps it, and it would count for whichever policy
  runs next). So each policy's figure is the highest RSS seen while it ran, not the process's
  lifetime maximum. Without a writable `clear_refs` the figure is the lifetime maximum, and the
  output says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


class PeakMemory:
    """Tracks the peak memory of one phase: `reset()` at its start, `peak()` at its end (bytes)."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self.method = self._method()

    def _method(self) -> str:
        if self.device.type == "cuda":
            return "cuda max_memory_allocated (reset per measurement)"
        if _status_kib("VmHWM") is None:
            return "unavailable"
        try:
            with _CLEAR_REFS.open("w") as handle:
                handle.write("5")
        except OSError:
            return "process peak RSS over its lifetime (clear_refs not writable: not per policy)"
        return "peak RSS, reset per measurement (malloc_trim + /proc/self/clear_refs)"

    def current(self) -> int | None:
        """Bytes in use now (allocated tensors on CUDA, resident set on CPU)."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        kib = _status_kib("VmRSS")
        return None if kib is None else kib * 1024

    def reset(self) -> int | None:
        """Start a phase: release freed memory and reset the peak. Returns the memory in use."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return self.current()
        _malloc_trim()
        if self.method.startswith("peak RSS, reset"):
            with _CLEAR_REFS.open("w") as handle:
                handle.write("5")
        return self.current()

    def peak(self) -> int | None:
        """The peak since the last `reset` (bytes)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        kib = _status_kib("VmHWM")
        return None if kib is None else kib * 1024
