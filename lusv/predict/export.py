"""``lusv export``: one model configuration of a finished study as one self-contained folder.

``export_study(study_dir, key, out)`` writes the layout of ``lusv.predict.exported`` (config.json,
thresholds.json, README.md, weights/fold<f>.safetensors, manifest.json) so that the folder can
be copied, archived or uploaded to a model hub as it is, and ``lusv predict --model`` runs it.

* **Weights**: each fold model's ``best.pt`` (read with ``weights_only=True``) rewritten as
  safetensors; no file of an export is a pickle.
* **config.json**: the fold models' run parameters without the study's local paths (what
  ``lusv.inference.build_run_model`` rebuilds the models from), and in words what the input
  must be: frames, size, crop rule, clip policy and window settings, gray conversion,
  normalisation, the feature dtype of frozen-encoder heads; the encoder and its weights source;
  the lusv version, the export format and the study's git commit (from the runs' config.json).
* **thresholds.json**: per pattern, the Youden threshold chosen on the pooled validation
  predictions of all fold models (``oof/<key>.val.csv``), the rule the study applies to its fold
  ensemble on the held-out and temporally separated sets (``lusv.report.tables.threshold_table``).
  Under the windows policy the threshold is chosen on each validation video's mean of windows
  (the unit ``lusv predict`` calls; as ``lusv.evaluation.external``), and the per-window one is kept too.
* **README.md**: the model card (``lusv.predict.model_card``), numbers read from the study's tables.

The folder is written beside ``out`` under a temporary name and renamed into place when complete,
so a failed export leaves no half folder; an existing export at ``out`` is replaced, any other
non-empty folder is refused.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

import lusv
from lusv.config import field_names, path_fields, RunParams
from lusv.data.patterns import IMAGENET_MEAN, IMAGENET_STD, PATTERNS
from lusv.data.prepared import Prepared
from lusv.data.video import CROP_MIN_BLOB_FRACTION, CROP_THRESHOLD, PREPARATION_VERSION
from lusv.errors import ConfigError
from lusv.evaluation.video_level import video_predictions
from lusv.inference import model_config
from lusv.infra import io
from lusv.paths import in_repository
from lusv.predict.exported import (CARD, CONFIG, EXPORT_FORMAT, FROZEN_FEATURE_DTYPE, MANIFEST, THRESHOLDS,
                                   WEIGHTS_DIR, sha256_file)
from lusv.predict.model_card import model_card
from lusv.report.names import model_name
from lusv.stats.metrics import youden_threshold

log = logging.getLogger(__name__)

THRESHOLD_RULE = ("Youden's J (sensitivity + specificity - 1) maximised over the observed scores; a video is called "
                  "positive for a pattern when its probability >= the threshold (ties in J go to the higher threshold)")


def fold_runs(study_dir: Path, key: str, num_folds: int) -> list[Path]:
    """``runs/<key>-fold<f>`` of every fold, each finished (config.json, best.pt); else ConfigError."""
    runs = [study_dir / "runs" / f"{key}-fold{fold}" for fold in range(num_folds)]
    missing = [run.name for run in runs if not ((run / "best.pt").is_file() and (run / "config.json").is_file())]
    if missing:
        trained = sorted({run.name.rsplit("-fold", 1)[0] for run in (study_dir / "runs").glob("*-fold*")})
        raise ConfigError(f"{study_dir}: no finished fold model(s) {', '.join(missing)} (best.pt + config.json); "
                          f"train all {num_folds} folds of {key!r} first (models with runs: {', '.join(trained) or 'none'})")
    return runs


def ensemble_thresholds(validation: pd.DataFrame, windows: bool) -> dict:
    """thresholds.json's content from the pooled validation predictions of all fold models."""
    videos = video_predictions(validation, "mean") if windows else validation

    def chosen(table: pd.DataFrame) -> dict[str, float | None]:
        values = {p: youden_threshold(table[p].to_numpy(float), table[f"p_{p}"].to_numpy(float)) for p in PATTERNS}
        return {p: (None if pd.isna(v) else float(v)) for p, v in values.items()}

    folds = sorted(validation["model_fold"].unique().tolist()) if "model_fold" in validation else []
    record = {
        "rule": THRESHOLD_RULE,
        "chosen_on": (f"the validation predictions of all {len(folds)} fold models pooled (each development "
                      "video predicted once, by the fold model whose validation fold held it); the rule of the "
                      "study's fold ensemble on its held-out and temporally separated sets"),
        "unit": "video, the mean of its windows' probabilities" if windows else "video (one clip per video)",
        "videos": int(len(videos)),
        "labelled_positive": {p: int((videos[p] == 1).sum()) for p in PATTERNS},
        "labelled_negative": {p: int((videos[p] == 0).sum()) for p in PATTERNS},
        "thresholds": chosen(videos),
        "note": "null: the validation predictions hold one class only for that pattern, so no call is made",
    }
    if windows:
        record["window_thresholds"] = chosen(validation)
        record["window_unit"] = "window (the study's unit; --per-window rows are called with these)"
    return record


def export_config(prepared: Prepared, key: str, runs: list[Path]) -> dict:
    """config.json's content (see the module docstring)."""
    records = [json.loads((run / "config.json").read_text(encoding="utf-8")) for run in runs]
    params = RunParams.from_dict(records[0]["params"])
    defaults = RunParams()
    portable = {**params.to_dict(), **{name: getattr(defaults, name) for name in path_fields()}, "fold": 0}
    commits = sorted({str(r.get("git_sha")) for r in records})
    return {
        "format": EXPORT_FORMAT,
        "lusv_version": lusv.__version__,
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "key": key,
        # a key the reader knows by name (LUV-Net, USVN, a sweep point), else the architecture's name and the key
        "model_name": model_name(key) if model_name(key) != key else f"{model_name(params.model)} ({key})",
        "architecture": {"model": params.model, "options": model_config(params)},
        "encoder": {"name": params.encoder, "weights_source": records[0].get("weights_source"),
                    "trained": "end to end" if params.train_encoder else "frozen (only the heads were trained)"},
        "input": {
            "clip_policy": params.clip_policy, "num_frames": params.num_frames, "image_size": params.image_size,
            "window_overlap": params.window_overlap if params.clip_policy == "windows" else None,
            "target_fps": params.target_fps,
            "sampling": ("every video cut into windows of num_frames frames overlapping by window_overlap, the last "
                         "aligned to the video's end (lusv.data.windows)" if params.clip_policy == "windows" else
                         "num_frames frames spread evenly over the video (np.linspace, rounded); shorter videos "
                         "zero-padded (lusv.data.video.prepare_clip)"),
            "gray": "ITU-R 601 luma of the decoded RGB frames",
            "crop": {"rule": "bounding box of the blobs of max-over-frames gray > threshold that are at least "
                             "min_blob_fraction of the largest, padded to a centred square, resized (bilinear, antialias)",
                     "threshold": CROP_THRESHOLD, "min_blob_fraction": CROP_MIN_BLOB_FRACTION},
            "normalisation": {"scale": "gray / 255, repeated to 3 channels", "mean": list(IMAGENET_MEAN),
                              "std": list(IMAGENET_STD)},
            "frozen_feature_dtype": None if params.train_encoder else FROZEN_FEATURE_DTYPE,
            "preparation_version": PREPARATION_VERSION,
        },
        "patterns": list(PATTERNS),
        "run_params": {name: portable[name] for name in field_names()},
        "folds": [{"fold": int(r["params"]["fold"]), "file": f"{WEIGHTS_DIR}/fold{int(r['params']['fold'])}.safetensors",
                   "best_epoch": r.get("best_epoch"), "best_val_loss": r.get("best_val_loss"),
                   "clips": r.get("clips")} for r in records],
        "study": {"folder": str(prepared.run_dir), "profile": prepared.profile, "data": prepared.data,
                  "dataset": prepared.dataset, "num_folds": prepared.num_folds,
                  "git_commit": commits[0] if len(commits) == 1 else commits,
                  "git_dirty": any(bool(r.get("git_dirty")) for r in records),
                  "versions": records[0].get("versions")},
    }


def export_study(study_dir: str | os.PathLike, key: str = "luvnet", out: str | os.PathLike | None = None) -> Path:
    """Write the export of ``key``'s fold models of the study at ``study_dir`` to ``out``
    (default ``<study>/export/<key>``) and return it; see the module docstring."""
    study_dir = in_repository(study_dir)
    prepared = Prepared.load(study_dir)
    runs = fold_runs(study_dir, key, prepared.num_folds)
    validation_csv = study_dir / "oof" / f"{key}.val.csv"
    if not validation_csv.is_file():
        raise ConfigError(f"{validation_csv} is missing: the thresholds are chosen on it; finish training {key!r} "
                          "(study.train_folds writes it)")
    out = Path(out) if out is not None else study_dir / "export" / key
    _check_target(out)
    config = export_config(prepared, key, runs)
    thresholds = ensemble_thresholds(io.read_table(validation_csv), config["input"]["clip_policy"] == "windows")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; an export is meant to be shared
    try:
        _write_weights(staging, runs, config)
        io.write_json(staging / CONFIG, config)
        io.write_json(staging / THRESHOLDS, thresholds)
        io.write_text(staging / CARD, model_card(prepared, key, config, thresholds))
        io.write_json(staging / MANIFEST, manifest(staging))
        _replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %s (%d fold models) to %s", key, len(runs), out)
    return out


def manifest(folder: Path) -> dict:
    """SHA-256 and size of every file under ``folder`` (but the manifest itself), by relative path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {"format": EXPORT_FORMAT, "algorithm": "sha256",
            "files": {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                      for p in files}}


def _write_weights(folder: Path, runs: list[Path], config: dict) -> None:
    from safetensors.torch import save_file

    for run, fold in zip(runs, config["folds"]):
        state = io.torch_load(run / "best.pt")  # weights_only=True, CRC-checked, finite
        tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state.items()}
        target = folder / fold["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        with io.atomic_path(target) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", "lusv_key": config["key"], "fold": str(fold["fold"])})


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: name a folder for the export")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ConfigError(f"--out {out} is a non-empty folder that holds no lusv export: choose a new folder")


def _replace(staging: Path, out: Path) -> None:
    """Move the finished export into place; an earlier export there is removed only afterwards."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
