"""What every benchmark shares: the command line, the machine description, timing, peak memory and result rows.

Command line: ``bench_main`` is every ``benchmarks/bench_*.py``'s ``main`` (``--quick``,
``--device``), ``bench_parser`` the parser ``run_all`` extends; the device is resolved as lusv
resolves a run's (``lusv.infra.devices.resolve_device``).

Timing: ``measure`` runs warm-up calls (first-call allocations, lazy imports, cuDNN autotuning),
then times each repetition and reports the median, which shrugs off the occasional slow
repetition on a shared machine. On CUDA every timed call is bracketed by
``torch.cuda.synchronize`` so that queued kernels are counted.

Peak memory: ``PeakMemory`` and ``release_memory`` live in ``lusv.infra.memory`` (the study's plan
measures with them too), imported here; its docstring says what each figure is.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import socket
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import torch

from lusv.infra.devices import resolve_device
from lusv.infra.memory import MIB, PeakMemory, release_memory, synchronize  # noqa: F401 - the benchmarks' tools
from lusv.errors import LusvError


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
    rss_rise_mib: Optional[float] = None  # CPU: the resident-set rise next to peak_mem_mib (see PeakMemory)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_from_flag(name: str) -> torch.device:
    """``--device`` as a torch device, resolved as lusv resolves a run's (``lusv.infra.devices.resolve_device``);
    a device this machine lacks ends the command with the reason instead of a traceback."""
    try:
        return resolve_device(name)
    except LusvError as exc:
        raise SystemExit(f"--device {name}: {exc}") from None


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """The command line every benchmark shares: ``--quick`` and ``--device``; described by the
    first line of the module docstring ``doc``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke run in under a minute")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    return parser


def bench_main(doc: str, rows_for: Callable[[bool, torch.device], list[Row]], argv: Optional[list[str]] = None) -> list[Row]:
    """``main`` of a benchmark run alone: parse ``--quick``/``--device``, run ``rows_for(quick,
    device)``, print each row and return them."""
    args = bench_parser(doc).parse_args(argv)
    rows = rows_for(args.quick, device_from_flag(args.device))
    for row in rows:
        print(row)
    return rows


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

    The warm-ups run in reverse order: ``PeakMemory`` hands freed memory back to the OS before
    each, so the variant warmed up last is the only one whose pages are all still resident, and
    it is the first one timed. Any re-faulting of pages (~0.4 ms per MiB here) then falls on the
    later variants (lusv's, in every benchmark here), not on the baseline.
    """
    memory = {}
    for name, fn in reversed(list(fns.items())):
        with PeakMemory(device) as peak:
            for _ in range(max(warmup, 1)):
                fn()
        memory[name] = peak
    memory = {name: memory[name] for name in fns}
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


def process_peak_rss_mib() -> float:
    """The process's resident-set high-water mark (``ru_maxrss``), for the table footer."""
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB
