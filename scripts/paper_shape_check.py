"""The paper profile at its own shapes on a CPU: every Table 1 row through the study's own steps.

    python scripts/paper_shape_check.py [--out DIR] [--models KEY,...] [--smoke]
    (or bash scripts/paper_shape_check.sh, which makes the environment first)

On a few synthetic paper-profile videos (one 30-frame window of 256 x 256 each, 4 patients, 4
patient-level folds, no set-apart test sets), for every row of the paper's Table 1
(``lusv.models.roster.TABLE_1``: DenseNet-161 or ResNet-50 encoders, published widths):

1. ``lusv.study.prepare`` (profile ``paper``);
2. ``lusv.study.train_configurations`` on fold 0: one epoch of two optimizer steps (the two
   training windows, one per step), the validation pass, and the best model's predictions of its
   validation and test folds, written as every run writes them;
3. notebook 06 (``06_results``) executed by papermill on the study: every table it shows.

Per model it reports seconds per optimizer step (the second step, from the training log's
timestamps: the first includes one-time allocations), the run's wall and CPU seconds, and its peak
memory in use (``lusv.infra.memory.PeakMemory``, building the model included). Each model runs in
a process of its own, so that one killed for want of memory is reported and the others still run;
and a model starts only when the memory it needs is free (``lusv.train.model_figures``' count, with
a margin): otherwise it waits up to ``--wait-for-memory`` seconds, then fails with a line saying how
much it needs. On a machine shared with other jobs this keeps the check from pushing them, or
itself, into the kernel's out-of-memory killer.
It exits 1 when any step fails, naming the model and the error.

Departures from the profile, both for the CPU: batch 1 instead of 4 (a DenseNet-161 step keeps
~9 GB of activations per 30-frame clip in fp32 on a CPU, so batch 4 needs ~40 GB; see ``lusv plan
--profile paper``), and random weights: DenseNet-161's and ResNet-50's ImageNet weights are not
available offline, so the encoder falls back to random initialisation with a warning (the
weights policy of ``lusv.models.encoders``), which changes no shape. ``--smoke`` runs the same
steps at toy shapes (8 frames of 32 x 32, the tiny encoder, 1/16 widths) in about a minute: the
test suite runs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from lusv import study  # noqa: E402
from lusv.config import params_for  # noqa: E402
from lusv.errors import LusvError  # noqa: E402
from lusv.inference import build_run_model  # noqa: E402
from lusv.infra.memory import PeakMemory  # noqa: E402
from lusv.models import frame_models, roster  # noqa: E402
from lusv.models.cost import model_cost  # noqa: E402
from lusv.train import estimated_memory_mib, model_figures  # noqa: E402

# One window per video (30 frames = the window, so overlap 6 leaves one), one video per patient,
# one patient per fold: fold 0's run trains on 2 windows (2 steps at batch 1) and predicts 1 + 1.
VIDEOS = {"n_clips": 4, "n_patients": 4, "num_frames": 30, "frame_size": 256}
SMOKE_VIDEOS = {**VIDEOS, "frame_size": 48}
FOLDS = 4
# The CPU departures (see the module docstring); max_batches_per_epoch only guards the two steps.
RUN = {"batch_size": 1, "epochs": 1, "max_batches_per_epoch": 2, "num_workers": 0, "log_every": 1,
       "checkpoint_every": 1}
SMOKE_SHAPES = {"num_frames": 16, "image_size": 32}  # C3D needs 16 frames to survive its pools
SMOKE_MODELS = {"encoder": "tiny", "weights": "random", "width": 0.0625}


class StepTimes(logging.Handler):
    """Timestamps of the training loop's per-step log lines ("epoch 1 step 2: loss ...")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if " step " in record.getMessage():
            self.times.append(record.created)


def check_model(prepared, key: str, smoke: bool) -> dict:
    """Fold 0 of ``key`` through ``study.train_configurations``: its figures, or the error."""
    overrides, p = run_params(prepared, key, smoke)
    cost = model_cost(lambda: build_run_model(p, weights="random"), p.num_frames, p.image_size)
    row = {"configuration": key, "model": p.model, "encoder": p.encoder if p.model in frame_models() else "-",
           "parameters (M)": round(cost.parameters / 1e6, 2), "GMAC per clip": round(cost.gmac, 2)}
    steps = StepTimes()
    train_log = logging.getLogger("lusv.train")
    train_log.addHandler(steps)
    train_log.setLevel(logging.INFO)  # the step lines reach StepTimes; the console handler shows warnings only
    started, cpu = time.perf_counter(), time.process_time()
    try:
        with PeakMemory(torch.device("cpu")) as peak:
            run_dir = study.train_configurations(prepared, {key: overrides}, folds=[0], **RUN)[key][0]
        if not (run_dir / "predictions_test.csv").is_file():
            raise LusvError(f"{run_dir} has no test predictions")
        status = "ok"
    except Exception as exc:  # noqa: BLE001 - every failure is reported per model, then the check fails
        status, peak = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", None
    finally:
        logging.getLogger("lusv.train").removeHandler(steps)
    second = steps.times[1] - steps.times[0] if len(steps.times) >= 2 else float("nan")
    row.update({"s per step": float(f"{second:.3g}"), "run wall s": round(time.perf_counter() - started, 1),
                "run CPU s": round(time.process_time() - cpu, 1),
                "peak memory in use (GB)": float(f"{peak.mib / 1024:.3g}") if peak is not None else float("nan"),
                "status": status})
    print(" | ".join(f"{k}: {v}" for k, v in row.items()), flush=True)
    return row


def run_params(prepared, key: str, smoke: bool):
    """The parameters fold 0 of ``key`` trains with in this check."""
    overrides = {**roster.configuration(key), **(SMOKE_MODELS if smoke else {})}
    return overrides, params_for("paper", **{**prepared.training_inputs(), **overrides, **RUN})


def needed_gb(p) -> float:
    """Memory a run of ``p`` needs on the CPU: the count of weights, gradients, Adam state and saved
    activations (fp32), x1.25 and +1 GB for what the count leaves out (temporaries, the allocator)."""
    return estimated_memory_mib(model_figures(p), p, amp=False) / 1024 * 1.25 + 1.0


def available_gb() -> float:
    """MemAvailable of /proc/meminfo (inf where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def wait_for_memory(key: str, need: float, patience: float) -> str | None:
    """None once ``need`` GB are free (polling for up to ``patience`` seconds), else why not."""
    deadline = time.monotonic() + patience
    while available_gb() < need:
        if time.monotonic() >= deadline:
            return (f"SKIPPED: needs about {need:.1f} GB free, {available_gb():.1f} GB are "
                    "(--wait-for-memory SECONDS to wait for it)")
        print(f"{key}: waiting for {need:.1f} GB of free memory ({available_gb():.1f} GB now)", flush=True)
        time.sleep(min(60.0, max(deadline - time.monotonic(), 0.0)))
    return None


def check_in_own_process(study_dir: Path, key: str, smoke: bool, out: Path) -> dict:
    """``check_model`` in a child process (``--one``): a model killed there (out of memory) is a
    failed row, not the end of the check."""
    row_file = out / f"row_{key}.json"
    row_file.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--one", key, "--study", str(study_dir), "--row", str(row_file)]
    result = subprocess.run(command + (["--smoke"] if smoke else []), check=False)
    if row_file.is_file():
        return json.loads(row_file.read_text())
    why = "killed (SIGKILL: out of memory?)" if result.returncode == -9 else f"exit status {result.returncode}"
    return {"configuration": key, "status": f"FAILED: its process ended without a result, {why}"}


def results_notebook(run_dir: Path, out: Path) -> str:
    """Notebook 06 on the study (papermill): "ok" or the error."""
    import papermill  # noqa: PLC0415

    try:
        papermill.execute_notebook(str(REPO / "notebooks" / "06_results.ipynb"), str(out / "06_results.ipynb"),
                                   parameters={"run_dir": str(run_dir), "n_boot": 50}, kernel_name="python3",
                                   progress_bar=False, cwd=str(REPO / "notebooks"))
    except Exception as exc:  # noqa: BLE001
        return f"FAILED: {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"
    return "ok"


def markdown(table: pd.DataFrame) -> str:
    """The table as GitHub markdown, for docs/performance.md."""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one, removed after)")
    parser.add_argument("--models", default=None, help="Table 1 keys to check, comma-separated, in this order "
                                                       "(default: all ten, in Table 1's order)")
    parser.add_argument("--smoke", action="store_true", help="the same steps at toy shapes, in about a minute")
    parser.add_argument("--wait-for-memory", type=float, default=0.0, metavar="SECONDS",
                        help="how long a model may wait for the memory it needs (default 0: fail at once)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one model, in its own process
    parser.add_argument("--study", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--row", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)
    if args.one:
        row = check_model(study.Prepared.load(args.study), args.one, args.smoke)
        Path(args.row).write_text(json.dumps(row))
        return 0
    keys = roster.as_list(args.models) or list(roster.TABLE_1)  # in the order given (e.g. smallest memory first)
    unknown = [key for key in keys if key not in roster.TABLE_1]
    if unknown:
        parser.error(f"--models: {', '.join(unknown)} not in the paper's Table 1 ({', '.join(roster.TABLE_1)})")
    with tempfile.TemporaryDirectory(prefix="paper_shape_check_") as scratch:
        out = Path(args.out or scratch).resolve()
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        prepared = study.prepare(out / "study", profile="paper", data_path=out / "videos", cache_root=out / "cache",
                                 synthetic=SMOKE_VIDEOS if args.smoke else VIDEOS, num_folds=FOLDS, temporal_split=False, held_out_fraction=0,
                                 **(SMOKE_SHAPES if args.smoke else {}))
        print(f"prepared {prepared.run_dir}: {prepared.num_frames} x {prepared.image_size} x {prepared.image_size} "
              f"windows, {FOLDS} folds", flush=True)
        rows = []
        for key in keys:
            need = needed_gb(run_params(prepared, key, args.smoke)[1])
            skipped = wait_for_memory(key, need, args.wait_for_memory)
            rows.append({"configuration": key, "status": skipped} if skipped else
                        {**check_in_own_process(prepared.run_dir, key, args.smoke, out), "needed (GB)": round(need, 1)})
        notebook = results_notebook(prepared.run_dir, out)
        table = pd.DataFrame(rows)
        table.to_csv(out / "paper_shape_check.csv", index=False)
        print(f"\npaper-shape check{' (smoke)' if args.smoke else ''}, {time.strftime('%Y-%m-%d')}, "
              f"{platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, "
              f"{time.perf_counter() - started:.0f} s in all")
        print(table.to_string(index=False))
        (out / "paper_shape_check.md").write_text(markdown(table))
        print(f"notebook 06 on the study: {notebook}")
        failed = [row["configuration"] for row in rows if row["status"] != "ok"] + (["06_results"] if notebook != "ok" else [])
        if failed:
            print(f"paper-shape check FAILED: {', '.join(failed)}", file=sys.stderr)
            return 1
        print("paper-shape check passed: every model trained two steps and predicted, and notebook 06 ran")
        return 0


if __name__ == "__main__":
    sys.exit(main())
