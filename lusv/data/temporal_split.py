"""The temporally separated test set: patients first seen on or after a cutoff date.

The paper validates on a later year as well as by cross-validation. A patient belongs to the
side of their FIRST acquisition date, so the temporal test set holds new patients only (as in a
prospective validation) and no patient is on both sides (``lusv.data.splits.assert_no_patient_overlap``
checks it). The split is saved beside a record of the parameters and dates that made it and
reused while they still match (``lusv.data.splits.saved_split_matches``, ``lusv.infra.io.recorded_mismatch``).
Table: ``clip_id, patient_id, split`` with ``split`` in (``development``, ``temporal_test``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from lusv.data.splits import (
    assert_no_patient_overlap,
    check_label_columns,
    DEVELOPMENT,
    fingerprint,
    saved_split_matches,
)
from lusv.errors import ConfigError, LabelsError, name_a_few
from lusv.infra.io import read_record, write_csv, write_record

logger = logging.getLogger(__name__)

TEMPORAL_TEST = "temporal_test"
TEMPORAL_METHOD = "first-acquisition-per-patient/v1"


def _acquisition_dates(labels_df: pd.DataFrame) -> pd.Series:
    if "acquired_on" not in labels_df.columns:
        raise LabelsError(
            "labels table lacks column 'acquired_on', which the temporal split needs: "
            "add acquisition dates to the labels CSV or use K-fold splits only"
        )
    dates = pd.to_datetime(labels_df["acquired_on"], errors="coerce")
    if dates.isna().any():
        missing = labels_df.loc[dates.isna(), "clip_id"].tolist()
        raise LabelsError(
            f"{len(missing)} clip(s) have no valid 'acquired_on' date: {name_a_few(missing)}; "
            "fill in the dates or drop these clips before a temporal split"
        )
    return dates


def temporal_split_unavailable(labels_df: pd.DataFrame) -> str | None:
    """Why the clips cannot be split by date (None when they can): dates missing, or every
    patient first seen on the same date (a dataset published in one batch)."""
    if "acquired_on" not in labels_df.columns or labels_df["acquired_on"].isna().any():
        return "not every clip has acquired_on"
    first_seen = pd.to_datetime(labels_df["acquired_on"]).groupby(labels_df["patient_id"]).min()
    if first_seen.nunique() < 2:
        return f"all patients were first seen on the same date ({first_seen.iloc[0].date()})"
    return None


def _as_date(cutoff: str | pd.Timestamp) -> pd.Timestamp:
    try:
        return pd.Timestamp(cutoff)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cutoff={cutoff!r} is not a date (use e.g. '2021-06-01'): {exc}") from None


def _choose_cutoff(first_dates: pd.Series, clips_per_patient: pd.Series, test_fraction: float) -> pd.Timestamp:
    """The patient-first-date cutoff whose test share of clips is closest to ``test_fraction``."""
    per_date = clips_per_patient.groupby(first_dates).sum().sort_index()
    # Clips in temporal_test if the cutoff is each candidate date: all patients first seen then or later.
    clips_from_date = per_date[::-1].cumsum()[::-1]
    share = clips_from_date / clips_per_patient.sum()
    candidates = share[share < 1.0]  # the earliest date would leave development empty
    if candidates.empty:
        raise ConfigError(
            "all patients were first seen on the same date: a temporal split needs at least two "
            "acquisition dates"
        )
    return pd.Timestamp((candidates - test_fraction).abs().idxmin())


def temporal_split(
    labels_df: pd.DataFrame,
    cutoff: str | pd.Timestamp | None = None,
    test_fraction: float = 0.2,
) -> pd.DataFrame:
    """Split clips into ``development`` and a later ``temporal_test`` set by acquisition date.

    Rule for patients whose clips straddle the cutoff: a patient belongs to the side of their
    FIRST acquisition date — patients first seen on or after ``cutoff`` form ``temporal_test``
    (new patients only, as in a prospective validation); everyone first seen before stays in
    ``development`` with all their clips. So every temporal_test clip is dated >= cutoff and
    no patient is on both sides.

    When ``cutoff`` is None it is chosen among the patients' first dates so that about
    ``test_fraction`` of the clips land in temporal_test. The cutoff used is in
    ``result.attrs["cutoff"]``. Returns ``DataFrame(clip_id, patient_id, split)`` in row order.
    """
    check_label_columns(labels_df, ("clip_id", "patient_id"))
    if not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"test_fraction={test_fraction} must be between 0 and 1 (exclusive)")
    dates = _acquisition_dates(labels_df)
    patients = labels_df["patient_id"]
    first_seen = dates.groupby(patients).transform("min")
    if cutoff is None:
        per_patient_first = dates.groupby(patients).min()
        cutoff_ts = _choose_cutoff(per_patient_first, patients.value_counts(), float(test_fraction))
    else:
        cutoff_ts = _as_date(cutoff)

    in_test = (first_seen >= cutoff_ts).to_numpy()
    if in_test.all() or not in_test.any():
        side = "temporal_test" if not in_test.any() else "development"
        raise ConfigError(
            f"cutoff {cutoff_ts.date()} leaves {side} empty (dates run from {dates.min().date()} "
            f"to {dates.max().date()}): choose a cutoff inside that range"
        )
    split = pd.DataFrame(
        {
            "clip_id": labels_df["clip_id"].to_numpy(),
            "patient_id": patients.to_numpy(),
            "split": np.where(in_test, TEMPORAL_TEST, DEVELOPMENT),
        }
    )
    assert_no_patient_overlap(
        split[split["split"] == DEVELOPMENT], split[split["split"] == TEMPORAL_TEST],
        names=(DEVELOPMENT, TEMPORAL_TEST),
    )
    straddling = int(((dates >= cutoff_ts) & ~pd.Series(in_test, index=dates.index)).sum())
    split.attrs["cutoff"] = cutoff_ts.isoformat()
    logger.info(
        "temporal split at %s: %d development / %d temporal_test clips (%d post-cutoff clips of "
        "patients first seen earlier kept in development)",
        cutoff_ts.date(), int((~in_test).sum()), int(in_test.sum()), straddling,
    )
    return split


def load_or_make_temporal_split(
    labels_df: pd.DataFrame,
    path: str | os.PathLike,
    cutoff: str | pd.Timestamp | None = None,
    test_fraction: float = 0.2,
) -> pd.DataFrame:
    """Like ``load_or_make_folds`` for ``temporal_split``; the params also hash the dates.

    The cutoff actually used is saved in the JSON and restored in ``result.attrs["cutoff"]``.
    """
    path = Path(path)
    columns = ("clip_id", "patient_id", "acquired_on") if "acquired_on" in labels_df else ("clip_id", "patient_id")
    params = {
        "kind": "temporal",
        "method": TEMPORAL_METHOD,
        "cutoff": None if cutoff is None else _as_date(cutoff).isoformat(),
        "test_fraction": float(test_fraction),
        "n_clips": int(len(labels_df)),
        "clips_patients_dates_sha1": fingerprint(labels_df, columns),
    }
    saved, reason = saved_split_matches(path, params, labels_df)
    if saved is not None:
        assert_no_patient_overlap(
            saved[saved["split"] == DEVELOPMENT], saved[saved["split"] == TEMPORAL_TEST],
            names=(DEVELOPMENT, TEMPORAL_TEST),
        )
        saved.attrs["cutoff"] = read_record(path.with_suffix(".json")).get("cutoff_used")
        logger.info("reusing temporal split saved at %s", path)
        return saved
    logger.info("making temporal split at %s: %s", path, reason)
    split = temporal_split(labels_df, cutoff=cutoff, test_fraction=test_fraction)
    write_csv(path, split)
    write_record(path.with_suffix(".json"), {**params, "cutoff_used": split.attrs["cutoff"]})
    return split


def set_apart_temporal_test(usable: pd.DataFrame, path: str | os.PathLike, test_fraction: float, name: str,
                            asked: bool = True) -> tuple[Path | None, pd.DataFrame]:
    """The prepare step's temporal split: (its file, or None without one; the clips left for
    the development set).

    Without one (not asked for, fraction 0, missing dates or a single date) the split files of
    an earlier prepare are removed: they must not mislead a later step.
    """
    path = Path(path)
    why_not = temporal_split_unavailable(usable) if test_fraction > 0 else "not asked for"
    if why_not is None:
        temporal = load_or_make_temporal_split(usable, path, test_fraction=test_fraction)
        development_ids = set(temporal.loc[temporal["split"] == DEVELOPMENT, "clip_id"])
        return path, usable[usable["clip_id"].isin(development_ids)].reset_index(drop=True)
    for stale in (path, path.with_suffix(".json")):
        stale.unlink(missing_ok=True)
    if asked and test_fraction > 0:
        logger.warning("%s: %s, so there is no temporally separated test set", name, why_not)
    return None, usable
