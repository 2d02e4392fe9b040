"""Run every lusv benchmark in one process and print one summary table (and save it).

    python -m benchmarks.run_all [--quick] [--device auto|cpu|cuda] [--threads N] [--out PATH]

(a) data path clips/s vs a decode-and-augment-per-frame baseline, (b) vectorised pattern
attention vs a per-pattern loop (outputs asserted equal), (c) LUV-Net training step clips/s and
inference ms/clip, each with its peak memory (d), (e) one LUV-Net training epoch of its heads on
cached frozen-encoder features vs one end to end with the encoder in the loop. Every ratio
compares two figures measured in this same run. The table and the machine description go to ``--out`` as JSON, and the rows also
to a CSV next to it.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import socket
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

from benchmarks import bench_attention, bench_data_path, bench_frozen_features, bench_model_step
from benchmarks.common import Row, bench_parser, device_from_flag, machine_info, process_peak_rss_mib
from lusv.data.datasets import keep_freed_cpu_buffers

BENCHMARKS = ("data", "attention", "model", "features")


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "n/a"
    if value == 0 or abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{max(0, digits - 1 - math.floor(math.log10(abs(value))))}f}"


def markdown_table(rows: list[Row]) -> str:
    """The rows as a markdown table (benchmark, variant, figure, ratio to the same-run baseline,
    peak memory, and on the CPU the resident-set rise)."""
    rss = any(row.rss_rise_mib is not None for row in rows)
    header = "| benchmark | variant | figure | x baseline | peak memory (MiB) |" + (" RSS rise (MiB) |" if rss else "")
    lines = [header + " setting |", "|---|---|---:|---:|---:|" + ("---:|" if rss else "") + "---|"]
    for row in rows:
        ratio = "baseline" if row.baseline == "self" else (f"{_number(row.ratio)}x" if row.ratio else "")
        memory = _number(row.peak_mem_mib, 2) if row.peak_mem_mib is not None else ""
        cells = [row.benchmark, row.variant, f"{_number(row.value)} {row.unit}", ratio, memory]
        if rss:
            cells.append(_number(row.rss_rise_mib, 2) if row.rss_rise_mib is not None else "")
        cells.append(row.note)
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def machine_text(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['gpu']} (CUDA {info['cuda']})" if info.get("gpu") else ""
    return (f"{info['hostname']}: {info['cpu']}, {info['cpu_cores']} cores, torch {info['torch']} "
            f"({info['torch_threads']} threads), torchvision {info['torchvision']}, Python {info['python']}, "
            f"device {info['device']}{gpu}"
            f"{', freed CPU buffers kept' if info.get('freed_cpu_buffers_kept') else ''}")


def save(path: Path, info: dict[str, Any], rows: list[Row], seconds: float, args: argparse.Namespace) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "machine": info,
        "settings": {"quick": args.quick, "device": args.device, "threads": args.threads, "only": args.only},
        "total_seconds": seconds,
        "process_peak_rss_mib": process_peak_rss_mib(),
        "rows": [row.as_dict() for row in rows],
    }
    path.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    with open(path.with_suffix(".csv"), "w", newline="", encoding="utf-8") as handle:
        fields = [f for f in rows[0].as_dict() if f != "extra"] if rows else []
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(row.as_dict() for row in rows)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = bench_parser(__doc__)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads; default 1 on the CPU (see docs/performance.md), torch's own choice on CUDA; "
                             "0 = torch's own choice")
    parser.add_argument("--release-buffers", action="store_true",
                        help="leave glibc's default of unmapping freed buffers over 32 MB (lusv training keeps them)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file for the table (a CSV goes next to it); default benchmarks/results/<host>-<date>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = device_from_flag(args.device)
    if args.threads is None:
        # One thread per process is how a DataLoader worker runs, and on a CPU shared with other
        # jobs OpenMP's spinning threads slow small per-frame torch calls (the baseline's) by up to
        # 8x, which would flatter lusv's ratio. See docs/performance.md.
        args.threads = 1 if device.type == "cpu" else 0
    if args.threads:
        torch.set_num_threads(args.threads)
    # Same allocator setting as lusv.train uses on a CPU; it applies to both sides of each ratio.
    kept = device.type == "cpu" and not args.release_buffers and keep_freed_cpu_buffers()
    info = machine_info(device)
    info["freed_cpu_buffers_kept"] = kept
    print(machine_text(info), flush=True)

    start = time.perf_counter()
    rows: list[Row] = []
    if "data" in args.only:
        print("(a) data path ...", flush=True)
        size = bench_data_path.QUICK if args.quick else bench_data_path.DataPathSize()
        rows += bench_data_path.run(size, device)
    if "attention" in args.only:
        print("(b) attention pooling ...", flush=True)
        rows += bench_attention.run(bench_attention.QUICK if args.quick else bench_attention.AttentionSize(), device)
    if "model" in args.only:
        print("(c) model step ...", flush=True)
        rows += bench_model_step.run(device, quick=args.quick)
    if "features" in args.only:
        print("(e) frozen-encoder features ...", flush=True)
        size = bench_frozen_features.QUICK if args.quick else bench_frozen_features.FrozenSize()
        rows += bench_frozen_features.run(size, device)
    seconds = time.perf_counter() - start

    out = args.out or Path(__file__).parent / "results" / f"{socket.gethostname()}-{date.today().isoformat()}.json"
    save(out, info, rows, seconds, args)
    print()
    print(f"Machine: {machine_text(info)}")
    print(markdown_table(rows))
    memory_kinds = sorted({row.mem_kind for row in rows if row.mem_kind})
    rss_note = "; RSS rise: resident set size above its value after malloc_trim" if device.type == "cpu" else ""
    print(f"\nPeak memory: {'; '.join(memory_kinds)}{rss_note}. Process peak RSS {process_peak_rss_mib():.0f} MiB. "
          f"Total {seconds:.0f} s. Saved {out} (+ .csv)")
    return rows


if __name__ == "__main__":
    main()
