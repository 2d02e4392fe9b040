"""(f) Batch prediction vs one ``lusv predict`` process per clip, with the same exported model.

    python -m benchmarks.bench_predict --model EXPORT --videos FOLDER [--baseline-clips N] [--threads 1]

Both sides are what a user runs, timed end to end as subprocesses of this one run (Python start,
imports, loading and checking the export, decoding, scoring, writing the CSV):

* **batch**: one ``lusv predict FOLDER --model EXPORT --out batch.csv`` over every clip: the export
  is loaded and checked once, each video decoded once, the clips of many videos scored together
  (frozen-encoder exports encode each batch once for all fold models);
* **baseline**: ``lusv predict CLIP --model EXPORT --out one.csv``, one process per clip, one after
  another; ``--baseline-clips N`` times it on N clips spread evenly over the sorted list (every
  k-th) instead of all, and its clips/s is compared with the batch's.

The batch runs before and after the baseline (the two timings bracket it, so a change of the
machine's load shows), and the figure is their mean (``--batch-runs 1``: before it only). Reported: clips/s of each side in wall time,
the ratio, and the same in CPU seconds of the child processes (user + system, from
``getrusage(RUSAGE_CHILDREN)``), which load from other jobs on a shared machine inflates less.
Every baseline row is checked against the batch's row of the same clip (max |difference| of the
probabilities, printed): the two sides must compute the same thing. Torch runs on one thread on
both sides (``OMP_NUM_THREADS=1``, ``--threads``), as every CPU figure of docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import Row
from lusv.data.patterns import PATTERNS
from lusv.predict.inputs import collect_videos

BENCHMARK = "(f) batch predict"


@dataclass
class Timed:
    wall: float
    cpu: float


def _run(command: list[str], env: dict) -> Timed:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return Timed(wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))


def _predict(inputs: list[str], model: Path, out: Path, env: dict) -> Timed:
    return _run([sys.executable, "-m", "lusv.cli", "predict", *inputs, "--model", str(model), "--out", str(out)], env)


def run(model: Path, videos: Path, baseline_clips: int | None = None, threads: int = 1, batch_runs: int = 2) -> list[Row]:
    """The rows of (f); see the module docstring."""
    items = [item for item in collect_videos([videos]) if not item.skip]
    paths = [item.path for item in items]
    if baseline_clips is None or baseline_clips >= len(paths):
        chosen = paths
    else:
        chosen = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, baseline_clips).round()]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "LUSV_PROGRESS": "summary"}
    with tempfile.TemporaryDirectory(prefix="bench_predict") as tmp:
        tmp = Path(tmp)
        first = _predict([str(videos)], model, tmp / "batch1.csv", env)
        print(f"  batch, first run: {len(paths)} clips in {first.wall:.1f} s", flush=True)
        baseline, rows = Timed(0.0, 0.0), []
        for index, path in enumerate(chosen):
            timed = _predict([path], model, tmp / f"one{index}.csv", env)
            baseline.wall, baseline.cpu = baseline.wall + timed.wall, baseline.cpu + timed.cpu
            rows.append(pd.read_csv(tmp / f"one{index}.csv"))
            print(f"  baseline {index + 1}/{len(chosen)}: {timed.wall:.1f} s", flush=True)
        second = _predict([str(videos)], model, tmp / "batch2.csv", env) if batch_runs > 1 else first
        if batch_runs > 1:
            print(f"  batch, second run: {second.wall:.1f} s", flush=True)
        batch_table = pd.read_csv(tmp / ("batch2.csv" if batch_runs > 1 else "batch1.csv")).set_index("path")
        singles = pd.concat(rows).set_index("path")
        columns = [f"p_{p}" for p in PATTERNS]
        difference = float(np.nanmax(np.abs(singles[columns].to_numpy() - batch_table.loc[singles.index, columns].to_numpy())))
    batch = Timed((first.wall + second.wall) / 2, (first.cpu + second.cpu) / 2)
    setting = (f"{len(paths)} clips, export {model.name}; baseline on {len(chosen)} clip(s); max |dp| baseline vs batch "
               f"{difference:.1e}; " + (f"batch runs {first.wall:.0f} s and {second.wall:.0f} s" if batch_runs > 1 else
                                         f"one batch run, {first.wall:.0f} s"))
    out = []
    for unit, base, fast in (("wall", baseline.wall, batch.wall), ("CPU", baseline.cpu, batch.cpu)):
        base_rate, fast_rate = len(chosen) / base, len(paths) / fast
        extra = {"max_abs_difference": difference, "clips": len(paths), "baseline_clips": len(chosen)}
        out += [Row(BENCHMARK, f"one lusv predict process per clip ({unit} time)", base_rate, "clips/s",
                    baseline="self", note=setting, extra=extra),
                Row(BENCHMARK, f"lusv predict over the folder, one process ({unit} time)", fast_rate, "clips/s",
                    ratio=fast_rate / base_rate, baseline=f"one process per clip ({unit} time)", note=setting,
                    extra=extra)]
    return out


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an export folder (lusv export)")
    parser.add_argument("--videos", type=Path, required=True, help="folder of clips (e.g. ../shared/data/pocus/pocus_videos)")
    parser.add_argument("--baseline-clips", type=int, default=None, help="time the per-clip baseline on N clips (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both sides (default 1)")
    parser.add_argument("--batch-runs", type=int, default=2, choices=(1, 2),
                        help="2 (default): the batch before and after the baseline, their mean; 1: before only")
    args = parser.parse_args(argv)
    rows = run(args.model, args.videos, args.baseline_clips, args.threads, args.batch_runs)
    from benchmarks.run_all import markdown_table

    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
