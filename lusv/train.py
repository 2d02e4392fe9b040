"""Fit one model on one fold: masked BCE, Adam, early stopping, atomic checkpoints, resume.

``run(**params)`` trains the model named by the ``RunParams`` and returns its run directory::

    <out_dir>/<run_name>/            run_name default: <model>-<encoder>-T<T>-S<S>-fold<f>-seed<seed>
      config.json                    params, status, git sha, versions, device, weights_source, data sizes
      log.csv                        epoch, train_loss, val_loss, val_macro_auc, lr, seconds
      checkpoint.pt                  latest epoch: model, optimizer, scaler, counters, RNG states
      best.pt                        model state dict of the epoch with the lowest validation loss
      splits.csv (+ .json)           only when no splits file was given: the folds made for this run
      predictions_val.csv            clip_id, patient_id, fold, model_fold, p_<pattern>..., <pattern>... (labels);
                                     fold = the clip's fold, model_fold = this run's fold
      predictions_test.csv
      predictions_temporal_test.csv  only with a temporal split file

Fold roles: test = fold f, validation = fold (f + 1) % K, training = the other folds; a patient
on two sides refuses to train (``LeakageError`` naming the patient). Clips of the temporal
test set must not be in the folds file at all.

Reproducibility and resume: everything random is seeded from ``seed``. The training order of
epoch e is drawn from a generator seeded with (seed, e) (``DistributedSampler.set_epoch``) and
the augmentations of epoch e from another seeded with (seed, e, rank), so the data-order and
augmentation generators are restored exactly by restoring the epoch counter. ``checkpoint.pt``
is written atomically at the end of every epoch with the model, optimizer, AMP scaler, epoch
counter, early-stopping state, log rows and the python/numpy/torch(/cuda) RNG states; a run
killed at any point and restarted with ``resume=True`` continues from the last finished epoch
and produces the same numbers as an uninterrupted run (CPU; GPU kernels may differ in the last
bits). A finished run restarted with ``resume=True`` is returned as is. Every checkpoint holds
only tensors and plain containers, so it loads with ``weights_only=True``.

Test hook: the environment variable ``LUSV_TEST_KILL_AFTER_BATCHES="E:N"`` makes the process
SIGKILL itself after N training batches of epoch E (1-based), to test resuming after a crash.
``"E:N:MARKER"`` kills only the first process to get there: it creates the file MARKER first
and does not fire while MARKER exists, so a retried task (lusv.executors) survives its retry.

Multi-GPU: under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DDP and each process
trains on its ``DistributedSampler`` shard (``batch_size`` is per process); every process
evaluates the whole validation set (identical early-stopping decisions without communication)
and rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm  # text bars: readable in JupyterLab and in papermill-rendered notebooks alike

from lusv import io
from lusv.config import RunParams, params_for
from lusv.datasets import ClipAugment, ClipDataset, collate_clips, keep_freed_cpu_buffers, to_model_input
from lusv.errors import CheckpointError, ConfigError, LabelsError, LeakageError, LusvError
from lusv.metrics import macro_auc
from lusv.patterns import PATTERNS

logger = logging.getLogger(__name__)

KILL_ENV = "LUSV_TEST_KILL_AFTER_BATCHES"
CHECKPOINT_FORMAT = 1
LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "val_macro_auc", "lr", "seconds")
# Parameters that may differ between a run and its resumption without changing its numbers.
_RESUME_MAY_CHANGE = frozenset({"resume", "num_workers", "log_every", "device", "cache_dir", "labels", "splits", "temporal_split", "out_dir"})


# ----------------------------------------------------------------------------- devices, AMP, DDP


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun launch (world_size 1 = plain single process)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def _init_distributed() -> Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(world_size, rank, local_rank)


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto" -> the process's GPU when CUDA is available, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device={name!r} is not a torch device (use auto, cpu, cuda, cuda:1): {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here: use device='auto' or 'cpu'")
    return device


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype for ``amp`` on ``device``; None = full precision. AMP is CUDA-only."""
    if device.type != "cuda" or amp == "off":
        if amp in ("bf16", "fp16"):
            logger.warning("amp=%s ignored: mixed precision is only used on CUDA (device %s)", amp, device)
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ----------------------------------------------------------------------------- loss


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of BCE-with-logits over the labelled entries (NaN = missing) and their count."""
    known = ~torch.isnan(labels)
    losses = F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(labels), reduction="none")
    return (losses * known).sum(), known.sum()


# ----------------------------------------------------------------------------- RNG state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (seed, epoch, rank...), independent of PYTHONHASHSEED."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def rng_state() -> dict[str, Any]:
    """python/numpy/torch(/cuda) RNG states as tensors and numbers (weights_only-loadable)."""
    py_version, py_keys, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python_version": int(py_version),
        "python_keys": torch.tensor(py_keys, dtype=torch.int64),
        "python_gauss": py_gauss,
        "numpy_kind": str(np_kind),
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(int(k) for k in state["python_keys"].tolist()), state["python_gauss"]))
    np.random.set_state(
        (
            state["numpy_kind"],
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


# ----------------------------------------------------------------------------- data


@dataclass
class FoldData:
    """The clips of each role for one fold, as labels-table rows (clip_id, patient_id, fold, patterns)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    temporal_test: Optional[pd.DataFrame] = None
    skipped: dict[str, str] = field(default_factory=dict)

    def roles(self) -> dict[str, pd.DataFrame]:
        out = {"train": self.train, "val": self.val, "test": self.test}
        if self.temporal_test is not None:
            out["temporal_test"] = self.temporal_test
        return out


def _read_split_csv(path: str, required: Iterable[str], what: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise ConfigError(f"{what} file {path} does not exist: check the path or make it with lusv.splits")
    table = pd.read_csv(path, dtype={"clip_id": str, "patient_id": str})
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise LabelsError(f"{what} file {path} lacks column(s) {missing} (needed: {list(required)})")
    return table


def _named(values: Iterable[Any], limit: int = 10) -> str:
    values = sorted(map(str, values))
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def load_fold_data(p: RunParams, run_dir: Path, dist: Distributed = Distributed()) -> FoldData:
    """Read labels, folds and temporal split; check them for leakage; return each role's rows."""
    from lusv.labels import read_labels
    from lusv.splits import assert_no_patient_overlap, fold_roles, load_or_make_folds

    if not p.labels:
        raise ConfigError("no labels CSV given: set labels=<path to the labels CSV> (see lusv.labels)")
    labels = read_labels(p.labels)
    labels = labels.assign(clip_id=labels["clip_id"].astype(str), patient_id=labels["patient_id"].astype(str))

    temporal_ids: set[str] = set()
    if p.temporal_split:
        temporal = _read_split_csv(p.temporal_split, ("clip_id", "split"), "temporal split")
        temporal_ids = set(temporal.loc[temporal["split"] == "temporal_test", "clip_id"])

    if p.splits:
        folds = _read_split_csv(p.splits, ("clip_id", "patient_id", "fold"), "splits")
    else:
        development = labels[~labels["clip_id"].isin(temporal_ids)]
        if dist.is_main:  # rank 0 makes and saves the folds; the other ranks then reuse the file
            load_or_make_folds(development, run_dir / "splits.csv", num_folds=p.num_folds, seed=p.split_seed)
        dist.barrier()
        folds = load_or_make_folds(development, run_dir / "splits.csv", num_folds=p.num_folds, seed=p.split_seed)
        folds = folds.assign(clip_id=folds["clip_id"].astype(str), patient_id=folds["patient_id"].astype(str))

    in_both = temporal_ids & set(folds["clip_id"])
    if in_both:
        raise LeakageError(
            f"clip(s) {_named(in_both)} of the temporal test set ({p.temporal_split}) are also in the "
            f"folds ({p.splits}): make the folds from the development clips only "
            "(lusv.study.prepare does this)"
        )
    unknown = set(folds["clip_id"]) - set(labels["clip_id"])
    if unknown:
        raise LabelsError(f"splits file {p.splits} names clip(s) not in the labels CSV {p.labels}: {_named(unknown)}")
    # The labels table is the authority on patients: a folds file that disagrees could hide leakage.
    patient_of = labels.set_index("clip_id")["patient_id"]
    moved = folds[folds["patient_id"] != folds["clip_id"].map(patient_of)]
    if len(moved):
        raise LeakageError(
            f"splits file {p.splits} gives clip(s) {_named(moved['clip_id'])} another patient than the labels "
            f"CSV {p.labels}: remake the splits from the current labels"
        )

    roles = fold_roles(folds, p.fold, p.num_folds)
    indexed = labels.set_index("clip_id", drop=False)
    fold_of = folds.set_index("clip_id")["fold"].astype(int)
    tables = {role: indexed.loc[ids].assign(fold=fold_of.loc[ids].to_numpy()).reset_index(drop=True) for role, ids in roles.items()}
    # fold_roles checks this too; checking here keeps training safe whatever builds the roles.
    assert_no_patient_overlap(tables["train"], tables["val"], names=("train", "validation"))
    assert_no_patient_overlap(tables["train"], tables["test"], names=("train", "test"))
    assert_no_patient_overlap(tables["val"], tables["test"], names=("validation", "test"))

    temporal_table = None
    if p.temporal_split:
        missing = temporal_ids - set(labels["clip_id"])
        if missing:
            raise LabelsError(f"temporal split {p.temporal_split} names clip(s) not in the labels CSV: {_named(missing)}")
        temporal_table = indexed.loc[sorted(temporal_ids)].assign(fold=p.fold).reset_index(drop=True)
        seen = pd.concat([tables["train"], tables["val"]])
        assert_no_patient_overlap(seen, temporal_table, names=("development (train/validation)", "temporal_test"))
    return FoldData(tables["train"], tables["val"], tables["test"], temporal_table)


def _ensure_cached(p: RunParams, data: FoldData, dist: Distributed):
    """Open the clip cache, check every entry and decode missing or stale clips (rank 0), drop
    unusable ones with a warning."""
    from lusv.cache import ClipCache

    cache = ClipCache(p.cache_dir, p.num_frames, p.image_size)
    everything = pd.concat(list(data.roles().values()), ignore_index=True)
    if dist.is_main:
        # Every entry is checked against its source and checksum before training, not only in the
        # prepare step: an entry edited or truncated since, or made from another file under the
        # same id (the default cache_dir is shared and ids like "clip001" recur), is decoded
        # again with a warning instead of being trained on. A valid entry costs one read.
        try:
            cache.build(everything.drop(columns=["fold"]), progress=_progress_is_live())
        except LusvError as exc:
            if getattr(exc, "report", None) is None:
                raise
            logger.warning("none of the %d clip(s) of this fold could be cached: %s", len(everything), exc.report)
    dist.barrier()
    cache = ClipCache(p.cache_dir, p.num_frames, p.image_size)  # re-read the manifest (other ranks)
    for role, table in data.roles().items():
        absent = [cid for cid in table["clip_id"] if cid not in cache]
        if absent:
            logger.warning("%s: %d clip(s) could not be cached and are left out: %s", role, len(absent), _named(absent))
            data.skipped.update({cid: role for cid in absent})
            setattr(data, role, table[~table["clip_id"].isin(absent)].reset_index(drop=True))
    for role in ("train", "val", "test"):
        if getattr(data, role).empty:
            raise LusvError(f"fold {p.fold}: no usable {role} clips left (see the cache's ingest report)")
    if np.isnan(data.val[list(PATTERNS)].to_numpy(dtype=float)).all():
        raise LabelsError(f"fold {p.fold}: the validation fold has no labels at all, so early stopping is impossible")
    return cache


# ----------------------------------------------------------------------------- model building


def model_config(p: RunParams) -> dict[str, Any]:
    """The ``build_model`` keyword arguments of a run."""
    return {
        "encoder": p.encoder,
        "weights": p.weights,
        "num_heads": p.num_heads,
        "kernel_size": p.kernel_size,
        "pooling": p.pooling,
        "width": p.width,
        "num_frames": p.num_frames,
        "image_size": p.image_size,
        "channels_last": p.channels_last,
    }


def build_run_model(p: RunParams, weights: Optional[str] = None) -> nn.Module:
    from lusv.models import build_model

    config = model_config(p)
    if weights is not None:
        config["weights"] = weights
    return build_model(p.model, **config)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ----------------------------------------------------------------------------- prediction


@torch.no_grad()
def _predict_batches(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """Probabilities (N, 4), summed masked BCE, label count, and attention per batch (if any)."""
    model.eval()
    probabilities, attentions = [], []
    loss_sum = torch.zeros((), device=device)
    count = torch.zeros((), device=device, dtype=torch.int64)
    for batch in batches:
        x = to_model_input(batch["clips"], device, channels_last=channels_last)
        lengths = batch["lengths"].to(device)
        with _autocast(device, amp_dtype):
            out = model(x, lengths=lengths)
        logits = out["logits"].float()
        if "labels" in batch:
            batch_loss, batch_count = masked_bce(logits, batch["labels"].to(device))
            loss_sum += batch_loss
            count += batch_count
        probabilities.append(torch.sigmoid(logits).cpu().numpy())
        if out.get("attention") is not None:
            attentions.append(out["attention"].float().cpu().numpy())
    stacked = np.concatenate(probabilities) if probabilities else np.zeros((0, len(PATTERNS)), np.float32)
    return stacked, loss_sum, count, attentions


def predict(
    model: nn.Module,
    clips: np.ndarray | torch.Tensor,
    lengths: np.ndarray | torch.Tensor | None = None,
    *,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    return_attention: bool = False,
) -> np.ndarray | tuple[np.ndarray, Optional[np.ndarray]]:
    """Pattern probabilities (N, 4) for uint8 clips (N, T, S, S, 1), e.g. from ``ClipCache.load_many``.

    ``lengths`` (N,) gives the real frames of zero-padded clips (None = all real). Runs on the
    model's device unless ``device`` is given. With ``return_attention`` also returns the
    model's attention (N, 4, H, T) (None for models without one).
    """
    clips_t = torch.as_tensor(np.asarray(clips)) if not isinstance(clips, torch.Tensor) else clips
    n, t = clips_t.shape[:2]
    lengths_t = torch.full((n,), t, dtype=torch.int64) if lengths is None else torch.as_tensor(np.asarray(lengths), dtype=torch.int64)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    batches = (
        {"clips": clips_t[i : i + batch_size], "lengths": lengths_t[i : i + batch_size]} for i in range(0, n, batch_size)
    )
    probabilities, _, _, attentions = _predict_batches(model, batches, device)
    if not return_attention:
        return probabilities
    return probabilities, (np.concatenate(attentions) if attentions else None)


def load_trained(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild a trained model from a run directory (or its best.pt) in eval mode.

    The architecture comes from the run's config.json; the weights from best.pt (read with
    weights_only=True). The returned model has ``run_params`` (RunParams) and
    ``weights_source`` = "trained:<best.pt>".
    """
    path = Path(path)
    best = path / "best.pt" if path.is_dir() else path
    config_path = best.parent / "config.json"
    if not best.is_file():
        raise CheckpointError(f"checkpoint {best} does not exist: pass a training run's best.pt or its folder")
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} not found: {best.parent} is not a lusv run directory (train it with lusv.train.run)")
    params = RunParams.from_dict(json.loads(config_path.read_text(encoding="utf-8"))["params"])
    state = io.torch_load(best)
    model = build_run_model(params, weights="random")  # the trained weights replace any init
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{best} does not fit the model described by {config_path}: {exc}") from None
    model.weights_source = f"trained:{best.resolve()}"
    model.run_params = params
    return model.to(device).eval()


# ----------------------------------------------------------------------------- run bookkeeping


def _git_info() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}
    if sha.returncode != 0:
        return {"git_sha": None, "git_dirty": None}
    return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}


def _versions() -> dict[str, str]:
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


def _read_config(run_dir: Path) -> Optional[dict[str, Any]]:
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}): delete the run dir or run without resume") from None


def _check_same_run(p: RunParams, saved: Mapping[str, Any], run_dir: Path) -> None:
    current = p.to_dict()
    changed = sorted(k for k in current if k not in _RESUME_MAY_CHANGE and saved.get(k) != current[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ConfigError(
            f"cannot resume {run_dir}: it was made with other parameters ({details}); "
            "use another run_name or resume=False to start it afresh"
        )


_RESULT_FILES = ("checkpoint.pt", "best.pt", "log.csv", "predictions_val.csv", "predictions_test.csv", "predictions_temporal_test.csv")


def _clear_previous(run_dir: Path) -> None:
    stale = [run_dir / name for name in _RESULT_FILES if (run_dir / name).exists()]
    if stale:
        logger.warning("resume=False: starting %s afresh, removing %s", run_dir, ", ".join(s.name for s in stale))
        for path in stale:
            path.unlink()


def _kill_point() -> Optional[tuple[int, int]]:
    value = os.environ.get(KILL_ENV)
    if not value:
        return None
    epoch, batches = value.split(":", 2)[:2]
    return int(epoch), int(batches)


def _kill_now() -> None:
    """SIGKILL this process (test hook), unless a "E:N:MARKER" hook has fired once already."""
    marker = os.environ.get(KILL_ENV, "").split(":", 2)[2:]
    if marker:
        try:  # O_EXCL: of all processes that reach this point, exactly one creates the marker
            os.close(os.open(marker[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)


def _progress_is_live() -> bool:
    """Live tqdm bars only on a terminal; logs, papermill and CI get one line per epoch."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _predictions_table(rows: pd.DataFrame, probabilities: np.ndarray, model_fold: int) -> pd.DataFrame:
    """Predictions CSV rows: ``fold`` is each clip's own fold, ``model_fold`` the fold of the
    model that predicted it (this run's fold; a validation clip's ``fold`` is (model_fold + 1) % K)."""
    table = rows[["clip_id", "patient_id", "fold"]].reset_index(drop=True).copy()
    table["model_fold"] = int(model_fold)
    for i, pattern in enumerate(PATTERNS):
        table[f"p_{pattern}"] = probabilities[:, i].astype(np.float64)
    for pattern in PATTERNS:
        table[pattern] = rows[pattern].to_numpy(dtype=float)
    return table


# ----------------------------------------------------------------------------- the run


class _Trainer:
    """State of one run between epochs; ``run`` drives it."""

    def __init__(self, p: RunParams, run_dir: Path, dist: Distributed):
        self.p, self.run_dir, self.dist = p, run_dir, dist
        self.device = resolve_device(p.device, dist.local_rank)
        self.amp_dtype = resolve_amp(p.amp, self.device)
        if self.device.type == "cpu" and keep_freed_cpu_buffers():
            logger.debug("glibc keeps freed CPU buffers for reuse (no page faults per batch)")
        self.live = _progress_is_live() and dist.is_main

        self.data = load_fold_data(p, run_dir, dist)
        self.cache = _ensure_cached(p, self.data, dist)
        pin = self.device.type == "cuda"
        self.train_set = ClipDataset(self.cache, self.data.train)
        # The sampler reshuffles from (seed, epoch) at every set_epoch: data order needs no saved state.
        self.sampler = DistributedSampler(
            self.train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=p.seed, drop_last=False
        )
        self.train_loader = DataLoader(
            self.train_set, batch_size=p.batch_size, sampler=self.sampler, collate_fn=collate_clips,
            num_workers=p.num_workers, pin_memory=pin, persistent_workers=p.num_workers > 0,
        )
        self.augment = ClipAugment() if p.augment else None

        seed_everything(p.seed)
        model = build_run_model(p).to(self.device)
        self.weights_source = getattr(model, "weights_source", "unknown")
        if dist.enabled:
            model = nn.parallel.DistributedDataParallel(model, device_ids=[dist.local_rank] if pin else None)
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        self.epoch = 0  # finished epochs
        self.best_val_loss = math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []
        self.training_done = False

    # -- data loaders for evaluation: whole role, in table order, on every rank
    def eval_loader(self, table: pd.DataFrame) -> DataLoader:
        return DataLoader(
            ClipDataset(self.cache, table), batch_size=self.p.batch_size, shuffle=False, collate_fn=collate_clips,
            num_workers=self.p.num_workers, pin_memory=self.device.type == "cuda",
        )

    # -- checkpoint
    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "params": self.p.to_dict(),
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "training_done": self.training_done,
            "rng": rng_state(),
        }

    def restore(self, path: Path) -> None:
        state = io.torch_load(path, map_location="cpu")
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not a lusv training checkpoint (format {CHECKPOINT_FORMAT}): resume=False to start afresh")
        _check_same_run(self.p, state["params"], self.run_dir)
        _unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.best_val_loss = float(state["best_val_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.history = [dict(row) for row in state["history"]]
        self.training_done = bool(state["training_done"])
        set_rng_state(state["rng"])
        logger.info("resumed %s after epoch %d (best epoch %d)", self.run_dir, self.epoch, self.best_epoch)

    # -- one epoch
    def train_epoch(self) -> float:
        p, dist = self.p, self.dist
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        augment_generator = torch.Generator().manual_seed(derive_seed(p.seed, self.epoch, dist.rank))
        n_batches = len(self.train_loader)
        if p.max_batches_per_epoch is not None:
            n_batches = min(n_batches, p.max_batches_per_epoch)
        kill = _kill_point()
        loss_sum = torch.zeros((), device=self.device)
        count = torch.zeros((), device=self.device, dtype=torch.int64)
        bar = tqdm(total=n_batches, desc=f"epoch {self.epoch + 1}", leave=False, disable=not self.live, unit="batch")
        self.optimizer.zero_grad(set_to_none=True)
        step = 0
        for index, batch in enumerate(self.train_loader):
            if index >= n_batches:
                break
            group_start = index - index % p.grad_accum
            group_size = min(p.grad_accum, n_batches - group_start)
            step_now = index + 1 == group_start + group_size
            x = to_model_input(
                batch["clips"], self.device, augment=self.augment, generator=augment_generator,
                lengths=batch["lengths"], channels_last=p.channels_last,
            )
            lengths = batch["lengths"].to(self.device, non_blocking=True)
            labels = batch["labels"].to(self.device, non_blocking=True)
            no_sync = self.model.no_sync() if dist.enabled and not step_now else contextlib.nullcontext()
            with no_sync:
                with _autocast(self.device, self.amp_dtype):
                    out = self.model(x, lengths=lengths)
                batch_loss, batch_count = masked_bce(out["logits"], labels)
                loss = batch_loss / batch_count.clamp(min=1) / group_size
                self.scaler.scale(loss).backward()
            if step_now:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                if p.log_every and step % p.log_every == 0:
                    logger.info("epoch %d step %d: loss %.4f", self.epoch + 1, step, float(loss) * group_size)
            loss_sum += batch_loss.detach()
            count += batch_count
            bar.update(1)
            if kill is not None and kill == (self.epoch + 1, index + 1):
                _kill_now()  # test hook: simulate a crash mid-epoch
        bar.close()
        if dist.enabled:  # the logged training loss covers every rank's shard
            totals = torch.stack([loss_sum, count.to(loss_sum.dtype)])
            torch.distributed.all_reduce(totals)
            loss_sum, count = totals[0], totals[1]
        return float(loss_sum / count.clamp(min=1))

    def evaluate(self, table: pd.DataFrame) -> tuple[np.ndarray, float]:
        # The unwrapped module: evaluation needs no DDP communication (every rank sees all clips).
        probabilities, loss_sum, count, _ = _predict_batches(
            _unwrap(self.model), self.eval_loader(table), self.device, self.amp_dtype, self.p.channels_last
        )
        return probabilities, float(loss_sum / count.clamp(min=1))

    # -- files
    def write_config(self, status: str, **extra: Any) -> None:
        if not self.dist.is_main:
            return
        record = {
            "params": self.p.to_dict(),
            "status": status,
            "run_dir": str(self.run_dir.resolve()),
            **_git_info(),
            "versions": _versions(),
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or "cpu",
            "amp_dtype": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            "world_size": self.dist.world_size,
            "weights_source": self.weights_source,
            "clips": {role: int(len(table)) for role, table in self.data.roles().items()},
            "skipped_clips": self.data.skipped,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss if math.isfinite(self.best_val_loss) else None,
            "epochs_run": self.epoch,
            **extra,
        }
        io.write_json(self.run_dir / "config.json", record)

    def end_of_epoch(self, improved: bool) -> None:
        if not self.dist.is_main:
            return
        if improved:
            io.torch_save(self.run_dir / "best.pt", _unwrap(self.model).state_dict())
        io.write_csv(self.run_dir / "log.csv", pd.DataFrame(self.history, columns=list(LOG_COLUMNS)))
        io.torch_save(self.run_dir / "checkpoint.pt", self.state())

    def fit(self) -> None:
        p = self.p
        epochs = tqdm(total=p.epochs, initial=self.epoch, desc=p.name, unit="epoch", disable=not self.live)
        while not self.training_done and self.epoch < p.epochs:
            started = time.perf_counter()
            train_loss = self.train_epoch()
            val_probabilities, val_loss = self.evaluate(self.data.val)
            auc = macro_auc(self.data.val[list(PATTERNS)].to_numpy(dtype=float), val_probabilities)
            self.epoch += 1
            improved = val_loss < self.best_val_loss
            if improved:
                self.best_val_loss, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
            else:
                self.bad_epochs += 1
            seconds = time.perf_counter() - started
            self.history.append(
                {"epoch": self.epoch, "train_loss": train_loss, "val_loss": val_loss, "val_macro_auc": auc,
                 "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds}
            )
            self.training_done = self.bad_epochs >= p.patience or self.epoch >= p.epochs
            self.end_of_epoch(improved)
            summary = f"train_loss {train_loss:.4f}  val_loss {val_loss:.4f}  val_auc {auc:.3f}"
            if self.live:
                epochs.set_postfix_str(summary + ("  *" if improved else ""))
                epochs.update(1)
            elif self.dist.is_main:
                print(f"{p.name} epoch {self.epoch}/{p.epochs}  {summary}  {seconds:.1f}s" + ("  * best" if improved else ""), flush=True)
        epochs.close()
        if self.bad_epochs >= p.patience and self.dist.is_main:
            logger.info("early stop after epoch %d: no lower validation loss for %d epochs", self.epoch, p.patience)
        self.training_done = True

    def write_predictions(self) -> None:
        if not self.dist.is_main:
            return
        best = self.run_dir / "best.pt"
        if not best.is_file():
            raise LusvError(
                f"{self.run_dir}: no epoch reached a finite validation loss, so there is no best.pt; "
                "lower the learning rate or check the labels"
            )
        _unwrap(self.model).load_state_dict(io.torch_load(best, map_location=self.device))
        for role, table in self.data.roles().items():
            if role == "train":
                continue
            probabilities, _ = self.evaluate(table)
            io.write_csv(self.run_dir / f"predictions_{role}.csv", _predictions_table(table, probabilities, self.p.fold))


def _resolve_params(params: RunParams | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> RunParams:
    overrides = dict(overrides)
    profile = overrides.pop("profile", None)
    base = params.to_dict() if isinstance(params, RunParams) else dict(params or {})
    merged = {**base, **overrides}
    return params_for(profile, **merged) if profile is not None else RunParams.from_dict(merged)


def run(params: RunParams | Mapping[str, Any] | None = None, /, **overrides: Any) -> Path:
    """Train one model on one fold and write its run directory (see the module docstring).

    Call as ``run(**params_for("quick", labels=..., splits=...).to_dict())``, ``run(params)``
    with a ``RunParams``, or ``run(profile="quick", labels=..., ...)``; unset fields take the
    RunParams defaults (= paper profile). Returns the run directory.
    """
    p = _resolve_params(params, overrides)
    dist = _init_distributed()
    run_dir = Path(p.out_dir) / p.name

    saved = _read_config(run_dir) if p.resume else None
    if saved is not None:
        _check_same_run(p, saved.get("params", {}), run_dir)
        if saved.get("status") == "finished":
            logger.info("%s already finished: reusing it (resume=True)", run_dir)
            return run_dir
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not p.resume:
            _clear_previous(run_dir)
    dist.barrier()

    trainer = _Trainer(p, run_dir, dist)
    checkpoint = run_dir / "checkpoint.pt"
    if p.resume and checkpoint.is_file():
        trainer.restore(checkpoint)
    trainer.write_config("running")
    try:
        trainer.fit()
        trainer.write_predictions()
        trainer.write_config("finished", finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        dist.barrier()
    finally:
        if dist.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return run_dir
