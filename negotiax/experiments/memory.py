"""Peak memory of one measured configuration: the CUDA allocator on GPU, the process RSS on CPU.

On CPU the peak resident set size (VmHWM) is a process-lifetime high-water mark. Linux lets a process reset
it by writing "5" to /proc/self/clear_refs, so each configuration starts from the current RSS and its peak is
read back from /proc/self/status. Before the reset, freed heap memory is returned to the OS (gc, then
glibc's malloc_trim), so a configuration is not charged with what an earlier one left cached. Where that is not possible (not Linux, or the reset is refused) a
background thread samples psutil's RSS every few milliseconds instead; the report says which method ran.
"""
from __future__ import annotations

import ctypes
import gc
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class MemoryReading:
    peak_bytes: int  # peak during the configuration (allocator or RSS)
    start_bytes: int  # allocated / resident when it began
    method: str  # cuda_max_memory_allocated | rss_vmhwm_reset | rss_psutil_sampled

    @property
    def delta_bytes(self) -> int:
        return max(0, self.peak_bytes - self.start_bytes)


def _status_kb(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Give freed heap pages back to the OS so the RSS reflects live memory (glibc only; else a no-op)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    hwm, rss = _status_kb("VmHWM"), _status_kb("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss * 1.05 + 1024  # the reset took effect


class _Sampler(threading.Thread):
    def __init__(self, interval_s: float = 0.005) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.interval_s = interval_s
        self.peak = self.proc.memory_info().rss
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self.proc.memory_info().rss)


class PeakMemory:
    """`with PeakMemory(device) as m: ...` then `m.reading`."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.reading: MemoryReading | None = None
        self._sampler: _Sampler | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        _release_free_memory()
        if _reset_hwm():
            self._start = _status_kb("VmRSS") * 1024
        else:
            self._sampler = _Sampler()
            self._start = self._sampler.peak
            self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak, method = torch.cuda.max_memory_allocated(self.device), "cuda_max_memory_allocated"
        elif self._sampler is not None:
            peak, method = self._sampler.stop(), "rss_psutil_sampled"
        else:
            peak, method = _status_kb("VmHWM") * 1024, "rss_vmhwm_reset"
        self.reading = MemoryReading(int(peak), int(self._start), method)
