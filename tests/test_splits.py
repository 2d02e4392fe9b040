"""Patient-level folds, temporal split and leakage checks on random label tables."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from lusv.errors import ConfigError, LabelsError, LeakageError
from lusv.data.patterns import PATTERNS
from lusv.data.splits import (
    HELD_OUT, assert_no_patient_overlap, fold_balance, fold_roles, held_out_split, load_or_make_folds,
    load_or_make_held_out, make_folds,
)
from lusv.data.temporal_split import DEVELOPMENT, TEMPORAL_TEST, load_or_make_temporal_split, temporal_split


def random_labels(n_patients: int = 80, seed: int = 1, missing: float = 0.05) -> pd.DataFrame:
    """Several clips per patient, labels correlated within a patient, a few missing labels."""
    rng = np.random.default_rng(seed)
    clips_per_patient = rng.integers(1, 7, size=n_patients)
    patient_idx = np.repeat(np.arange(n_patients), clips_per_patient)
    n = len(patient_idx)
    prevalence = np.array([0.5, 0.35, 0.2, 0.12])
    patient_p = rng.random((n_patients, 4)) < prevalence
    flip = rng.random((n, 4)) < 0.15
    labels = np.logical_xor(patient_p[patient_idx], flip).astype(float)
    labels[rng.random((n, 4)) < missing] = np.nan
    start = pd.Timestamp("2020-01-01")
    patient_day = rng.integers(0, 700, size=n_patients)
    days = patient_day[patient_idx] + rng.integers(0, 3, size=n)  # visits spread over a few days
    df = pd.DataFrame(
        {
            "clip_id": [f"c{i:04d}" for i in range(n)],
            "path": [f"c{i:04d}.mp4" for i in range(n)],
            "patient_id": [f"P{p:03d}" for p in patient_idx],
            **{p: labels[:, j] for j, p in enumerate(PATTERNS)},
            "acquired_on": start + pd.to_timedelta(days, unit="D"),
        }
    )
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    return random_labels()


@pytest.fixture(scope="module")
def folds(labels) -> pd.DataFrame:
    return make_folds(labels, num_folds=5, seed=0)


# ----------------------------------------------------------------------------- folds


def test_folds_are_patient_level_and_cover_every_clip_once(labels, folds):
    assert list(folds.columns) == ["clip_id", "patient_id", "fold"]
    assert folds["clip_id"].tolist() == labels["clip_id"].tolist()  # input row order kept
    assert folds["clip_id"].is_unique
    assert set(folds["fold"]) == set(range(5))
    assert (folds.groupby("patient_id")["fold"].nunique() == 1).all()
    # Fold sizes are reasonable (no fold empty or holding half the data).
    sizes = folds["fold"].value_counts()
    assert sizes.min() > 0.12 * len(folds) and sizes.max() < 0.3 * len(folds)


def test_fold_prevalence_close_to_overall(labels, folds):
    balance = fold_balance(folds, labels)
    assert balance["fold"].tolist() == ["0", "1", "2", "3", "4", "all"]
    overall = balance.iloc[-1]
    assert overall["clips"] == len(labels)
    assert overall["patients"] == labels["patient_id"].nunique()
    per_fold = balance.iloc[:-1]
    assert per_fold["clips"].sum() == len(labels)
    for pattern in PATTERNS:
        assert per_fold[f"{pattern}_pos"].sum() == int(np.nansum(labels[pattern]))
        assert overall[f"{pattern}_prev"] == pytest.approx(labels[pattern].mean())
        deviation = (per_fold[f"{pattern}_prev"] - overall[f"{pattern}_prev"]).abs().max()
        # Plain GroupKFold deviates ~0.22 on this table; stratification keeps it under ~0.09.
        assert deviation < 0.1, (pattern, deviation)


def test_folds_deterministic_by_seed_and_row_order(labels, folds):
    again = make_folds(labels.sample(frac=1.0, random_state=7), num_folds=5, seed=0)
    merged = folds.merge(again, on="clip_id")
    assert (merged["fold_x"] == merged["fold_y"]).all()
    other = make_folds(labels, num_folds=5, seed=1)
    assert not (other["fold"].to_numpy() == folds["fold"].to_numpy()).all()


def test_fewer_patients_than_folds_is_a_clear_error():
    small = random_labels(n_patients=3)
    with pytest.raises(ConfigError, match="3 patient"):
        make_folds(small, num_folds=5)


def test_missing_pattern_column_is_a_labels_error(labels):
    with pytest.raises(LabelsError, match="b_lines"):
        make_folds(labels.drop(columns=["b_lines"]))


def test_tiny_dataset_still_patient_level():
    tiny = random_labels(n_patients=6, seed=3)
    folds = make_folds(tiny, num_folds=3, seed=0)
    assert (folds.groupby("patient_id")["fold"].nunique() == 1).all()
    assert set(folds["fold"]) == {0, 1, 2}


# ----------------------------------------------------------------------------- leakage + roles


def test_leakage_error_names_patient_and_sides():
    left = pd.DataFrame({"clip_id": ["a", "b"], "patient_id": ["P1", "P2"]})
    right = pd.DataFrame({"clip_id": ["c", "d"], "patient_id": ["P2", "P3"]})
    with pytest.raises(LeakageError, match=r"'P2'.*train and test"):
        assert_no_patient_overlap(left, right, names=("train", "test"))
    assert_no_patient_overlap(left, right.iloc[1:])  # disjoint: no error


def test_fold_roles_rotate_validation_and_never_share_patients(folds):
    clip_fold = folds.set_index("clip_id")["fold"]
    for f in range(5):
        roles = fold_roles(folds, f, 5)
        assert set(clip_fold[roles["test"]]) == {f}
        assert set(clip_fold[roles["val"]]) == {(f + 1) % 5}
        assert set(clip_fold[roles["train"]]) == set(range(5)) - {f, (f + 1) % 5}
        assert sum(len(v) for v in roles.values()) == len(folds)


def test_fold_roles_detects_leaky_table(folds):
    leaky = folds.copy()
    victim = leaky.loc[leaky["fold"] == 0, "patient_id"].iloc[0]
    leaky.loc[leaky.index[leaky["fold"] == 1][0], "patient_id"] = victim
    with pytest.raises(LeakageError, match=repr(victim)):
        fold_roles(leaky, 0, 5)
    with pytest.raises(ConfigError, match=r"fold=5 is outside 0\.\.4"):
        fold_roles(folds, 5, 5)


# ----------------------------------------------------------------------------- temporal


def test_temporal_split_orders_dates_and_keeps_patients_whole(labels):
    split = temporal_split(labels, test_fraction=0.25)
    assert list(split.columns) == ["clip_id", "patient_id", "split"]
    assert set(split["split"]) == {DEVELOPMENT, TEMPORAL_TEST}
    dates = labels.set_index("clip_id")["acquired_on"]
    split["date"] = dates[split["clip_id"]].to_numpy()
    test, dev = split[split["split"] == TEMPORAL_TEST], split[split["split"] == DEVELOPMENT]
    cutoff = pd.Timestamp(split.attrs["cutoff"])
    assert test["date"].min() >= cutoff
    # Rule: a patient sits on the side of their first visit, so test patients were all first
    # seen after every development patient was first seen.
    assert test.groupby("patient_id")["date"].min().min() >= dev.groupby("patient_id")["date"].min().max()
    assert not set(test["patient_id"]) & set(dev["patient_id"])
    assert abs(len(test) / len(split) - 0.25) < 0.05


def test_temporal_split_straddling_patient_stays_in_development():
    df = pd.DataFrame(
        {
            "clip_id": ["a1", "a2", "b1", "c1"],
            "patient_id": ["A", "A", "B", "C"],
            "acquired_on": pd.to_datetime(["2021-01-01", "2021-03-01", "2021-01-15", "2021-02-20"]),
        }
    )
    split = temporal_split(df, cutoff="2021-02-01").set_index("clip_id")["split"]
    assert split.to_dict() == {"a1": DEVELOPMENT, "a2": DEVELOPMENT, "b1": DEVELOPMENT, "c1": TEMPORAL_TEST}


def test_temporal_split_errors(labels):
    with pytest.raises(LabelsError, match="acquired_on"):
        temporal_split(labels.drop(columns=["acquired_on"]))
    broken = labels.copy()
    broken.loc[broken.index[3], "acquired_on"] = pd.NaT
    with pytest.raises(LabelsError, match=broken.loc[broken.index[3], "clip_id"]):
        temporal_split(broken)
    with pytest.raises(ConfigError, match="empty"):
        temporal_split(labels, cutoff="2030-01-01")
    with pytest.raises(ConfigError, match="not a date"):
        temporal_split(labels, cutoff="someday")


# ----------------------------------------------------------------------------- saved splits


def test_load_or_make_folds_reuses_then_remakes(tmp_path, labels, folds, caplog):
    path = tmp_path / "splits" / "folds.csv"
    first = load_or_make_folds(labels, path, num_folds=5, seed=0)
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert json.loads(path.with_suffix(".json").read_text())["num_folds"] == 5
    pd.testing.assert_frame_equal(first, folds)
    mtime, content = path.stat().st_mtime_ns, path.read_bytes()

    with caplog.at_level(logging.INFO, logger="lusv.data.splits"):
        again = load_or_make_folds(labels.sample(frac=1.0, random_state=3), path, num_folds=5, seed=0)
    assert "reusing" in caplog.text
    assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content
    assert again.set_index("clip_id")["fold"].to_dict() == folds.set_index("clip_id")["fold"].to_dict()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lusv.data.splits"):
        remade = load_or_make_folds(labels, path, num_folds=4, seed=0)
    assert "parameters changed" in caplog.text and "num_folds" in caplog.text
    assert set(remade["fold"]) == {0, 1, 2, 3}
    assert set(pd.read_csv(path)["fold"]) == {0, 1, 2, 3}

    fewer = labels.iloc[10:]
    remade = load_or_make_folds(fewer, path, num_folds=4, seed=0)
    assert len(remade) == len(fewer) and len(pd.read_csv(path)) == len(fewer)


def test_saved_folds_with_a_patient_in_two_folds_are_refused(tmp_path, labels):
    """A saved split edited by hand (or by a buggy tool) still has the right clips and parameters,
    so it would be reused: the one-fold-per-patient check is the only thing that stops it."""
    path = tmp_path / "folds.csv"
    saved = load_or_make_folds(labels, path, num_folds=5, seed=0)
    clips_per_patient = saved["patient_id"].value_counts()
    victim = clips_per_patient.index[clips_per_patient > 1][0]
    moved = saved.index[saved["patient_id"] == victim][0]
    saved.loc[moved, "fold"] = (saved.loc[moved, "fold"] + 1) % 5
    saved.to_csv(path, index=False)
    with pytest.raises(LeakageError, match=rf"patient\(s\) '{victim}' have clips in more than one fold"):
        load_or_make_folds(labels, path, num_folds=5, seed=0)


def test_load_or_make_temporal_split_reuses(tmp_path, labels):
    path = tmp_path / "temporal.csv"
    first = load_or_make_temporal_split(labels, path, test_fraction=0.2)
    mtime = path.stat().st_mtime_ns
    again = load_or_make_temporal_split(labels, path, test_fraction=0.2)
    assert path.stat().st_mtime_ns == mtime
    assert again.attrs["cutoff"] == first.attrs["cutoff"]
    pd.testing.assert_frame_equal(again, first, check_dtype=False)
    load_or_make_temporal_split(labels, path, test_fraction=0.3)
    assert path.stat().st_mtime_ns != mtime


# ----------------------------------------------------------------------------- held-out test set


def test_held_out_set_is_a_tenth_of_the_patients_none_of_them_in_development(labels):
    split = held_out_split(labels, fraction=0.1, seed=0)
    assert list(split["clip_id"]) == list(labels["clip_id"]), "row order kept"
    assert set(split["split"]) == {DEVELOPMENT, HELD_OUT}
    held = set(split.loc[split["split"] == HELD_OUT, "patient_id"])
    kept = set(split.loc[split["split"] == DEVELOPMENT, "patient_id"])
    assert not held & kept, "no patient in both the held-out set and development"
    assert held | kept == set(labels["patient_id"])
    # 80 patients cut into 10 stratified groups of 8 (StratifiedGroupKFold may move a patient)
    assert 6 <= len(held) <= 10
    share = (split["split"] == HELD_OUT).mean()
    assert 0.05 <= share <= 0.15, share
    # about the label mix of the whole table (the clips are stratified like the folds)
    prevalence = labels[list(PATTERNS)].mean()
    held_prevalence = labels.loc[split["split"] == HELD_OUT, list(PATTERNS)].mean()
    assert (held_prevalence - prevalence).abs().max() < 0.15
    other_seed = held_out_split(labels, fraction=0.1, seed=1)
    assert set(other_seed.loc[other_seed["split"] == HELD_OUT, "patient_id"]) != held


def test_held_out_set_needs_as_many_patients_as_groups_and_a_fraction_up_to_a_half(labels):
    patients = sorted(labels["patient_id"].unique())
    ten = labels[labels["patient_id"].isin(patients[:10])]
    split = held_out_split(ten, fraction=0.1, seed=0)
    assert split.loc[split["split"] == HELD_OUT, "patient_id"].nunique() == 1  # one of ten groups of one
    with pytest.raises(ConfigError, match="held_out_fraction=0.1 needs at least 10 patients .* got 9"):
        held_out_split(labels[labels["patient_id"].isin(patients[:9])], fraction=0.1)
    half = held_out_split(labels, fraction=0.5, seed=0)
    assert 0.35 < (half["split"] == HELD_OUT).mean() < 0.65
    for bad in (0.0, 0.6, -0.1):
        with pytest.raises(ConfigError, match=rf"held_out_fraction={bad} must be in \(0, 0.5\]"):
            held_out_split(labels, fraction=bad)


def test_load_or_make_held_out_reuses_while_unchanged_and_removes_it_at_zero(tmp_path, labels, caplog):
    path = tmp_path / "held_out.csv"
    first = load_or_make_held_out(labels, path, fraction=0.1, seed=0)
    mtime = path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="lusv.data.splits"):
        again = load_or_make_held_out(labels.sample(frac=1.0, random_state=2), path, fraction=0.1, seed=0)
    assert "reusing held-out split" in caplog.text and path.stat().st_mtime_ns == mtime
    assert again.set_index("clip_id")["split"].to_dict() == first.set_index("clip_id")["split"].to_dict()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lusv.data.splits"):
        load_or_make_held_out(labels, path, fraction=0.2, seed=0)
    assert "parameters changed: ['fraction']" in caplog.text and path.stat().st_mtime_ns != mtime
    # a saved split edited so that a patient sits on both sides is refused, not reused
    saved = pd.read_csv(path)
    held = saved[saved["split"] == HELD_OUT]
    held_patient = held["patient_id"].value_counts().index[0]  # one with several clips
    saved.loc[saved.index[saved["patient_id"] == held_patient][0], "split"] = DEVELOPMENT
    saved.to_csv(path, index=False)
    with pytest.raises(LeakageError, match=f"'{held_patient}' appear in both development and held_out"):
        load_or_make_held_out(labels, path, fraction=0.2, seed=0)
    assert load_or_make_held_out(labels, path, fraction=0.0) is None
    assert not path.exists() and not path.with_suffix(".json").exists()


def test_a_held_out_set_too_big_for_the_data_is_skipped_with_a_warning(tmp_path, labels, caplog):
    patients = sorted(labels["patient_id"].unique())
    four = labels[labels["patient_id"].isin(patients[:4])]
    path = tmp_path / "held_out.csv"
    assert load_or_make_held_out(four, path, fraction=0.25, min_left=3) is not None  # 1 held out, 3 left
    with caplog.at_level(logging.WARNING, logger="lusv.data.splits"):
        assert load_or_make_held_out(four, path, fraction=0.25, min_left=4) is None
    assert "would leave fewer than 4 for the folds" in caplog.text
    assert not path.exists(), "the earlier split's file is removed"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lusv.data.splits"):
        assert load_or_make_held_out(four, path, fraction=0.1, min_left=3) is None  # 1 of 4 would be 25%, not 10%
    assert "4 development patient(s) are too few for held_out_fraction=0.1 (it needs 10)" in caplog.text
