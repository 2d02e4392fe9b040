"""Metrics checked against sklearn, scipy, hand-worked examples and the slow textbook versions of
tests/reference_stats.py (never against lusv.stats.metrics itself)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

import reference_stats as ref
from lusv.stats.bootstrap import _patient_draw_counts, _weighted_auc
from lusv.errors import PredictionsError
from lusv.stats.metrics import (
    compare_models,
    delong_auc_variance,
    delong_ci,
    delong_test,
    macro_auc,
    micro_auc,
    patient_bootstrap_auc,
    per_pattern_auc,
    roc_auc,
    sensitivity_specificity,
    summarize_predictions,
    youden_threshold,
)
from lusv.data.patterns import PATTERNS


def scored(n: int = 120, shift: float = 1.0, seed: int = 0, decimals: int | None = 1):
    """Binary labels and a noisy score; rounding creates ties on purpose."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(float)
    score = y * shift + rng.normal(size=n)
    if decimals is not None:
        score = np.round(score, decimals)
    return y, score


# ----------------------------------------------------------------------------- AUCs


def test_auc_matches_sklearn_and_mann_whitney_ignoring_nan():
    y, score = scored()
    y_nan = y.copy()
    y_nan[::7] = np.nan
    keep = ~np.isnan(y_nan)
    expected = roc_auc_score(y_nan[keep], score[keep])
    assert roc_auc(y_nan, score) == pytest.approx(expected, abs=1e-12)
    u = stats.mannwhitneyu(score[keep][y_nan[keep] == 1], score[keep][y_nan[keep] == 0]).statistic
    assert roc_auc(y_nan, score) == pytest.approx(u / ((y_nan == 1).sum() * (y_nan == 0).sum()), abs=1e-12)
    assert np.isnan(roc_auc([1, 1, np.nan], [0.2, 0.3, 0.4]))


def test_micro_and_macro_definitions():
    rng = np.random.default_rng(1)
    labels = (rng.random((80, 4)) < 0.4).astype(float)
    scores = labels * 0.8 + rng.normal(size=(80, 4))
    labels[:, 3] = 0.0  # one class only: AUC undefined, left out of the macro mean
    labels[:5, 0] = np.nan
    per = per_pattern_auc(labels, scores)
    assert np.isnan(per[3])
    assert per[1] == pytest.approx(roc_auc_score(labels[:, 1], scores[:, 1]))
    by_sklearn = [roc_auc_score(labels[~np.isnan(labels[:, j]), j], scores[~np.isnan(labels[:, j]), j]) for j in range(3)]
    assert per[:3] == pytest.approx(by_sklearn)
    assert macro_auc(labels, scores) == pytest.approx(np.mean(by_sklearn))
    keep = ~np.isnan(labels.ravel())
    assert micro_auc(labels, scores) == pytest.approx(roc_auc_score(labels.ravel()[keep], scores.ravel()[keep]))


# ----------------------------------------------------------------------------- DeLong


def test_delong_variance_and_covariance_match_slow_reference():
    y, score_a = scored(n=90, seed=2)
    _, noise = scored(n=90, seed=3)
    score_b = np.round(score_a * 0.5 + noise, 1)  # correlated second model, with ties
    auc_a, var_a = ref.delong_auc_var(y, score_a)
    auc, var = delong_auc_variance(y, score_a)
    assert auc == pytest.approx(roc_auc_score(y, score_a), abs=1e-12)
    assert auc == pytest.approx(auc_a, abs=1e-12)
    assert var == pytest.approx(var_a, rel=1e-10)
    test = delong_test(y, score_a, score_b)
    _, auc_b, z, p_value = ref.delong_paired_test(y, score_a, score_b)
    assert test.auc_b == pytest.approx(auc_b, abs=1e-12)
    assert test.z == pytest.approx(z, rel=1e-9)
    assert test.p_value == pytest.approx(p_value, rel=1e-9)


def test_delong_variance_on_a_hand_worked_example():
    # positives 0.8 0.6 0.3, negatives 0.5 0.2 0.1. Placement values: V10 = 1, 1, 2/3 (share of
    # negatives below each positive), V01 = 2/3, 1, 1 (share of positives above each negative);
    # AUC = 8/9; both sample variances are (1/81 + 1/81 + 4/81) / 2 = 1/27, var = 1/27/3 * 2 = 2/81.
    auc, var = delong_auc_variance([1, 1, 1, 0, 0, 0], [0.8, 0.6, 0.3, 0.5, 0.2, 0.1])
    assert auc == pytest.approx(8 / 9, abs=1e-12) and var == pytest.approx(2 / 81, rel=1e-12)


def test_delong_test_known_cases():
    y, good = scored(n=200, shift=2.5, seed=4, decimals=None)
    rng = np.random.default_rng(5)
    identical = delong_test(y, good, good.copy())
    assert identical.z == 0.0 and identical.p_value == 1.0
    bad = rng.normal(size=len(y))
    better = delong_test(y, good, bad)
    assert better.auc_a > 0.9 and better.z > 0 and better.p_value < 0.05
    swapped = delong_test(y, bad, good)
    assert swapped.z == pytest.approx(-better.z) and swapped.p_value == pytest.approx(better.p_value)


def test_delong_ci_on_a_hand_worked_example():
    # The example above: AUC = 8/9, se = sqrt(2/81) = 0.157135, z(0.975) = 1.959964.
    # plain: 8/9 -+ 0.307979 -> (0.580910, 1.196868 clipped to 1).
    # logit: logit(8/9) = ln 8 = 2.079442, se / (AUC (1 - AUC)) = 0.157135 / (8/81) = 1.590990,
    #        2.079442 -+ 3.118284 -> expit(-1.038842) = 0.261373, expit(5.197725) = 0.994501.
    y, score = [1, 1, 1, 0, 0, 0], [0.8, 0.6, 0.3, 0.5, 0.2, 0.1]
    plain = delong_ci(y, score, method="plain")
    assert plain.auc == pytest.approx(8 / 9) and plain.low == pytest.approx(0.580910, abs=2e-6) and plain.high == 1.0
    logit = delong_ci(y, score)
    assert logit.low == pytest.approx(0.261373, abs=2e-6) and logit.high == pytest.approx(0.994501, abs=2e-6)
    # alpha = 0.1: z(0.95) = 1.644854, half-width 2.616946 on the logit scale
    narrower = delong_ci(y, score, alpha=0.1)
    assert narrower.low == pytest.approx(1 / (1 + np.exp(-(np.log(8) - 2.616946))), abs=2e-6)
    assert narrower.high == pytest.approx(1 / (1 + np.exp(-(np.log(8) + 2.616946))), abs=2e-6)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.01])
@pytest.mark.parametrize("method", ["logit", "plain"])
@pytest.mark.parametrize("seed", [6, 9])
def test_delong_ci_equals_the_textbook_interval(seed, method, alpha):
    y, score = scored(n=60, shift=1.2, seed=seed)  # rounded scores: ties between the classes
    expected = ref.delong_ci(y, score, alpha=alpha, method=method)
    assert tuple(delong_ci(y, score, alpha=alpha, method=method)) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_delong_ci_shapes():
    y, score = scored(n=150, shift=2.0, seed=6)
    auc, _ = ref.delong_auc_var(y, score)
    logit = delong_ci(y, score)
    assert 0.0 < logit.low < auc < logit.high < 1.0
    # logit interval is pulled towards 0.5: longer below than above an AUC near 1
    assert auc - logit.low > logit.high - auc
    assert delong_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (1.0, 1.0, 1.0)
    assert np.isnan(delong_ci([0, 1, 1], [0.1, 0.5, 0.9]).low)  # one negative: no variance


# ----------------------------------------------------------------------------- thresholds


def test_youden_threshold_equals_a_score_and_counts_it_positive():
    # negatives 0.1 0.2 0.3 0.8, positives 0.4 0.5 0.9: J is maximal (0.75) at t = 0.4 exactly.
    y = np.array([0, 0, 0, 0, 1, 1, 1, np.nan])
    score = np.array([0.1, 0.2, 0.3, 0.8, 0.4, 0.5, 0.9, 0.45])
    threshold = youden_threshold(y, score)
    assert threshold == 0.4
    counts = sensitivity_specificity(y, score, threshold)
    assert (counts.tp, counts.fn, counts.tn, counts.fp) == (3, 0, 3, 1)  # score 0.4 is positive
    assert counts.sensitivity == 1.0 and counts.specificity == 0.75
    # a negative exactly at the threshold is a false positive
    at_negative = sensitivity_specificity(y, score, 0.3)
    assert (at_negative.tp, at_negative.fn, at_negative.tn, at_negative.fp) == (3, 0, 2, 2)


def test_youden_threshold_is_never_infinite_and_warns_without_discrimination(caplog):
    # every negative above every positive: J <= 0 at every score. sklearn's roc_curve puts +inf
    # first (J = 0 there too); the threshold must be an observed score: the lowest, J = 0.
    with caplog.at_level("WARNING", logger="lusv.stats.metrics"):
        threshold = youden_threshold([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])
    assert threshold == 0.1
    assert "do not separate the classes" in caplog.text
    # constant scores: the one observed score, with a warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="lusv.stats.metrics"):
        assert youden_threshold([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert "do not separate the classes" in caplog.text
    # perfect separation: the lowest positive score, and no warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="lusv.stats.metrics"):
        assert youden_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.8
    assert caplog.text == ""
    # a single class: no threshold
    assert np.isnan(youden_threshold([1, 1, np.nan], [0.2, 0.3, 0.4]))


@pytest.mark.parametrize(
    "y, score, expected",
    [
        # J = 1/2 at 0.8 (sens 1/2, spec 1) and at 0.4 (sens 1, spec 1/2): the higher one
        ([0, 1, 0, 1], [0.2, 0.4, 0.6, 0.8], 0.8),
        # J = 1/3 at 0.9, 0.6 and 0.3; in floats 1 - 2/3 > 2/3 - 1/3 by one ulp, still a tie
        ([1, 0, 1, 0, 1, 0], [0.9, 0.7, 0.6, 0.5, 0.3, 0.1], 0.9),
        # J = 1/2 at 0.7 (sens 1/2, spec 4/4) and at 0.5 (sens 2/2, spec 2/4); 1/4 at 0.65 and 0.3
        ([1, 0, 0, 1, 0, 0], [0.7, 0.65, 0.6, 0.5, 0.3, 0.2], 0.7),
    ],
)
def test_youden_ties_go_to_the_highest_threshold(y, score, expected):
    assert youden_threshold(y, score) == expected


@pytest.mark.parametrize("seed", range(20))
def test_youden_threshold_equals_brute_force_over_observed_scores(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 40))
    y = (rng.random(n) < 0.4).astype(float)
    y[:2] = [0, 1]  # both classes
    # weak, sometimes inverted signal, rounded so that ties occur
    score = np.round(rng.normal(size=n) + rng.normal() * y, 1)
    threshold = youden_threshold(y, score)
    assert np.isfinite(threshold) and threshold in score
    assert threshold == ref.youden_brute_force(y, score)


# ----------------------------------------------------------------------------- patient bootstrap


def test_weighted_auc_equals_auc_of_materialised_resample():
    y, score = scored(n=60, seed=7)
    patients = np.repeat(np.arange(20), 3)
    counts = _patient_draw_counts(20, 5, np.random.default_rng(0))
    assert (counts.sum(axis=1) == 20).all()
    weights = counts[:, patients].astype(float)
    fast = _weighted_auc(y == 1, score, weights)
    for b in range(5):
        rep = np.repeat(np.arange(60), counts[b, patients])
        assert fast[b] == pytest.approx(roc_auc_score(y[rep], score[rep]), abs=1e-12)


def test_patient_bootstrap_seeded_and_wider_when_clips_cluster():
    y, score = scored(n=40, shift=1.0, seed=8, decimals=None)
    # every patient contributes 5 identical clips: the effective sample is 40 patients, not 200
    y5, score5, patients5 = np.repeat(y, 5), np.repeat(score, 5), np.repeat(np.arange(40), 5)
    by_patient = patient_bootstrap_auc(y5, score5, patients5, n_boot=400, seed=0)
    by_clip = patient_bootstrap_auc(y5, score5, np.arange(200), n_boot=400, seed=0)
    auc = roc_auc(y5, score5)
    assert by_patient[0] < auc < by_patient[1]
    assert (by_patient[1] - by_patient[0]) > 1.6 * (by_clip[1] - by_clip[0])
    assert patient_bootstrap_auc(y5, score5, patients5, n_boot=400, seed=0) == by_patient
    assert patient_bootstrap_auc(y5, score5, patients5, n_boot=400, seed=1) != by_patient


def clustered_predictions(n_patients: int = 14, seed: int = 3) -> pd.DataFrame:
    """1-5 clips per patient, four patterns of different strength, about 10% of labels missing;
    patient ids P0..P13 sort as strings (P0, P1, P10, ...), not as numbers."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"P{i}" for i in range(n_patients)], rng.integers(1, 6, size=n_patients))
    n = len(patients)
    labels = (rng.random((n, 4)) < [0.5, 0.4, 0.35, 0.3]).astype(float)
    scores = labels * [1.5, 1.0, 0.6, 0.2] + rng.normal(size=(n, 4))
    labels[rng.random((n, 4)) < 0.1] = np.nan
    table = pd.DataFrame({"clip_id": [f"c{i}" for i in range(n)], "patient_id": patients})
    for j, pattern in enumerate(PATTERNS):
        table[f"p_{pattern}"], table[pattern] = scores[:, j], labels[:, j]
    return table


def test_patient_bootstrap_cis_equal_the_slow_bootstrap_over_materialised_resamples():
    pred = clustered_predictions()
    labels, scores = pred[list(PATTERNS)].to_numpy(), pred[[f"p_{p}" for p in PATTERNS]].to_numpy()
    expected = ref.patient_bootstrap_cis(labels, scores, pred["patient_id"], n_boot=200, seed=5)
    table = summarize_predictions(pred, ci="bootstrap", n_boot=200, seed=5).set_index("pattern")
    for key, column in [*enumerate(PATTERNS), ("micro", "micro"), ("macro", "macro")]:
        got = table.loc[column, ["ci_low", "ci_high"]].to_numpy(dtype=float)
        np.testing.assert_allclose(got, expected[key], rtol=0, atol=1e-12, err_msg=column)
    # The data can tell a 95% interval from a 90% one (unlike 2 patients, where they coincide).
    ninety = ref.patient_bootstrap_cis(labels, scores, pred["patient_id"], n_boot=200, seed=5, alpha=0.1)
    assert all(ninety[key][0] > expected[key][0] and ninety[key][1] < expected[key][1] for key in expected)
    low, high = patient_bootstrap_auc(labels[:, 1], scores[:, 1], pred["patient_id"], n_boot=200, seed=5)
    assert (low, high) == pytest.approx(expected[1], abs=1e-12)


# ----------------------------------------------------------------------------- tables


def predictions(n_patients: int = 40, strength: float = 1.5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n_patients), 3)
    n = len(patient)
    labels = (rng.random((n, 4)) < [0.5, 0.4, 0.3, 0.25]).astype(float)
    labels[rng.random((n, 4)) < 0.05] = np.nan
    logits = np.nan_to_num(labels) * strength + rng.normal(size=(n, 4))
    df = pd.DataFrame({"clip_id": [f"c{i}" for i in range(n)], "patient_id": [f"P{p}" for p in patient],
                       "fold": patient % 5})
    for j, p in enumerate(PATTERNS):
        df[f"p_{p}"] = 1 / (1 + np.exp(-logits[:, j]))
        df[p] = labels[:, j]
    return df


def test_summarize_predictions_table():
    pred = predictions()
    table = summarize_predictions(pred, n_boot=200)
    assert table["pattern"].tolist() == [*PATTERNS, "micro", "macro"]
    assert list(table.columns) == ["pattern", "auc", "ci_low", "ci_high", "n_pos", "n_neg", "ci_method"]
    for pattern in PATTERNS:
        row = table.set_index("pattern").loc[pattern]
        keep = pred[pattern].notna()
        assert row["auc"] == pytest.approx(roc_auc_score(pred.loc[keep, pattern], pred.loc[keep, f"p_{pattern}"]))
        assert row["n_pos"] == (pred[pattern] == 1).sum() and row["n_neg"] == (pred[pattern] == 0).sum()
        expected = ref.delong_ci(pred.loc[keep, pattern], pred.loc[keep, f"p_{pattern}"])
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(expected[1:], rel=1e-9)
    assert (table["ci_low"] < table["auc"]).all() and (table["auc"] < table["ci_high"]).all()
    assert table.loc[4, "n_pos"] == table.loc[:3, "n_pos"].sum()
    boot = summarize_predictions(pred, ci="bootstrap", n_boot=200)
    assert (boot["ci_method"] == "patient-bootstrap").all()
    assert boot["auc"].to_numpy() == pytest.approx(table["auc"].to_numpy())
    with pytest.raises(PredictionsError, match="p_b_lines"):
        summarize_predictions(pred.drop(columns=["p_b_lines"]))


def test_compare_models_aligns_on_clip_id():
    a = predictions(strength=2.5, seed=1)
    b = a.copy()
    rng = np.random.default_rng(2)
    for p in PATTERNS:
        b[f"p_{p}"] = rng.random(len(b))  # an uninformative model
    shuffled = b.sample(frac=1.0, random_state=0)
    table = compare_models(a, shuffled, names=("luvnet", "random"))
    assert table["pattern"].tolist() == list(PATTERNS)
    assert (table["model_a"] == "luvnet").all()
    assert (table["p_value"] < 0.05).all() and (table["auc_diff"] > 0).all()
    keep = a["b_lines"].notna()
    _, _, z, p_value = ref.delong_paired_test(a.loc[keep, "b_lines"], a.loc[keep, "p_b_lines"], b.loc[keep, "p_b_lines"])
    assert table.loc[1, "z"] == pytest.approx(z, rel=1e-9) and table.loc[1, "p_value"] == pytest.approx(p_value, rel=1e-6)
    same = compare_models(a, a)
    assert (same["p_value"] == 1.0).all()
    with pytest.raises(PredictionsError, match="same clips"):
        compare_models(a, b.iloc[1:])
