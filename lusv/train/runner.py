"""One run: ``run(params) -> run_dir`` trains one model on one fold and writes its folder.

The order of a run: read and check the fold's clips (``lusv.data.folds``) and the cache
(``data.ensure_cached``); seed and build the model, Adam and the AMP scaler; resume from
``checkpoint.pt`` if asked; then epochs (``loop.train_one_epoch``, ``loop.evaluate`` on the
validation fold) until ``epochs`` or until the validation loss has not fallen for ``patience``
epochs (early stopping), saving after each (``checkpoint.save_epoch``); finally the best
epoch's model predicts the validation, test and temporal-test clips. ``config.json``
(``record.config_record``) says "running" during and "finished" after.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from lusv.config import DEFAULT_PROFILE, params_for, RunParams
from lusv.data.cache import ClipCache
from lusv.data.datasets import keep_freed_cpu_buffers
from lusv.data.features import FeatureCache
from lusv.data.folds import FoldData, load_fold_data, SET_APART
from lusv.data.model_input import clip_augment, ClipAugment
from lusv.data.patterns import PATTERNS
from lusv.errors import ConfigError, LusvError
from lusv.inference import build_run_model
from lusv.infra import io, runlock
from lusv.infra.devices import Distributed, init_distributed, resolve_amp, resolve_device, unwrap
from lusv.models import frame_models
from lusv.stats.metrics import macro_auc
from lusv.train import checkpoint
from lusv.train.checkpoint import TrainState
from lusv.train.data import ensure_cached, ensure_features, eval_loader, train_loader
from lusv.train.loop import evaluate, train_one_epoch
from lusv.train.progress import EpochProgress, progress_is_live
from lusv.train.randomness import make_deterministic, seed_everything
from lusv.train.record import config_record, predictions_table

logger = logging.getLogger("lusv.train")


@dataclass
class _Run:
    """What one run holds from set-up to predictions (built by ``_set_up``)."""

    p: RunParams
    run_dir: Path
    dist: Distributed
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    live: bool
    data: FoldData
    cache: ClipCache
    inputs: ClipCache | FeatureCache  # what the loaders read: clips, or cached features (train_encoder=False)
    train_loader: DataLoader
    augment: Optional[ClipAugment]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    weights_source: str
    features: Optional[dict] = None  # train_encoder=False: the feature cache and what building it did
    state: TrainState = field(default_factory=TrainState)
    unsaved_best: Optional[dict] = None  # best weights not yet in best.pt (checkpoint_every > 1)

    def evaluate(self, table: pd.DataFrame):
        loader = eval_loader(self.p, self.inputs, table, self.dist, self.device)
        return evaluate(self.model, loader, self.device, self.amp_dtype, self.p.channels_last)

    def write_config(self, status: str, **extra: Any) -> None:
        if self.dist.is_main:
            record = config_record(
                self.p, status, self.run_dir, self.device, self.amp_dtype, self.dist.world_size,
                self.weights_source, self.data, self.state,
                **({"features": self.features} if self.features else {}), **extra,
            )  # fmt: skip
            io.write_json(self.run_dir / "config.json", record)


def check_frozen_encoder(p: RunParams, dist: Distributed) -> None:
    """ConfigError when ``train_encoder=False`` cannot apply: a model without a frame encoder
    (the 3-D CNNs), or several processes (the heads train in one, in seconds)."""
    if p.train_encoder:
        return

    if p.model not in frame_models():
        raise ConfigError(
            f"train_encoder=False needs a 2-D model with a frame encoder ({', '.join(frame_models())}); "
            f"{p.model} is a 3-D CNN with no encoder to freeze: train it with train_encoder=True"
        )
    if dist.enabled:
        raise ConfigError("train_encoder=False trains on one process: run it without torchrun")


def _set_up(p: RunParams, run_dir: Path, dist: Distributed) -> _Run:
    """Device and precision, the fold's clips and loaders, then (seeded) model, optimizer, scaler.

    With ``train_encoder=False`` the encoder is frozen (no gradients, never in the loop), the
    loaders serve its cached features, and Adam (fused: one kernel over the large heads) steps
    the heads alone."""
    device = resolve_device(p.device, dist.local_rank)
    amp_dtype = resolve_amp(p.amp, device)
    make_deterministic(device)
    if device.type == "cpu" and keep_freed_cpu_buffers():
        logger.debug("glibc keeps freed CPU buffers for reuse (no page faults per batch)")
    data = load_fold_data(p, run_dir, dist)
    cache = ensure_cached(p, data, dist)
    if p.train_encoder:
        loader = train_loader(p, cache, data.train, dist, device)
    augment = clip_augment(p.augmentations) if p.augment and p.train_encoder else None

    seed_everything(p.seed)
    model = build_run_model(p).to(device)
    weights_source = getattr(model, "weights_source", "unknown")
    inputs, features, trainable = cache, None, model.parameters()
    if not p.train_encoder:
        model.encoder.requires_grad_(False)
        inputs, features = ensure_features(p, cache, data, model.encoder)
        loader = train_loader(p, inputs, data.train, dist, device)
        trainable = [q for q in model.parameters() if q.requires_grad]
    model = dist.wrap(model, device)
    fused = {} if p.train_encoder else {"fused": True}
    optimizer = torch.optim.Adam(trainable, lr=p.lr, weight_decay=p.weight_decay, **fused)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    live = progress_is_live() and dist.is_main
    return _Run(p, run_dir, dist, device, amp_dtype, live, data, cache, inputs, loader, augment, model, optimizer,
                scaler, weights_source, features)


def _fit(r: _Run) -> None:
    """Epochs until ``p.epochs`` or early stopping (``p.patience`` epochs without a lower validation loss)."""
    p, state = r.p, r.state
    progress = EpochProgress(p.name, p.epochs, state.epoch, live=r.live, show=r.dist.is_main)
    while not state.training_done and state.epoch < p.epochs:
        started = time.perf_counter()
        train_loss = train_one_epoch(
            r.model, r.optimizer, r.scaler, r.train_loader, epoch=state.epoch, p=p, device=r.device,
            amp_dtype=r.amp_dtype, augment=r.augment, dist=r.dist, live=r.live,
        )  # fmt: skip
        val_probabilities, val_loss = r.evaluate(r.data.val)
        auc = macro_auc(r.data.val[list(PATTERNS)].to_numpy(dtype=float), val_probabilities)
        state.epoch += 1
        improved = val_loss < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_epoch, state.bad_epochs = val_loss, state.epoch, 0
        else:
            state.bad_epochs += 1
        seconds = time.perf_counter() - started
        state.history.append(
            {"epoch": state.epoch, "train_loss": train_loss, "val_loss": val_loss, "val_macro_auc": auc,
             "lr": r.optimizer.param_groups[0]["lr"], "seconds": seconds}
        )  # fmt: skip
        state.training_done = state.bad_epochs >= p.patience or state.epoch >= p.epochs
        save_now = state.training_done or state.epoch % p.checkpoint_every == 0
        if improved and not save_now:
            # Kept (on the CPU) until the next checkpoint: best.pt and checkpoint.pt are written
            # together, so a resume from checkpoint.pt replays the epochs since from best.pt as it was.
            r.unsaved_best = {k: v.detach().to("cpu", copy=True) for k, v in unwrap(r.model).state_dict().items()}
        if r.dist.is_main and save_now:
            best = unwrap(r.model).state_dict() if improved else r.unsaved_best
            checkpoint.save_epoch(r.run_dir, p, r.model, r.optimizer, r.scaler, state, best)
            r.unsaved_best = None
        progress.epoch_done(state.epoch, train_loss, val_loss, auc, seconds, improved)
    progress.close()
    if state.bad_epochs >= p.patience and r.dist.is_main:
        logger.info("early stop after epoch %d: no lower validation loss for %d epochs", state.epoch, p.patience)
    state.training_done = True


def _write_predictions(r: _Run) -> None:
    """The best epoch's model predicts every role but training: predictions_<role>.csv."""
    if not r.dist.is_main:
        return
    best = r.run_dir / "best.pt"
    if not best.is_file():
        raise LusvError(
            f"{r.run_dir}: no epoch reached a finite validation loss, so there is no best.pt; "
            "lower the learning rate or check the labels"
        )
    unwrap(r.model).load_state_dict(io.torch_load(best, map_location=r.device))
    for role, table in r.data.roles().items():
        if role == "train":
            continue
        probabilities, _ = r.evaluate(table)
        io.write_csv(r.run_dir / f"predictions_{role}.csv", predictions_table(table, probabilities, r.p.fold))


def _resolve_params(params: RunParams | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> RunParams:
    overrides = dict(overrides)
    # A RunParams is complete; a mapping or keywords fill their gaps from the default profile.
    profile = overrides.pop("profile", None if isinstance(params, RunParams) else DEFAULT_PROFILE)
    base = params.to_dict() if isinstance(params, RunParams) else dict(params or {})
    merged = {**base, **overrides}
    return params_for(profile, **merged) if profile is not None else RunParams.from_dict(merged)


def run(params: RunParams | Mapping[str, Any] | None = None, /, **overrides: Any) -> Path:
    """Train one model on one fold and write its run directory (see ``lusv.train``).

    Call as ``run(**params_for("quick", labels=..., splits=...).to_dict())``, ``run(params)``
    with a ``RunParams``, or ``run(profile="quick", labels=..., ...)``; unset fields take the
    values of ``profile`` (default ``lusv.config.DEFAULT_PROFILE``, quick). Returns the run
    directory. The run holds the run folder's lock (``lusv.infra.runlock.run_lock``) for its whole lifetime.
    """
    p = _resolve_params(params, overrides)
    dist = init_distributed()
    check_frozen_encoder(p, dist)
    run_dir = Path(p.out_dir) / p.name
    # One process per run folder (rank 0 for a torchrun launch): a second run into it is refused.
    with runlock.run_lock(run_dir) if dist.is_main else contextlib.nullcontext():
        saved = checkpoint.read_config(run_dir) if p.resume else None
        if saved is not None:
            checkpoint.check_same_run(p, saved.get("params", {}), run_dir)
            if saved.get("status") == "finished":
                _check_it_predicted_every_test_set(p, run_dir)
                logger.info("%s already finished: reusing it (resume=True)", run_dir)
                return run_dir
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            io.remove_stale_temp_files(run_dir)  # left by a run killed while writing
            if not p.resume:
                checkpoint.clear_previous(run_dir)
        dist.barrier()
        _train(p, run_dir, dist, saved)
    return run_dir


def _check_it_predicted_every_test_set(p: RunParams, run_dir: Path) -> None:
    """Refuse to reuse a finished run that lacks the predictions of a test set the data now sets
    apart (a held-out set added since): its folds were made before that set and may hold its clips."""
    missing = [role for role, field_name in SET_APART.items()
               if getattr(p, field_name) and not (run_dir / f"predictions_{role}.csv").is_file()]
    if missing:
        raise ConfigError(
            f"{run_dir} finished before the study had its {' and '.join(missing)} test set (no "
            f"predictions_{missing[0]}.csv), so its folds may hold those clips: train it afresh (resume=False) or "
            "delete the run folder"
        )


def _train(p: RunParams, run_dir: Path, dist: Distributed, saved: Optional[dict]) -> None:
    """Set up, resume when asked, fit, predict; config.json says running, finished or failed."""
    r = _set_up(p, run_dir, dist)
    saved_checkpoint = run_dir / "checkpoint.pt"
    if p.resume and saved_checkpoint.is_file():
        r.state = checkpoint.restore(saved_checkpoint, p, run_dir, r.model, r.optimizer, r.scaler)
    elif p.resume and dist.is_main:
        # A warning when an earlier run left its config but no checkpoint (killed in epoch 1,
        # files removed); a note for a new folder, as every fold of a fresh study is.
        logger.log(logging.WARNING if saved is not None else logging.INFO,
                   "resume=True but %s has no checkpoint.pt: starting from scratch", run_dir)
    r.write_config("running")
    try:
        _fit(r)
        _write_predictions(r)
        r.write_config("finished", finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        dist.barrier()
    except LusvError as exc:
        _record_failure(r, exc)
        raise
    except BaseException as exc:  # a library error, a bug, Ctrl-C: never leave the run "running"
        _record_failure(r, exc)
        raise
    finally:
        if dist.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _record_failure(r: _Run, exc: BaseException) -> None:
    """Mark config.json "failed" with the reason (a lusv error's own line, else the error's type and
    first line); a full disk may refuse even that, which must not hide the original error."""
    reason = str(exc) if isinstance(exc, LusvError) else f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    try:
        r.write_config("failed", failure=reason, failed_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    except (LusvError, OSError) as also:
        logger.warning("could not mark %s failed in config.json: %s", r.run_dir, also)
