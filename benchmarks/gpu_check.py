"""GPU readiness in one command (``scripts/gpu_check.sh``): one summary of everything CUDA-side.

Sections, in order, each one line of the summary (a failing section says why and the others
still run):

1. ``cuda tests``: ``pytest -m gpu`` (tests that need a CUDA device) in a subprocess.
2. ``train <variant>``: the LUV-Net training step at the paper's size (DenseNet-161,
   30 x 256 x 256, batch 4) in fp32 (TF32 off), bf16 autocast and bf16 autocast +
   channels_last: clips/s, peak GPU memory, speed-up over fp32 (``benchmarks.bench_model_step``).
3. ``inference``: ms/clip of each variant beside the paper's 65 ms/clip (one A100, Table 4).
4. ``data path``: the GPU-side training data path (clip cache, augmentation on the device) vs
   decoding and augmenting frame by frame, from 640 x 480 MJPG exports
   (``benchmarks.bench_data_path``).
5. ``kill+resume``: a 2-epoch, one-fold paper-profile run on synthetic 30 x 256 x 256 clips,
   SIGKILLed in epoch 2 and resumed, against an uninterrupted run: max |delta p| within a stated
   tolerance (CUDA: cuDNN's non-deterministic kernels and bf16 rounding leave small differences;
   CPU: exact up to float printing). Random weights (nothing is downloaded) and lr 1e-4 instead
   of the paper's 1e-6, so that two epochs move the weights enough for a wrong resume to show.
6. ``torch.compile``: bf16 + channels_last compiled, in a subprocess that is stopped when the
   time budget runs out; reported with its gain over the uncompiled step ("helps" or not).

``--cpu-smoke`` runs every section on the CPU at a tiny size (tiny encoder, 8 x 32 x 32 clips;
bf16 autocast on the CPU; torch.compile skipped) in about a minute, so the suite keeps this
script working on machines without a GPU. Exit status 0 when every pass/fail check passed.
Run: ``bash scripts/gpu_check.sh [--cpu-smoke] [--time-limit SECONDS] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch

from benchmarks import bench_data_path, bench_model_step
from benchmarks.bench_data_path import DataPathSize
from benchmarks.bench_model_step import ModelCase
from benchmarks.common import Row

REPO = Path(__file__).resolve().parents[1]
PAPER_INFERENCE_MS = 65.0  # LUV-Net (DenseNet-161) per 30 x 256 x 256 clip on one A100 (paper, Table 4)
KILL_AT = "2:1"  # SIGKILL after the first training batch of epoch 2 (epoch 1's checkpoint exists)


@dataclass(frozen=True)
class CheckSize:
    """Everything that differs between the GPU check and the CPU smoke run."""

    label: str
    encoder: str
    num_frames: int
    image_size: int
    batch_size: int
    warmup: int
    repeats: int
    data_path: DataPathSize
    n_clips: int  # synthetic clips of the kill+resume run (a third of them train, 3 folds)
    kernel_size: int
    num_workers: int
    tolerance: float  # max |delta p| between the resumed and the uninterrupted run


GPU = CheckSize(
    "paper size (DenseNet-161, 30x256x256, batch 4)", "densenet161", 30, 256, 4, warmup=3, repeats=10,
    data_path=DataPathSize(n_clips=16, source_frames=40, num_frames=30, image_size=256, source_sizes=((640, 480),),
                           batch_size=4, warmup=1, repeats=2),
    n_clips=18, kernel_size=13, num_workers=2, tolerance=5e-3,
)
CPU_SMOKE = CheckSize(
    "CPU smoke (tiny encoder, 8x32x32, batch 2)", "tiny", 8, 32, 2, warmup=1, repeats=1,
    data_path=DataPathSize(n_clips=2, source_frames=5, num_frames=4, image_size=32, source_sizes=((48, 40),),
                           batch_size=2, warmup=1, repeats=1),
    n_clips=12, kernel_size=5, num_workers=0, tolerance=1e-6,
)


@dataclass
class Line:
    """One line of the summary; ``ok`` None = a figure, True/False = a check that passed/failed."""

    section: str
    text: str
    ok: Optional[bool] = None
    figures: dict = field(default_factory=dict)

    def render(self) -> str:
        verdict = {None: "", True: "  [ok]", False: "  [FAIL]"}[self.ok]
        return f"{self.section + ':':<28}{self.text}{verdict}"


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def _say(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def _python_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


# ----------------------------------------------------------------------------- 1. CUDA tests


def cuda_tests(smoke: bool, timeout: float) -> Line:
    # The smoke run collects only the GPU test module (collecting the whole suite takes long on
    # a small CPU); on a GPU every test marked gpu runs.
    target = str(REPO / "tests" / "test_gpu.py") if smoke else str(REPO / "tests")
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", target]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, env=_python_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Line("cuda tests", f"0 passed: stopped after {timeout:.0f} s (time limit)", False)
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", done.stdout)}
    passed, failed = counts.get("passed", 0), counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    text = (f"{passed} passed, {failed} failed, {counts.get('skipped', 0)} skipped "
            f"({time.monotonic() - started:.0f} s; pytest -m gpu)")
    if failed or done.returncode not in (0, 5):  # 5 = no test selected
        tail = " | ".join(done.stdout.strip().splitlines()[-3:])
        return Line("cuda tests", f"{text}; {tail}", False, counts)
    return Line("cuda tests", text, True if passed else None, counts)


# ----------------------------------------------------------------------------- 2./3. model step


def model_cases(size: CheckSize) -> dict[str, ModelCase]:
    shape = dict(encoder=size.encoder, num_frames=size.num_frames, image_size=size.image_size,
                 batch_size=size.batch_size, warmup=size.warmup, repeats=size.repeats)
    return {
        "fp32": ModelCase("fp32 (TF32 off)", tf32=False, **shape),
        "bf16": ModelCase("bf16 autocast", amp=torch.bfloat16, **shape),
        "bf16+channels_last": ModelCase("bf16 autocast + channels_last", amp=torch.bfloat16, channels_last=True, **shape),
    }


def _train_and_infer(rows: list[Row]) -> tuple[Row, Optional[Row]]:
    train = next(r for r in rows if r.variant.endswith("train step"))
    infer = next((r for r in rows if r.variant.endswith("inference")), None)
    return train, infer


def model_steps(size: CheckSize, device: torch.device) -> tuple[list[Line], dict[str, tuple[Row, Optional[Row]]]]:
    results = {name: _train_and_infer(bench_model_step.run_case(case, device)) for name, case in model_cases(size).items()}
    base = results["fp32"][0].value
    lines = []
    for name, (train, _) in results.items():
        if train.value != train.value:  # NaN: out of memory
            lines.append(Line(f"train {name}", f"out of memory ({train.note})", False))
            continue
        gain = f", {train.value / base:.2f}x fp32" if name != "fp32" and base == base else ""
        lines.append(Line(f"train {name}", f"{train.value:.3g} clips/s, peak {train.peak_mem_mib:.0f} MiB{gain}",
                          figures={"clips_per_s": train.value, "peak_mib": train.peak_mem_mib}))
    inference = {name: infer.value for name, (_, infer) in results.items() if infer is not None}
    text = ", ".join(f"{name} {ms:.3g}" for name, ms in inference.items())
    where = "" if size is GPU else "; not comparable: tiny CPU setting"
    lines.append(Line("inference ms/clip", f"{text} (paper: {PAPER_INFERENCE_MS:g} ms on one A100{where})",
                      figures=inference))
    return lines, results


def compiled_step(size: CheckSize, device: torch.device, reference: Row, timeout: float) -> Line:
    """bf16 + channels_last under torch.compile, in a subprocess stopped after ``timeout`` s."""
    if timeout < 30:
        return Line("torch.compile", f"skipped: {max(timeout, 0):.0f} s of the time budget left")
    with tempfile.TemporaryDirectory(prefix="lusv-compile-") as tmp:
        out = Path(tmp) / "row.json"
        command = [sys.executable, "-m", "benchmarks.gpu_check", "--compile-only", str(out), "--device", str(device)]
        try:
            done = subprocess.run(command, cwd=REPO, env=_python_env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Line("torch.compile", f"skipped: compiling took more than {timeout:.0f} s (time limit)")
        if done.returncode != 0 or not out.is_file():
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return Line("torch.compile", f"failed ({tail})", None)
        row = json.loads(out.read_text())
    gain = row["value"] / reference.value
    verdict = "helps" if gain > 1.05 else "does not help"
    return Line("torch.compile", f"{row['value']:.3g} clips/s, peak {row['peak_mem_mib']:.0f} MiB, "
                f"{gain:.2f}x bf16+channels_last: {verdict}", figures={"clips_per_s": row["value"], "gain": gain})


def _compile_only(out: Path, device: torch.device) -> None:
    case = replace(model_cases(GPU)["bf16+channels_last"], label="bf16 + channels_last + torch.compile", compile=True)
    train, _ = _train_and_infer(bench_model_step.run_case(case, device))
    out.write_text(json.dumps(train.as_dict()))


# ----------------------------------------------------------------------------- 4. data path


def data_path(size: CheckSize, device: torch.device) -> Line:
    rows = bench_data_path.run(size.data_path, device)
    lusv = next(r for r in rows if "batched ClipAugment" in r.variant)
    base = next(r for r in rows if r.variant.startswith("baseline"))
    source = base.variant.split(",")[1].split(":")[0].strip()
    return Line("data path", f"{lusv.value:.3g} clips/s with augmentation on {device.type} vs {base.value:.3g} "
                f"clips/s decoding + per-frame PIL ({lusv.ratio:.2f}x; {source} sources)",
                figures={"lusv": lusv.value, "baseline": base.value, "ratio": lusv.ratio})


# ----------------------------------------------------------------------------- 5. kill + resume


def _train(params: dict, timeout: float, kill_at: Optional[str] = None) -> subprocess.CompletedProcess:
    from lusv.train import KILL_ENV

    env = _python_env()
    env.pop(KILL_ENV, None)
    if kill_at:
        env[KILL_ENV] = kill_at
    code = "import json, sys; from lusv.train import run; run(**json.loads(sys.argv[1]))"
    return subprocess.run([sys.executable, "-c", code, json.dumps(params)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=max(timeout, 1))


def _probabilities(run_dir: Path):
    import pandas as pd

    tables = [pd.read_csv(run_dir / f"predictions_{role}.csv", dtype={"clip_id": str}) for role in ("val", "test")]
    table = pd.concat(tables, ignore_index=True)
    return table["clip_id"].tolist(), table[[c for c in table.columns if c.startswith("p_")]].to_numpy()


def kill_and_resume(size: CheckSize, device: torch.device, workdir: Path, deadline: Deadline) -> Line:
    import numpy as np

    from lusv.infra import io
    from lusv.config import params_for
    from lusv.data.sources.synthetic import load_synthetic
    from lusv.data.splits import make_folds

    labels = load_synthetic(workdir / "synthetic", n_clips=size.n_clips, n_patients=size.n_clips // 2,
                            num_frames=size.num_frames, frame_size=size.image_size, seed=0, progress=False)
    folds = io.write_csv(workdir / "folds.csv", make_folds(labels, num_folds=3, seed=0))
    params = params_for(
        "paper", encoder=size.encoder, weights="random", kernel_size=size.kernel_size, labels=str(workdir / "synthetic" / "labels.csv"),
        splits=str(folds), cache_dir=str(workdir / "cache"), num_frames=size.num_frames, image_size=size.image_size,
        batch_size=size.batch_size, num_folds=3, fold=0, epochs=2, patience=5, lr=1e-4, num_workers=size.num_workers,
        device=device.type, out_dir=str(workdir / "runs"), log_every=0,
    ).to_dict()
    started = time.monotonic()
    full = _train({**params, "run_name": "uninterrupted"}, deadline.left())
    if full.returncode != 0:
        return Line("kill+resume", f"the uninterrupted run failed: {_last_line(full)}", False)
    killed_params = {**params, "run_name": "killed-and-resumed"}
    killed = _train(killed_params, deadline.left(), kill_at=KILL_AT)
    run_dir = workdir / "runs" / "killed-and-resumed"
    if killed.returncode != -signal.SIGKILL:
        return Line("kill+resume", f"the run to kill ended with status {killed.returncode}: {_last_line(killed)}", False)
    checkpoint_epoch = int(io.torch_load(run_dir / "checkpoint.pt")["epoch"])
    resumed = _train({**killed_params, "resume": True}, deadline.left())
    if resumed.returncode != 0:
        return Line("kill+resume", f"the resumed run failed: {_last_line(resumed)}", False)
    ids_a, p_a = _probabilities(workdir / "runs" / "uninterrupted")
    ids_b, p_b = _probabilities(run_dir)
    if ids_a != ids_b:
        return Line("kill+resume", "the resumed run predicted other clips than the uninterrupted one", False)
    delta = float(np.abs(p_a - p_b).max())
    ok = delta <= size.tolerance and checkpoint_epoch == 1
    return Line("kill+resume", f"max |dp| {delta:.2g} over {len(ids_a)} clips (tolerance {size.tolerance:g}); "
                f"killed at epoch:batch {KILL_AT}, resumed from the epoch-{checkpoint_epoch} checkpoint; "
                f"3 runs in {time.monotonic() - started:.0f} s", ok, {"max_abs_dp": delta, "tolerance": size.tolerance})


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = (done.stderr or done.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


# ----------------------------------------------------------------------------- summary


def run_check(size: CheckSize, device: torch.device, time_limit: float, smoke: bool) -> list[Line]:
    """Every section in order; a section that raises gives a failed line and the rest still runs."""
    deadline = Deadline(time_limit)
    lines: list[Line] = []

    def section(name: str, fn) -> None:
        _say(f"{name} ({deadline.left():.0f} s left)")
        try:
            produced = fn()
            lines.extend(produced if isinstance(produced, list) else [produced])
        except Exception as exc:  # noqa: BLE001 - the summary names the failure, the other sections still run
            lines.append(Line(name, f"error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", False))

    steps: dict = {}

    def steps_section():
        produced, results = model_steps(size, device)
        steps.update(results)
        return produced

    section("cuda tests", lambda: cuda_tests(smoke, timeout=min(240.0, max(deadline.left() - 200, 30))))
    section("model step", steps_section)
    section("data path", lambda: data_path(size, device))
    with tempfile.TemporaryDirectory(prefix="lusv-gpu-check-") as tmp:
        section("kill+resume", lambda: kill_and_resume(size, device, Path(tmp), deadline))
    if smoke:
        lines.append(Line("torch.compile", "skipped in the CPU smoke run (compiling takes minutes; measured on a GPU)"))
    elif "bf16+channels_last" in steps:
        section("torch.compile", lambda: compiled_step(size, device, steps["bf16+channels_last"][0], deadline.left() - 10))
    lines.append(_peak_memory_line(device, steps))
    return lines


def _peak_memory_line(device: torch.device, steps: dict) -> Line:
    peaks = [train.peak_mem_mib for train, _ in steps.values() if train.peak_mem_mib == train.peak_mem_mib]
    peak = max(peaks) if peaks else float("nan")
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**20
        return Line("peak GPU memory", f"{peak:.0f} MiB of {total:.0f} MiB (training step, torch max_memory_allocated)",
                    figures={"peak_mib": peak})
    return Line("peak memory", f"{peak:.0f} MiB in use (CPU, training step)", figures={"peak_mib": peak})


def header(size: CheckSize, device: torch.device, seconds: float) -> str:
    where = (f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}" if device.type == "cuda"
             else f"CPU, {os.cpu_count()} cores")
    return f"== lusv GPU check: {size.label} on {where}, torch {torch.__version__}, {seconds:.0f} s =="


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every section at a tiny size on the CPU (about a minute)")
    parser.add_argument("--time-limit", type=float, default=480.0, help="seconds for the whole check (default 480)")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON to this file")
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--compile-only", type=Path, help=argparse.SUPPRESS)  # the torch.compile subprocess
    args = parser.parse_args(argv)
    if args.compile_only:
        _compile_only(args.compile_only, torch.device(args.device))
        return 0
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run `bash scripts/gpu_check.sh --cpu-smoke` for the tiny CPU check", file=sys.stderr)
        return 2
    size, device = (CPU_SMOKE, torch.device("cpu")) if args.cpu_smoke else (GPU, torch.device("cuda"))
    started = time.monotonic()
    lines = run_check(size, device, args.time_limit, args.cpu_smoke)
    failed = [line.section for line in lines if line.ok is False]
    print(header(size, device, time.monotonic() - started))
    for line in lines:
        print(line.render())
    print(f"{'result:':<28}" + (f"FAIL ({', '.join(failed)})" if failed else "ok (every check passed)"))
    if args.json:
        args.json.write_text(json.dumps({"size": asdict(size), "device": str(device), "lines": [asdict(l) for l in lines]},
                                        indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
