"""External validation: a finished study's fold models judge another labelled dataset.

``external_validation(study_dir, data, data_path)`` reads a dataset through its source
(``lusv.data.sources``: a folder with a labels CSV, POCUS, ...), decodes its clips at the study's
frames and size into that dataset's own clip cache (the ingestion report says what was used and
what skipped, and why), and predicts every clip with each model configuration of the study
that has fold models (``runs/<key>-fold<f>``): the probability of a pattern is the mean of the
fold models' probabilities. Models trained on frozen features (``train_encoder=False``) predict
from the dataset's feature cache, built once and shared by their folds. A study trained on
windows (``clip_policy="windows"``, ``lusv.data.windows``) sees the dataset as it saw its own videos:
each video cached whole and cut into the same windows, every window predicted, and a video's
probability the mean of its windows' (as ``lusv predict`` and the study's video-level AUCs).
A study with a linear probe (``oof/linear_probe.*``, the pretrained profile's reference row) has it
validated too: its fold regressions are refitted from the study's folds and features
(``lusv.evaluation.linear_probe.external_probe``), so "does LUV-Net transfer better than a linear
probe?" has an answer (``lusv claims``).

Per model and pattern it reports the AUC with its DeLong 95% CI on the clips that label the
pattern, and the sensitivity and specificity at the Youden threshold chosen on the study's pooled
validation predictions (``oof/<key>.val.csv``; under windows, its videos' mean of windows, the
scores the threshold is then applied to): thresholds are carried over, never tuned on the
external data. A pattern the dataset does not label (its column empty) or labels with one class
only gets no AUC (NaN, the ``note`` says why), never a zero. Leave a pattern's column empty in
the labels CSV when the dataset does not label it.

Written under ``out_dir`` (default ``<study>/external/<dataset name>/``): ``predictions_<key>.csv``
(clip_id, patient_id, p_<pattern>..., <pattern>... labels; under windows also n_windows, and
``predictions_<key>.windows.csv`` per window), ``external_auc.csv``, ``ingest_report.csv``
(+ ``_summary``) and ``external.json`` (what was validated, and every model left out with why).

Never a mixed or unfinished result: only models whose every fold run finished are used (a run
still running, interrupted or failed is named with its reason, ``fold_models``; asked for by name
it is refused); the result is written into a staging folder that replaces ``out_dir`` as a whole
(``lusv.infra.folders``) under a lock, so an error or a kill leaves the previous result untouched.
When no clip of the dataset is usable the ingestion report goes beside it,
``<out_dir>.ingest_report.csv``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lusv.data.features import run_feature_cache
from lusv.data.patterns import PATTERNS
from lusv.data.prepared import dataset_name, ingest, Prepared
from lusv.data.windows import WindowedClips, windows_of_cache
from lusv.errors import ConfigError, IngestError, LusvError
from lusv.evaluation.linear_probe import external_probe, KEY as PROBE
from lusv.evaluation.out_of_fold import ensemble_mean, oof_mismatch
from lusv.evaluation.video_level import video_predictions
from lusv.inference import load_trained, predict_batches
from lusv.infra.devices import Distributed
from lusv.infra.folders import replaced_folder
from lusv.infra.io import read_table, write_csv
from lusv.infra.runlock import folder_lock
from lusv.paths import in_repository
from lusv.stats.metrics import delong_ci, sensitivity_specificity, youden_threshold
from lusv.train import eval_loader, unfinished_reason

log = logging.getLogger(__name__)

RESULT_COLUMNS = ("model", "pattern", "n_labelled", "n_pos", "n_neg", "auc", "ci_low", "ci_high", "threshold",
                  "sensitivity", "specificity", "note")


@dataclass
class ExternalResults:
    table: pd.DataFrame  # RESULT_COLUMNS, one row per (model, pattern)
    predictions: dict[str, pd.DataFrame]  # by model key
    ingest_summary: pd.DataFrame
    out_dir: Path


def fold_run_dirs(study_dir: Path, num_folds: int) -> dict[str, list[Path]]:
    """Model keys of the study whose every fold has a finished run, with those run folders."""
    return fold_models(study_dir, num_folds)[0]


def fold_models(study_dir: Path, num_folds: int) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """(The models whose every fold run finished, with their run folders; every other model of the
    study with why it cannot be used: a fold run missing, still running, interrupted or failed
    (``lusv.train.unfinished_reason``), or validation predictions missing or no longer those of its runs)."""
    runs = study_dir / "runs"
    named = {path.name[: -len(".val.csv")] for path in (study_dir / "oof").glob("*.val.csv")}
    named |= {path.name.rsplit("-fold", 1)[0] for path in runs.glob("*-fold*") if path.is_dir()}
    available, left_out = {}, {}
    for key in sorted(named):
        if key == PROBE:  # refitted from the study's folds and features (external_probe): no run folders
            available[key] = []
            continue
        dirs = [runs / f"{key}-fold{fold}" for fold in range(num_folds)]
        reasons = [f"fold {fold} {why}" for fold, d in enumerate(dirs) if (why := unfinished_reason(d))]
        validation = study_dir / "oof" / f"{key}.val.csv"
        if reasons:
            left_out[key] = "; ".join(reasons)
        elif not validation.is_file():
            left_out[key] = f"no {validation.relative_to(study_dir)} (its thresholds): rerun the study's training step"
        elif why := oof_mismatch(study_dir, key, "val", read_table(validation)):
            left_out[key] = f"{validation.relative_to(study_dir)} no longer matches its runs: {why}"
        else:
            available[key] = dirs
    return available, left_out


def predict_with_folds(run_dirs: list[Path], cache, table: pd.DataFrame) -> pd.DataFrame:
    """The fold ensemble's predictions (``ensemble_mean``) on the clips of ``table``: its id
    columns, then the mean over the fold models of ``run_dirs`` of each ``p_<pattern>``."""
    device = torch.device("cpu")
    ids = [c for c in ("clip_id", "video_id", "patient_id") if c in table]
    per_model = []
    for run_dir in run_dirs:
        model = load_trained(run_dir, device)
        p = model.run_params
        source = cache
        if not p.train_encoder:  # the heads on cached features; the fold models share the frozen encoder
            source = run_feature_cache(p, cache, model.encoder)
            source.build(table["clip_id"], views=0, progress=False)
        probabilities, *_ = predict_batches(model, eval_loader(p, source, table, Distributed(), device), device)
        frame = table[ids].copy()
        for i, pattern in enumerate(PATTERNS):
            frame[f"p_{pattern}"] = probabilities[:, i].astype(np.float64)
        per_model.append(frame)
    return ensemble_mean(per_model)


def clips_to_score(prepared, cache, videos: pd.DataFrame):
    """(what the fold models read, the rows they score): the clips themselves, or under the
    study's windows policy every video's windows (ids ``<video>_w<i>``, labelled as their video)."""
    if prepared.clip_policy != "windows":
        return cache, videos

    windows = windows_of_cache(cache, videos, prepared.num_frames, prepared.window_overlap)
    return WindowedClips(cache, windows, prepared.num_frames), windows


def pattern_rows(key: str, predictions: pd.DataFrame, validation: pd.DataFrame) -> list[dict]:
    """One result row per pattern (see the module docstring)."""
    rows = []
    for pattern in PATTERNS:
        y = predictions[pattern].to_numpy(float)
        score = predictions[f"p_{pattern}"].to_numpy(float)
        labelled = ~np.isnan(y)
        n_pos, n_neg = int((y[labelled] == 1).sum()), int((y[labelled] == 0).sum())
        row = {"model": key, "pattern": pattern, "n_labelled": int(labelled.sum()), "n_pos": n_pos, "n_neg": n_neg,
               "auc": np.nan, "ci_low": np.nan, "ci_high": np.nan, "threshold": np.nan,
               "sensitivity": np.nan, "specificity": np.nan, "note": ""}
        row["threshold"] = youden_threshold(validation[pattern].to_numpy(float), validation[f"p_{pattern}"].to_numpy(float))
        if not labelled.any():
            row["note"] = "not labelled in this dataset"
        elif n_pos == 0 or n_neg == 0:
            row["note"] = f"one class only ({n_pos} positive, {n_neg} negative): no AUC"
        else:
            row["auc"], row["ci_low"], row["ci_high"] = delong_ci(y, score)
        if labelled.any() and np.isfinite(row["threshold"]):
            counts = sensitivity_specificity(y, score, row["threshold"])
            row["sensitivity"], row["specificity"] = counts.sensitivity, counts.specificity
        rows.append(row)
    return rows


def external_validation(
    study_dir: str | Path, data: str = "folder", data_path: str | Path | None = None, keys: list[str] | None = None,
    out_dir: str | Path | None = None, cache_root: str | Path | None = None, dayfirst: bool = False,
) -> ExternalResults:
    """Predict another labelled dataset with a study's fold models; see the module docstring."""
    study_dir = in_repository(study_dir)
    prepared = Prepared.load(study_dir)
    available, left_out = fold_models(study_dir, prepared.num_folds)
    keys = _usable_keys(study_dir, keys, available, left_out)
    name = dataset_name(data, data_path)
    out_dir = Path(out_dir) if out_dir is not None else study_dir / "external" / name
    # The result is written aside and replaces the previous one as a whole: an error, a kill or a
    # second run at the same time never leaves a mix of two runs' files.
    with folder_lock(out_dir), replaced_folder(out_dir) as staging:
        try:
            ingested = ingest(data, data_path, prepared, staging / "ingest_report.csv", dayfirst=dayfirst,
                              cache_root=cache_root)
        except IngestError as exc:  # no result at all: the per-clip reasons go beside the previous result
            kept = shutil.copyfile(exc.report_path, out_dir.parent / f"{out_dir.name}.ingest_report.csv")
            raise IngestError(str(exc), exc.report, report_path=kept) from None
        table, predictions, results = _score(study_dir, prepared, ingested, keys, available, staging, name)
        (staging / "external.json").write_text(json.dumps(
            {"study": str(study_dir), "data": data, "data_path": str(data_path), "dataset": name, "models": keys,
             "clips": len(table), "fold_models": {key: [str(d) for d in available[key]] for key in keys},
             "left_out": {key: reason for key, reason in left_out.items()}}, indent=2))
    return ExternalResults(results, predictions, ingested.report.summary(), out_dir)


def _usable_keys(study_dir: Path, keys: list[str] | None, available: dict, left_out: dict[str, str]) -> list[str]:
    """The models to validate: those asked for, every one of them usable (else ConfigError naming
    each with its reason), or by default every usable one, each left out named in a warning."""
    if keys is None:
        for key, reason in left_out.items():
            log.warning("external validation leaves out %s: %s", key, reason)
        keys = list(available)
    unusable = {key: left_out.get(key, "no such model in the study") for key in keys if key not in available}
    if not keys or unusable:
        named = "; ".join(f"{key}: {reason}" for key, reason in (unusable or left_out).items())
        raise ConfigError(f"{study_dir}: no finished fold models for {list(unusable) or 'any model'}"
                          f"{f' ({named})' if named else ''} (models with every fold: {', '.join(available) or 'none'}); "
                          "train the study first")
    return keys


def _score(study_dir: Path, prepared, ingested, keys: list[str], available: dict, out_dir: Path, name: str):
    """(the usable clips, predictions by model, the AUC table), written under ``out_dir``."""
    cache, table = ingested.cache, ingested.usable
    if table[list(PATTERNS)].isna().all().all():
        raise LusvError(f"{name}: none of its {len(table)} usable clip(s) labels any pattern: nothing to validate")
    source, scored = clips_to_score(prepared, cache, table)
    windowed = source is not cache
    rows, predictions = [], {}
    for key in keys:
        frame = external_probe(prepared, source, scored) if key == PROBE else predict_with_folds(available[key], source, scored)
        for pattern in PATTERNS:
            frame[pattern] = scored[pattern].to_numpy(float)
        validation = read_table(study_dir / "oof" / f"{key}.val.csv")
        if windowed:
            write_csv(out_dir / f"predictions_{key}.windows.csv", frame)
            frame = video_predictions(frame, "mean").drop(columns="video_id")
            validation = video_predictions(validation, "mean")
        predictions[key] = frame
        write_csv(out_dir / f"predictions_{key}.csv", frame)
        rows += pattern_rows(key, frame, validation)
    results = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    write_csv(out_dir / "external_auc.csv", results)
    return table, predictions, results
