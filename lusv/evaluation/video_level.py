"""Window-level and video-level evaluation: the paper scores 1-second windows, a reader a video.

The paper cuts each video into windows of 30 frames and reports its AUCs per window. A table of
window predictions carries ``video_id`` (the source video) beside ``clip_id`` (the window);
without that column each clip is its own video. ``video_predictions`` turns it into one row per
video: probability = the mean (or the max) of its windows' probabilities, label = 1 when any of
its windows is labelled positive (that is the video's label), NaN only when no window is
labelled. ``level_summaries`` reports both levels with CIs that resample PATIENTS
(``lusv.stats.bootstrap``): the windows of a video, and the videos of a patient, are not independent,
so no interval here treats them as if they were.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from lusv.data.patterns import DISPLAY_NAMES, PATTERNS
from lusv.errors import ConfigError, PredictionsError
from lusv.report.tables import format_auc_ci
from lusv.stats.metrics import prediction_arrays, summarize_predictions

AGGREGATIONS = ("mean", "max")
LEVELS = ("window", "video_mean", "video_max")
LEVEL_NAMES = {"window": "window (the paper's)", "video_mean": "video, mean of its windows",
               "video_max": "video, max of its windows"}
# Columns that are one value per video (a video lies in one fold, so one fold model scored it).
_PER_VIDEO = ("patient_id", "fold", "model_fold")


def video_ids(predictions: pd.DataFrame) -> pd.Series:
    """The source video of each row: ``video_id`` where present, else the clip itself."""
    column = "video_id" if "video_id" in predictions.columns else "clip_id"
    return predictions[column].astype(str)


def video_predictions(predictions: pd.DataFrame, how: str = "mean") -> pd.DataFrame:
    """One row per video, in order of first appearance: ``clip_id`` = ``video_id`` = the video,
    ``patient_id`` (and ``fold``, ``model_fold`` when present), ``n_windows``, ``p_<pattern>``
    = the ``how`` ("mean" or "max") of its windows' probabilities, ``<pattern>`` = 1 when any
    labelled window is positive, 0 when all labelled ones are negative, NaN when none is labelled.

    A video whose windows name two patients, or were scored by two fold models, is refused:
    it would mean the split cut through a video.
    """
    if how not in AGGREGATIONS:
        raise ConfigError(f"how={how!r}: a video's probability is the 'mean' or the 'max' of its windows'")
    prediction_arrays(predictions)  # names missing label / probability columns
    if "patient_id" not in predictions.columns:
        raise PredictionsError("predictions lack patient_id: video-level CIs resample patients")
    table = predictions.assign(video_id=video_ids(predictions))
    grouped = table.groupby("video_id", sort=False)
    kept = [column for column in _PER_VIDEO if column in table.columns]
    for column in kept:
        counts = grouped[column].nunique(dropna=False)
        split = counts.index[counts > 1].tolist()
        if split:
            raise PredictionsError(f"video(s) {split[:5]} have windows with more than one {column}: "
                                   "the windows of a video must stay together in one patient and fold")
    out = grouped[kept].first()
    out.insert(0, "n_windows", grouped.size())
    for pattern in PATTERNS:
        out[f"p_{pattern}"] = grouped[f"p_{pattern}"].agg(how)
        out[pattern] = grouped[pattern].max()  # NaN-skipping: any labelled positive window makes it 1
    out = out.reset_index()
    out.insert(0, "clip_id", out["video_id"])
    return out[["clip_id", "video_id", *kept, "n_windows", *(f"p_{p}" for p in PATTERNS), *PATTERNS]]


def level_summaries(predictions: Mapping[str, pd.DataFrame], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Window- and video-level AUCs of every model: a long table ``model, level, n_units`` +
    the columns of ``lusv.stats.metrics.summarize_predictions`` (pattern, auc, ci_low, ci_high, ...).

    Levels: ``window`` (each row as predicted, the paper's unit), ``video_mean`` and
    ``video_max`` (``video_predictions``). Every CI, per pattern too, is the patient bootstrap
    (same seed at each level), so the intervals of the levels are made the same way."""
    parts = []
    for model, windows in predictions.items():
        units = {"window": windows, "video_mean": video_predictions(windows, "mean"),
                 "video_max": video_predictions(windows, "max")}
        for level, table in units.items():
            summary = summarize_predictions(table, ci="bootstrap", n_boot=n_boot, seed=seed)
            parts.append(summary.assign(model=model, level=level, n_units=len(table)))
    long = pd.concat(parts, ignore_index=True)
    return long[["model", "level", "n_units", *(c for c in long.columns if c not in ("model", "level", "n_units"))]]


def level_table(summaries: pd.DataFrame, levels: Sequence[str] = ("window", "video_mean")) -> pd.DataFrame:
    """For reading: one row per (model, level) of ``levels``, the number of windows or videos,
    and one 'AUC (CI low–high)' cell per pattern, Macro and Micro (study keys in ``Model``,
    for ``lusv.report.names.readable``)."""
    unknown = [level for level in levels if level not in LEVELS]
    if unknown:
        raise ConfigError(f"unknown level(s) {unknown}; use {', '.join(LEVELS)}")
    chosen = summaries[summaries["level"].isin(levels)]
    cells = chosen.assign(cell=[format_auc_ci(a, lo, hi) for a, lo, hi in chosen[["auc", "ci_low", "ci_high"]]
                                .itertuples(index=False)])
    wide = cells.pivot(index=["model", "level", "n_units"], columns="pattern", values="cell")
    models = list(dict.fromkeys(summaries["model"]))
    order = sorted(wide.index, key=lambda index: (models.index(index[0]), list(levels).index(index[1])))
    wide = wide.loc[order, [*PATTERNS, "macro", "micro"]]
    wide = wide.rename(columns={**DISPLAY_NAMES, "macro": "Macro", "micro": "Micro"}).reset_index()
    wide = wide.rename(columns={"model": "Model", "level": "Level", "n_units": "windows / videos"})
    wide["Level"] = wide["Level"].map(LEVEL_NAMES)
    return wide.rename_axis(columns=None)
