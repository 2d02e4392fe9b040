"""A run's state between epochs on disk: atomic checkpoints, and the checks before resuming.

``TrainState`` is what changes from epoch to epoch besides the weights (epoch counter,
early-stopping state, log rows). ``save_epoch`` writes, atomically and at the end of every
epoch, ``checkpoint.pt`` (model, optimizer, AMP scaler, ``TrainState`` and the RNG states),
``log.csv``, and ``best.pt`` when the validation loss improved (every ``checkpoint_every``
epochs instead, when that is above 1: large heads write hundreds of MB per checkpoint); ``restore`` reads a checkpoint
back into the run's objects. Every checkpoint holds only tensors and plain containers, so it
loads with ``weights_only=True``.

Resume checks: ``check_same_run`` refuses to continue a run made with other parameters, except
the fields ``RunParams`` marks ``may_change_on_resume``; ``clear_previous`` removes the result
files of an earlier run when starting afresh.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd
import torch
from torch import nn

from lusv.config import BEFORE_FIELD_EXISTED, resume_may_change, RunParams
from lusv.errors import CheckpointError, ConfigError
from lusv.infra import io
from lusv.infra.devices import unwrap
from lusv.train.randomness import rng_state, set_rng_state

logger = logging.getLogger("lusv.train")

CHECKPOINT_FORMAT = 1
_CHECKPOINT_KEYS = ("params", "model", "optimizer", "scaler", "epoch", "best_val_loss", "best_epoch", "bad_epochs",
                    "history", "training_done", "rng")
LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "val_macro_auc", "lr", "seconds")
RESULT_FILES = ("checkpoint.pt", "best.pt", "log.csv", "predictions_val.csv", "predictions_test.csv", "predictions_temporal_test.csv",
                "predictions_held_out.csv")


@dataclass
class TrainState:
    """Counters and early-stopping state of a run (the weights live in the model and optimizer)."""

    epoch: int = 0  # finished epochs
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    training_done: bool = False


def save_epoch(
    run_dir: Path, p: RunParams, model: nn.Module, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler, state: TrainState, best_state: Optional[Mapping[str, torch.Tensor]],
) -> None:
    """best.pt (``best_state``, the weights of the best epoch so far, when they changed since the
    last save; None = unchanged), log.csv and checkpoint.pt after a finished epoch, each written
    atomically."""
    if best_state is not None:
        io.torch_save(run_dir / "best.pt", best_state)
    io.write_csv(run_dir / "log.csv", pd.DataFrame(state.history, columns=list(LOG_COLUMNS)))
    io.torch_save(run_dir / "checkpoint.pt", {
        "format": CHECKPOINT_FORMAT,
        "params": p.to_dict(),
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": state.epoch,
        "best_val_loss": state.best_val_loss,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "history": state.history,
        "training_done": state.training_done,
        "rng": rng_state(),
    })  # fmt: skip


def restore(
    path: Path, p: RunParams, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> TrainState:
    """Load ``checkpoint.pt`` into the model, optimizer, scaler and the global RNGs; return its TrainState."""
    saved = io.torch_load(path, map_location="cpu")
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a lusv training checkpoint (format {CHECKPOINT_FORMAT}): resume=False to start afresh")
    lacking = [key for key in _CHECKPOINT_KEYS if key not in saved]
    if lacking:
        raise CheckpointError(f"{path} lacks {', '.join(lacking)}: it was written by another lusv version or is "
                              "incomplete; resume=False to start afresh")
    check_same_run(p, saved["params"], run_dir)
    try:
        unwrap(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:  # another architecture (another lusv version) or optimizer
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{path} does not fit the {p.model} model this lusv builds ({why}): it was written by "
                              "another lusv version; resume=False to start afresh") from None
    if saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    state = TrainState(
        epoch=int(saved["epoch"]),
        best_val_loss=float(saved["best_val_loss"]),
        best_epoch=int(saved["best_epoch"]),
        bad_epochs=int(saved["bad_epochs"]),
        history=[dict(row) for row in saved["history"]],
        training_done=bool(saved["training_done"]),
    )
    set_rng_state(saved["rng"])
    logger.info("resumed %s after epoch %d (best epoch %d)", run_dir, state.epoch, state.best_epoch)
    return state


def read_config(run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's config.json, or None when there is none yet."""
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}): delete the run dir or run without resume") from None


def check_same_run(p: RunParams, saved: Mapping[str, Any], run_dir: Path) -> None:
    """ConfigError unless ``p`` equals the saved parameters in every field that may not change on resume."""
    # A field added to RunParams after the run was made is missing from its record; the run was
    # made with that field's default behaviour (or, where the default changed the behaviour, what
    # the code did before: BEFORE_FIELD_EXISTED), so that is what it is compared with.
    recorded = {**RunParams().to_dict(), **BEFORE_FIELD_EXISTED, **saved}
    changed = io.recorded_mismatch(recorded, p.to_dict(), ignore=resume_may_change())
    if changed:
        details = ", ".join(map(str, changed))
        raise ConfigError(
            f"cannot resume {run_dir}: it was made with other parameters ({details}); "
            "use another run_name or resume=False to start it afresh"
        )


def clear_previous(run_dir: Path) -> None:
    """Remove the result files of an earlier run in ``run_dir`` (resume=False), saying which."""
    stale = [run_dir / name for name in RESULT_FILES if (run_dir / name).exists()]
    if stale:
        logger.warning("resume=False: starting %s afresh, removing %s", run_dir, ", ".join(s.name for s in stale))
        for path in stale:
            path.unlink()
