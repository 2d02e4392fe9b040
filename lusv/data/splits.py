"""Patient-level splits: multi-label stratified K folds, leakage checks, saved splits reused.

Clips of one patient are never on two sides of a split: a model that has seen a patient's
lung in training would otherwise be tested on the same lung. Every function here either
builds splits that respect this or checks it and raises ``LeakageError`` naming the patient.

Split tables follow the contract: ``clip_id, patient_id, fold`` for K folds and
``clip_id, patient_id, split`` for a test set set apart before the folds: ``development`` /
``held_out`` for the held-out test set (about 10% of the patients, stratified like the folds;
``held_out_split``) and ``development`` / ``temporal_test`` for the temporal split
(``lusv.data.temporal_split``, which reuses this module's checks and saved-split mechanism).
They are saved next to a JSON file of the parameters that made them, so that a rerun with
the same labels and parameters reuses exactly the same split (``lusv.infra.io.recorded_mismatch``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from lusv.data.patterns import PATTERNS
from lusv.errors import ConfigError, LabelsError, LeakageError, name_a_few, TooFewPatientsError
from lusv.infra.io import read_record, read_table, recorded_mismatch, write_csv, write_record

logger = logging.getLogger(__name__)

RARE_CLASS = "rare"
DEVELOPMENT = "development"
HELD_OUT = "held_out"
HELD_OUT_METHOD = "one-of-round(1/fraction)-stratified-patient-groups/v1"
# Bumped whenever the fold algorithm changes, so saved splits made by an older one are remade.
FOLD_METHOD = "StratifiedGroupKFold/label-powerset/v1"
_MAX_NAMED = 10


# ----------------------------------------------------------------------------- checks


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LabelsError(
            f"{what} lacks column(s) {missing} (needed: {list(columns)}); "
            "read it with lusv.data.labels.read_labels or add the columns"
        )


def check_label_columns(labels_df: pd.DataFrame, columns: Sequence[str]) -> None:
    _require_columns(labels_df, columns, "labels table")
    if labels_df["clip_id"].duplicated().any():
        dups = labels_df.loc[labels_df["clip_id"].duplicated(), "clip_id"].unique()[:_MAX_NAMED]
        raise LabelsError(f"labels table has duplicate clip_id(s) {list(dups)}: clip ids must be unique")
    if labels_df["patient_id"].isna().any():
        rows = labels_df.loc[labels_df["patient_id"].isna(), "clip_id"].head(_MAX_NAMED).tolist()
        raise LabelsError(
            f"labels table has clips without patient_id {rows}: every clip needs a patient "
            "so that no patient ends up in two folds"
        )


def assert_no_patient_overlap(
    left_df: pd.DataFrame,
    right_df: pd.DataFrame,
    names: tuple[str, str] = ("train", "validation"),
) -> None:
    """Raise ``LeakageError`` if any ``patient_id`` occurs in both tables.

    The message names the shared patient(s) (the first ten) and the two sides, e.g.
    ``patient(s) 'P07' appear in both train and validation``.
    """
    shared = sorted(set(left_df["patient_id"].astype(str)) & set(right_df["patient_id"].astype(str)))
    if shared:
        raise LeakageError(
            f"patient(s) {name_a_few(shared)} appear in both {names[0]} and {names[1]} "
            f"({len(shared)} shared): a patient's clips must all be on one side of a split; "
            "rebuild the split with lusv.data.splits.make_folds / temporal_split"
        )


def _assert_one_fold_per_patient(folds_df: pd.DataFrame) -> None:
    folds_per_patient = folds_df.groupby("patient_id")["fold"].nunique()
    leaking = folds_per_patient.index[folds_per_patient > 1].tolist()
    if leaking:
        raise LeakageError(
            f"patient(s) {name_a_few(leaking)} have clips in more than one fold: "
            "folds must be made per patient (lusv.data.splits.make_folds)"
        )


# ----------------------------------------------------------------------------- K folds


def _powerset_classes(labels_df: pd.DataFrame, num_folds: int) -> np.ndarray:
    """One stratification class per clip: its 4 labels as a bit string ('?' = missing label).

    Combinations with fewer than ``num_folds`` clips cannot be spread over all folds, so they
    are merged into one fallback class; if even that is too small it joins the largest class.
    """
    values = labels_df[list(PATTERNS)].to_numpy(dtype=float)
    chars = np.where(np.isnan(values), "?", np.where(values > 0.5, "1", "0"))
    classes = pd.Series(["".join(row) for row in chars], index=labels_df.index)
    counts = classes.value_counts()
    rare = counts.index[counts < num_folds]
    classes[classes.isin(rare)] = RARE_CLASS
    n_rare = int((classes == RARE_CLASS).sum())
    if 0 < n_rare < num_folds:
        largest = classes[classes != RARE_CLASS].value_counts().index
        if len(largest):
            classes[classes == RARE_CLASS] = largest[0]
    return classes.to_numpy()


def make_folds(labels_df: pd.DataFrame, num_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Patient-level multi-label stratified K folds.

    Uses sklearn's ``StratifiedGroupKFold`` (shuffled, ``random_state=seed``) with
    groups = ``patient_id`` and, as the class, the label powerset of each clip (the four
    patterns as a bit string, missing labels as their own value, rare combinations merged,
    see ``_powerset_classes``). Rows are processed in ``clip_id`` order, so the result
    depends only on the table's content and ``seed``, not on its row order.

    Returns ``DataFrame(clip_id, patient_id, fold)`` in the row order of ``labels_df``.
    Raises ``ConfigError`` when there are fewer patients than folds and ``LeakageError``
    should a patient ever land in two folds.
    """
    check_label_columns(labels_df, ("clip_id", "patient_id", *PATTERNS))
    if int(num_folds) < 2:
        raise ConfigError(f"num_folds={num_folds}: K-fold cross-validation needs at least 2 folds")
    num_folds = int(num_folds)
    n_patients = labels_df["patient_id"].nunique()
    if n_patients < num_folds:
        raise ConfigError(
            f"cannot make {num_folds} patient-level folds from {n_patients} patient(s): "
            + (f"lower num_folds to at most {n_patients} or add patients" if n_patients >= 2
               else "K-fold cross-validation needs at least 2 patients: add patients")
        )

    ordered = labels_df.sort_values("clip_id", kind="stable").reset_index(drop=True)
    classes = _powerset_classes(ordered, num_folds)
    _, class_codes = np.unique(classes, return_inverse=True)
    splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=int(seed))
    fold = np.full(len(ordered), -1, dtype=int)
    with warnings.catch_warnings():
        # Tiny datasets: sklearn warns that a class is smaller than K; the split is still
        # patient-level, only less balanced, which fold_balance shows.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for fold_index, (_, test_idx) in enumerate(
            splitter.split(np.zeros(len(ordered)), class_codes, groups=ordered["patient_id"].astype(str))
        ):
            fold[test_idx] = fold_index

    folds = pd.DataFrame(
        {"clip_id": ordered["clip_id"], "patient_id": ordered["patient_id"], "fold": fold}
    )
    _assert_one_fold_per_patient(folds)
    folds = folds.set_index("clip_id").loc[labels_df["clip_id"]].reset_index()
    logger.info(
        "made %d patient-level folds of %d clips / %d patients (seed %d)",
        num_folds, len(folds), n_patients, seed,
    )
    return folds


def fold_balance(folds_df: pd.DataFrame, labels_df: pd.DataFrame) -> pd.DataFrame:
    """Label balance per fold, plus an ``all`` row for the whole table.

    Columns: ``fold, clips, patients`` and per pattern ``<pattern>_pos`` (positive clips) and
    ``<pattern>_prev`` (positives / labelled clips of that fold; missing labels are left out).
    """
    _require_columns(folds_df, ("clip_id", "fold"), "folds table")
    _require_columns(labels_df, ("clip_id", "patient_id", *PATTERNS), "labels table")
    merged = folds_df[["clip_id", "fold"]].merge(labels_df, on="clip_id", how="left", validate="1:1")
    merged["fold"] = merged["fold"].astype(str)
    everything = merged.assign(fold="all")
    both = pd.concat([merged, everything], ignore_index=True)
    grouped = both.groupby("fold", sort=False)
    table = pd.DataFrame({"clips": grouped["clip_id"].size(), "patients": grouped["patient_id"].nunique()})
    for pattern in PATTERNS:
        table[f"{pattern}_pos"] = grouped[pattern].sum().astype(int)
        table[f"{pattern}_prev"] = grouped[pattern].mean()  # mean skips NaN = missing labels
    order = sorted(merged["fold"].unique(), key=int) + ["all"]
    return table.loc[order].rename_axis("fold").reset_index()


def fold_roles(folds_df: pd.DataFrame, fold: int, num_folds: int) -> dict[str, list[str]]:
    """Clip ids for training, validation and test when fold ``fold`` is held out.

    test = fold ``fold``; validation (early stopping / checkpoint choice) = fold
    ``(fold + 1) % num_folds``; train = the remaining folds. The test fold is therefore never
    used for model selection, and every fold's out-of-fold predictions are clean.
    Checks that no patient is shared by any two roles.
    """
    _require_columns(folds_df, ("clip_id", "patient_id", "fold"), "folds table")
    if num_folds < 3:
        raise ConfigError(
            f"num_folds={num_folds}: separate train, validation and test folds need at least 3 folds"
        )
    if not 0 <= fold < num_folds:
        raise ConfigError(f"fold={fold} is outside 0..{num_folds - 1}")
    present = set(folds_df["fold"].astype(int).unique())
    if present != set(range(num_folds)):
        raise ConfigError(
            f"folds table has folds {sorted(present)} but num_folds={num_folds}: "
            "use the num_folds the split was made with or remake the split"
        )
    val_fold = (fold + 1) % num_folds
    fold_values = folds_df["fold"].astype(int)
    parts = {
        "train": folds_df[~fold_values.isin([fold, val_fold])],
        "val": folds_df[fold_values == val_fold],
        "test": folds_df[fold_values == fold],
    }
    roles = list(parts)
    for i, left in enumerate(roles):
        for right in roles[i + 1:]:
            assert_no_patient_overlap(parts[left], parts[right], names=(left, right))
    return {role: part["clip_id"].astype(str).tolist() for role, part in parts.items()}


# ----------------------------------------------------------------------------- saved splits


def fingerprint(labels_df: pd.DataFrame, columns: Sequence[str]) -> str:
    """Hash of the columns that decide a split, independent of row order."""
    table = labels_df[list(columns)].astype(str).sort_values("clip_id")
    return hashlib.sha1(table.to_csv(index=False).encode("utf-8")).hexdigest()


def saved_split_matches(path: Path, params: dict[str, Any], labels_df: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
    """Return (saved table, "") when it can be reused, else (None, reason)."""
    params_path = path.with_suffix(".json")
    if not path.is_file() or not params_path.is_file():
        return None, "no saved split"
    try:
        saved_params = read_record(params_path)
        saved = read_table(path)
    except (OSError, ValueError) as exc:
        return None, f"saved split unreadable ({exc})"
    changed = recorded_mismatch(saved_params, params)
    if changed:
        return None, f"parameters changed: {[difference.key for difference in changed]}"
    if set(saved["clip_id"]) != set(labels_df["clip_id"].astype(str)) or len(saved) != len(labels_df):
        return None, "saved split's clips differ from the labels table"
    return saved, ""


def load_or_make_folds(
    labels_df: pd.DataFrame,
    path: str | os.PathLike,
    num_folds: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Reuse the folds saved at ``path`` if they were made from the same clips, patients and
    parameters; otherwise make them (``make_folds``) and save them.

    Parameters are stored in ``path.with_suffix(".json")``: method, num_folds, seed and a hash
    of the (clip_id, patient_id) pairs — so relabelling a clip keeps the split, but moving a
    clip to another patient (which could leak) remakes it.
    """
    params = {"kind": "kfold", "method": FOLD_METHOD, "num_folds": int(num_folds), "seed": int(seed)}
    return _reuse_or_make(Path(path), params, labels_df, "folds", lambda: make_folds(labels_df, num_folds=num_folds, seed=seed),
                          _assert_one_fold_per_patient)


def _reuse_or_make(path: Path, params: dict[str, Any], labels_df: pd.DataFrame, what: str, make, check) -> pd.DataFrame:
    """The split saved at ``path`` when its record (``params`` plus the clips and their patients)
    still matches, after ``check``; else ``make()``, saved with its record."""
    params = {**params, "n_clips": int(len(labels_df)),
              "clips_patients_sha1": fingerprint(labels_df, ("clip_id", "patient_id"))}
    saved, reason = saved_split_matches(path, params, labels_df)
    if saved is not None:
        check(saved)
        logger.info("reusing %s saved at %s", what, path)
        return saved
    logger.info("making %s at %s: %s", what, path, reason)
    made = make()
    write_csv(path, made)
    write_record(path.with_suffix(".json"), params)
    return made


# ----------------------------------------------------------------------------- held-out test set


def held_out_groups(fraction: float) -> int:
    """The number of patient groups the held-out set is one of: round(1 / fraction)."""
    if not 0.0 < float(fraction) <= 0.5:
        raise ConfigError(f"held_out_fraction={fraction} must be in (0, 0.5] (0 = no held-out set, the paper: 0.1)")
    return round(1.0 / float(fraction))


def held_out_split(labels_df: pd.DataFrame, fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Set about ``fraction`` of the patients apart as a held-out test set (the paper: 10%).

    The clips are cut into n = round(1 / fraction) patient-level groups stratified like the
    folds (``make_folds`` with n folds and ``seed``) and the first group is the held-out set, so
    it is 1/n of the patients (fraction 0.1: one tenth) with about the label mix of the rest.
    Returns ``DataFrame(clip_id, patient_id, split)`` in row order, ``split`` in
    (``development``, ``held_out``); ConfigError for a fraction outside (0, 0.5] or fewer
    patients than groups (a held-out set would then be more than ``fraction`` of them).
    """
    check_label_columns(labels_df, ("clip_id", "patient_id", *PATTERNS))
    groups = held_out_groups(fraction)
    n_patients = labels_df["patient_id"].nunique()
    if n_patients < groups:
        raise ConfigError(f"held_out_fraction={fraction} needs at least {groups} patients (one group of {groups}), got "
                          f"{n_patients}: add patients or set held_out_fraction=0")
    grouped = make_folds(labels_df, num_folds=groups, seed=seed)
    split = pd.DataFrame({
        "clip_id": grouped["clip_id"], "patient_id": grouped["patient_id"],
        "split": np.where(grouped["fold"] == 0, HELD_OUT, DEVELOPMENT),
    })  # fmt: skip
    _assert_held_out_apart(split)
    return split


def load_or_make_held_out(
    labels_df: pd.DataFrame, path: str | os.PathLike, fraction: float = 0.1, seed: int = 0, min_left: int = 3
) -> pd.DataFrame | None:
    """Like ``load_or_make_folds`` for ``held_out_split``. None, with the files of an earlier
    split removed so they cannot mislead a later step, for ``fraction`` 0 (no held-out set) and,
    with a warning, for a dataset too small for one: fewer patients than round(1 / fraction)
    (one patient would be more than ``fraction`` of them) or a held-out set that would leave
    fewer than ``min_left`` patients (the number of folds) for development."""
    path = Path(path)
    n_patients = labels_df["patient_id"].nunique()
    split = None
    if float(fraction) != 0.0 and n_patients >= held_out_groups(fraction):
        split = _load_or_make_held_out(labels_df, path, fraction, seed)
        left = split.loc[split["split"] == DEVELOPMENT, "patient_id"].nunique()
        if left < min_left:
            logger.warning("no held-out test set: holding out %d of the %d development patients "
                           "(held_out_fraction=%s) would leave fewer than %d for the folds",
                           n_patients - left, n_patients, fraction, min_left)
            split = None
    elif float(fraction) != 0.0:
        logger.warning("no held-out test set: %d development patient(s) are too few for held_out_fraction=%s "
                       "(it needs %d)", n_patients, fraction, held_out_groups(fraction))
    if split is None:
        for stale in (path, path.with_suffix(".json")):
            stale.unlink(missing_ok=True)
    return split


def _load_or_make_held_out(labels_df: pd.DataFrame, path: Path, fraction: float, seed: int) -> pd.DataFrame:
    params = {"kind": "held_out", "method": HELD_OUT_METHOD, "fold_method": FOLD_METHOD, "fraction": float(fraction),
              "seed": int(seed)}
    return _reuse_or_make(path, params, labels_df, "held-out split",
                          lambda: held_out_split(labels_df, fraction=fraction, seed=seed), _assert_held_out_apart)


def _assert_held_out_apart(split: pd.DataFrame) -> None:
    assert_no_patient_overlap(split[split["split"] == DEVELOPMENT], split[split["split"] == HELD_OUT],
                              names=(DEVELOPMENT, HELD_OUT))


def check_enough_patients(development: pd.DataFrame, usable: pd.DataFrame, labels: pd.DataFrame, num_folds: int,
                          report: Any, report_path: Path) -> None:
    """Refuse (``TooFewPatientsError`` carrying the ingest report) when ``num_folds`` patient-level folds
    cannot be made of the development clips, saying where the other clips went and what to do."""
    patients = development["patient_id"].nunique()
    if patients >= num_folds:
        return
    held_out = len(usable) - len(development)
    where = [f"{len(labels) - len(usable)} clip(s) skipped at ingest (see {report_path})"]
    if held_out:
        where.append(f"{held_out} set apart as the temporal and held-out test sets")
    if patients >= 3:
        advice = f"lower num_folds to at most {patients} or add patients"
    else:
        advice = ("separate train, validation and test folds need at least 3 patients: add patients"
                  + (", fix the skipped clips" if len(labels) > len(usable) else "")
                  + (" or prepare without the temporal test set (--no-temporal-split) or the held-out set "
                     "(held_out_fraction=0)" if held_out else ""))
    raise TooFewPatientsError(
        f"only {patients} patient(s) with {len(development)} clip(s) are left for {num_folds} patient-level "
        f"folds ({'; '.join(where)}): {advice}",
        report, report_path,  # lusv prepare prints the skip table
    )
