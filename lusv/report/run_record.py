"""What made a study's numbers: the command, when it finished, how long it took, on which machine.

``run_all.sh`` writes ``<run>/run.json`` when a study finishes (``python -m lusv.report.run_record``);
``lusv publish`` quotes it beside every number it publishes, so a figure in the README or the docs
always says which command and date made it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path

from lusv import __version__
from lusv.infra.io import atomic_path

RECORD = "run.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(repository: Path) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(repository), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def describe_machine() -> str:
    """'2 CPU cores (AMD EPYC 7B13), no GPU' or '... , GPU: NVIDIA H100 80GB HBM3'."""
    import torch

    gpu = f"GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} CPU cores ({_cpu_model()}), {gpu}"


def write_run_record(run_dir: str | Path, command: str, seconds: float) -> Path:
    """``<run_dir>/run.json``: the command, the finishing time (UTC), the duration, the machine,
    lusv's version and the repository's commit."""
    import torch

    run_dir = Path(run_dir)
    record = {
        "command": command,
        "finished": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(float(seconds)),
        "machine": describe_machine(),
        "torch": torch.__version__,
        "lusv": __version__,
        "commit": _git_commit(Path(__file__).resolve().parents[2]),
    }
    path = run_dir / RECORD
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def read_run_record(run_dir: str | Path) -> dict | None:
    """The record ``write_run_record`` left, or None (a study not finished by run_all.sh)."""
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def provenance(run_dir: str | Path) -> str:
    """'`bash run_all.sh quick`, finished 2026-12-07 14:02 UTC in 11 min 57 s on 2 CPU cores (...)'."""
    record = read_run_record(run_dir)
    if record is None:
        return f"{Path(run_dir).name}: no {RECORD} (not finished by run_all.sh): command and date unknown"
    minutes, seconds = divmod(int(record.get("seconds", 0)), 60)
    commit = f", commit {record['commit']}" if record.get("commit") else ""
    return (f"`{record['command']}`, finished {record['finished']} in {minutes} min {seconds} s on "
            f"{record['machine']} (lusv {record['lusv']}{commit}, torch {record['torch']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lusv.report.run_record", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--command", required=True, help="the command as the user typed it")
    parser.add_argument("--seconds", type=float, required=True, help="how long the study took")
    args = parser.parse_args(argv)
    write_run_record(args.run_dir, args.command, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
