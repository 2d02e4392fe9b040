"""Peak memory of a piece of code on the CPU or a GPU, measured (the benchmarks and the study's plan use it).

``PeakMemory`` first frees what it can (``gc.collect``; CUDA: ``empty_cache``;
CPU: glibc's ``malloc_trim(0)``) and then measures from there. CUDA:
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: two figures, both
sampled every 5 ms by a thread (``ru_maxrss`` is a high-water mark for the whole process, so it
cannot tell one benchmark from the one before it, and ``tracemalloc`` does not see torch's,
PIL's or FFmpeg's buffers):

- the peak rise of the bytes **in use** through malloc (glibc's ``mallinfo2``, all arenas),
  the CPU counterpart of ``max_memory_allocated``: what the variant's live buffers needed,
  whatever the allocator keeps. A peak shorter than 5 ms can be missed.
- the peak rise of the **resident set size** (RSS): what the process really grew by, including
  freed buffers the allocator keeps and heap fragmentation. ``lusv.data.datasets.
  keep_freed_cpu_buffers`` (applied by ``run_all``, as by training) keeps freed buffers
  resident, so without the trim each variant would reuse what the one before it left and show
  a rise of ~0; ``malloc_trim(0)`` on entry hands them back first, so the rise is the variant's
  own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import platform
import resource
import threading
from typing import Any, Optional

import torch

MIB = 1024 * 1024


def synchronize(device: torch.device) -> None:
    """Wait for the queued kernels of a CUDA device (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        # No /proc (macOS): the process high-water mark is the best we have (kB on Linux, B on macOS).
        scale = 1 if platform.system() == "Darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


@functools.cache
def _libc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is not None and hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
    return libc


def _malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: hand every free page of the C heap back to the OS, whatever
    ``keep_freed_cpu_buffers`` set. False where the C library has no ``malloc_trim``."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(ctypes.c_size_t(0))
    return True


def _malloc_in_use_bytes() -> Optional[int]:
    """Bytes allocated with malloc and not yet freed, all arenas (glibc >= 2.33 ``mallinfo2``:
    heap chunks in use + mmapped chunks); None where unavailable. Free buffers the allocator
    keeps do not count."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def release_memory(device: torch.device) -> bool:
    """Free what is no longer referenced: ``gc.collect()``, then on CUDA ``empty_cache``, on the
    CPU ``malloc_trim(0)`` (True when it could be called)."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        return True
    return _malloc_trim()


class PeakMemory:
    """Peak memory of the code inside ``with PeakMemory(device) as peak:`` -> ``peak.mib``
    (``kind`` says what it is) and, on the CPU, ``peak.rss_mib``.

    Entry first calls ``release_memory`` (see the module docstring). CUDA:
    ``max_memory_allocated`` (tensors held by torch's allocator, the usual figure). CPU:
    ``mib`` is the rise of the bytes in use through malloc (``mallinfo2``; torch, numpy, PIL
    and FFmpeg buffers; falls back to the resident set size without glibc) and ``rss_mib`` the
    rise of the resident set size, both sampled every ``interval`` seconds, above their values
    at entry after the trim.
    """

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device = device
        self.interval = interval
        self.mib: float = float("nan")
        self.rss_mib: Optional[float] = None
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "CPU RSS rise (sampled)"
        self._stop = threading.Event()
        self._peak = self._start = 0
        self._peak_use: Optional[int] = None
        self._start_use: Optional[int] = None
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "PeakMemory":
        trimmed = release_memory(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._start_use = self._peak_use = _malloc_in_use_bytes()
            if self._start_use is not None:
                self.kind = "CPU peak malloc in use (sampled)"
            elif trimmed:
                self.kind = "CPU RSS rise after malloc_trim (sampled)"
            self._start = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _take_sample(self) -> None:
        self._peak = max(self._peak, _rss_bytes())
        if self._peak_use is not None:
            self._peak_use = max(self._peak_use, _malloc_in_use_bytes() or 0)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._take_sample()

    def __exit__(self, *exc_info: Any) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / MIB
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self._take_sample()
            self.rss_mib = (self._peak - self._start) / MIB
            if self._start_use is not None and self._peak_use is not None:
                self.mib = (self._peak_use - self._start_use) / MIB
            else:
                self.mib = self.rss_mib
