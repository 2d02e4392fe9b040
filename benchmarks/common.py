"""What every benchmark shares: the machine description, timing, peak memory and result rows.

Timing: ``measure`` runs warm-up calls (first-call allocations, lazy imports, cuDNN autotuning),
then times each repetition and reports the median, which shrugs off the occasional slow
repetition on a shared machine. On CUDA every timed call is bracketed by
``torch.cuda.synchronize`` so that queued kernels are counted.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
On the CPU neither ``ru_maxrss`` (a high-water mark for the whole process, so it cannot go down
between benchmarks in one run) nor ``tracemalloc`` (it sees Python objects, not torch's, PIL's
or FFmpeg's buffers) can say what one benchmark needed, so ``PeakMemory`` samples the resident
set size in a thread and reports its rise above the size at the start.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import torch

MIB = 1024 * 1024


@dataclass
class Row:
    """One figure of the summary table.

    ``ratio`` is this figure divided by ``baseline``'s (a row name of the same run), oriented so
    that > 1 means faster than the baseline.
    """

    benchmark: str
    variant: str
    value: float
    unit: str
    peak_mem_mib: Optional[float] = None
    mem_kind: str = ""
    ratio: Optional[float] = None
    baseline: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; "cuda" without a GPU is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    return device


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where the figures were measured: host, CPU, cores, torch build, device, threads."""
    import torchvision

    info = {
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
    }
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], device: torch.device, warmup: int = 1, repeats: int = 3) -> list[float]:
    """Seconds of each of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def measure_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int = 1, repeats: int = 3
) -> tuple[dict[str, float], dict[str, "PeakMemory"]]:
    """Median seconds per call of each of ``fns`` and the peak memory of its warm-up calls.

    The timed repetitions take turns (a, b, a, b, ...) so that a load change on a shared machine
    hits every variant alike and the ratios between them stay fair. Peak memory is taken over
    the warm-up calls (at least one), which do the same work untimed.
    """
    memory = {}
    for name, fn in fns.items():
        with PeakMemory(device) as peak:
            for _ in range(max(warmup, 1)):
                fn()
        memory[name] = peak
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: median(values) for name, values in times.items()}, memory


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        # No /proc (macOS): the process high-water mark is the best we have (kB on Linux, B on macOS).
        scale = 1 if platform.system() == "Darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class PeakMemory:
    """Peak memory of the code inside ``with PeakMemory(device) as peak:`` -> ``peak.mib``.

    CUDA: ``max_memory_allocated`` (tensors held by torch's allocator, the usual figure).
    CPU: the highest resident set size sampled every ``interval`` seconds, minus the size at
    entry (``kind`` says which).
    """

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device = device
        self.interval = interval
        self.mib: float = float("nan")
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "CPU RSS rise (sampled)"
        self._stop = threading.Event()
        self._peak = 0
        self._start = 0
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._start = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc_info: Any) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / MIB
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.mib = (self._peak - self._start) / MIB


def process_peak_rss_mib() -> float:
    """The process's resident-set high-water mark (``ru_maxrss``), for the table footer."""
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB
