"""What a run writes about itself: config.json (parameters, status, provenance) and its predictions tables.

``config.json`` holds the run's parameters and status ("running", then "finished"), the git
commit and library versions, the device, the weights used, the clips of each role (and those
left out), and the early-stopping outcome, so every number can be traced to what made it.
``unfinished_reason`` says whether a run folder holds a finished run, and if not why (still
running, interrupted, failed), for every step that reads another process's runs.
``predictions_table`` is one predictions CSV: ``clip_id, patient_id, fold, model_fold,
p_<pattern>..., <pattern>...`` (labels), where ``fold`` is each clip's fold and ``model_fold``
this run's fold.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from lusv.config import RunParams
from lusv.data.folds import FoldData
from lusv.data.patterns import PATTERNS
from lusv.infra.runlock import is_held, RUN_LOCK_NAME
from lusv.train.checkpoint import TrainState


def git_info() -> dict[str, Any]:
    """The commit of the lusv checkout and whether tracked files differ from it (None outside git)."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}
    if sha.returncode != 0:
        return {"git_sha": None, "git_dirty": None}
    return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}


def versions() -> dict[str, str]:
    import torchvision

    import lusv

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "lusv": lusv.__version__,
        "cuda": torch.version.cuda or "",
        "platform": platform.platform(),
    }


def config_record(
    p: RunParams, status: str, run_dir: Path, device: torch.device, amp_dtype: Optional[torch.dtype],
    world_size: int, weights_source: str, data: FoldData, state: TrainState, **extra: Any,
) -> dict[str, Any]:
    """The contents of config.json (see the module docstring); ``extra`` is added at the end."""
    return {
        "params": p.to_dict(),
        "status": status,
        "run_dir": str(run_dir.resolve()),
        **git_info(),
        "versions": versions(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        "world_size": world_size,
        "weights_source": weights_source,
        "clips": {role: int(len(table)) for role, table in data.roles().items()},
        "skipped_clips": data.skipped,
        "best_epoch": state.best_epoch,
        "best_val_loss": state.best_val_loss if math.isfinite(state.best_val_loss) else None,
        "epochs_run": state.epoch,
        **extra,
    }


def predictions_table(rows: pd.DataFrame, probabilities: np.ndarray, model_fold: int) -> pd.DataFrame:
    """Predictions CSV rows: ``fold`` is each clip's own fold, ``model_fold`` the fold of the
    model that predicted it (this run's fold; a validation clip's ``fold`` is (model_fold + 1) % K).
    ``clip_id`` is what was predicted (a window under ``clip_policy="windows"``), ``video_id`` the
    video it comes from (the clip itself under ``whole``)."""
    table = rows[["clip_id", "patient_id", "fold"]].reset_index(drop=True).copy()
    video_ids = rows["video_id"] if "video_id" in rows else rows["clip_id"]
    table.insert(1, "video_id", video_ids.astype(str).to_numpy())
    table["model_fold"] = int(model_fold)
    for i, pattern in enumerate(PATTERNS):
        table[f"p_{pattern}"] = probabilities[:, i].astype(np.float64)
    for pattern in PATTERNS:
        table[pattern] = rows[pattern].to_numpy(dtype=float)
    return table


def unfinished_reason(run_dir: Path) -> Optional[str]:
    """None when the run in ``run_dir`` finished (config.json says so and best.pt is there); else
    why it cannot be used, in a few words: missing, never started, still running (a live process
    holds its lock), interrupted (killed or crashed while "running"), failed (with the reason)."""
    config = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        return "no run folder"
    try:
        record = json.loads(config.read_text(encoding="utf-8"))
        status = record.get("status")
    except FileNotFoundError:
        return "never started (no config.json)"
    except (OSError, ValueError, AttributeError):
        return "config.json is unreadable"
    if status == "finished":
        return None if (Path(run_dir) / "best.pt").is_file() else "finished, but best.pt is missing"
    if status == "running":
        if is_held(Path(run_dir) / RUN_LOCK_NAME):
            return "still running"
        return 'interrupted (config.json says "running" but no process holds the run: killed or crashed); resume it'
    if status == "failed":
        return f"failed ({str(record.get('failure', 'no reason recorded'))[:200]})"
    return f"status {status!r}"
