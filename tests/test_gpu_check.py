"""scripts/gpu_check.sh keeps working without a GPU: its --cpu-smoke run prints every section of
the summary with a figure, and the killed-and-resumed run equals the uninterrupted one."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
NUM = r"[\d.]+(?:e[+-]\d+)?"  # a figure as the summary prints it (3 significant digits)
# section -> what its line must show (a figure with its unit, or a pass/fail verdict)
EXPECTED = {
    "cuda tests": r"\d+ passed, 0 failed, \d+ skipped",
    "train fp32": rf"{NUM} clips/s, peak \d+ MiB",
    "train bf16": rf"{NUM} clips/s, peak \d+ MiB, {NUM}x fp32",
    "train bf16+channels_last": rf"{NUM} clips/s, peak \d+ MiB, {NUM}x fp32",
    "inference ms/clip": rf"fp32 {NUM}, bf16 {NUM}, bf16\+channels_last {NUM} \(paper: 65 ms",
    "data path": rf"{NUM} clips/s with augmentation on cpu vs {NUM} clips/s .* \({NUM}x",
    "kill+resume": r"max \|dp\| [\d.e+-]+ over \d+ clips \(tolerance 1e-06\).*\[ok\]$",
    "torch.compile": r"skipped in the CPU smoke run",
    "peak memory": r"\d+ MiB in use",
    "result": r"ok \(every check passed\)",
}


def _environment() -> dict:
    # The active interpreter's environment, so that the script does not build ./.venv.
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "VIRTUAL_ENV": sys.prefix, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "OMP_NUM_THREADS": "1"}


def test_cpu_smoke_prints_every_section_of_the_summary(tmp_path):
    summary = tmp_path / "summary.json"
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--cpu-smoke", "--json", str(summary)], cwd=REPO,
                          env=_environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("== lusv GPU check: CPU smoke"), lines[0]
    found = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines[1:]}
    assert list(found) == list(EXPECTED)
    for section, pattern in EXPECTED.items():
        assert re.search(pattern, found[section]), f"{section}: {found[section]!r} does not match {pattern!r}"
    record = json.loads(summary.read_text())
    resume = next(line for line in record["lines"] if line["section"] == "kill+resume")
    assert resume["ok"] is True and resume["figures"]["max_abs_dp"] <= 1e-6


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_full_check_points_to_the_smoke_run():
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=REPO, env=_environment(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no CUDA device here; run `bash scripts/gpu_check.sh --cpu-smoke`" in done.stderr
