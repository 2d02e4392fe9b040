"""Evaluation metrics: ROC AUC with confidence intervals, DeLong tests, Youden thresholds.

Conventions used throughout:

* Labels are float 0/1 with NaN = missing; a missing label drops that (clip, pattern) pair only.
* A score ``s`` is called positive at threshold ``t`` when ``s >= t`` (as sklearn's ``roc_curve``).
* An AUC is NaN when its pairs lack either class; no function raises for that.

Predictions tables follow the contract: ``clip_id, patient_id, fold``, one probability column
``p_<pattern>`` and one label column ``<pattern>`` per pattern; a table that breaks it raises
``PredictionsError``. Micro/macro CIs resample patients (``lusv.stats.bootstrap``).
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from lusv.stats.bootstrap import (  # noqa: F401 - part of the metrics API
    paired_patient_bootstrap,
    patient_bootstrap,
    patient_bootstrap_auc,
    percentile_ci,
)
from lusv.data.patterns import PATTERNS
from lusv.errors import PredictionsError

logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | Sequence[float] | pd.Series


class AucCI(NamedTuple):
    auc: float
    low: float
    high: float


class DelongTest(NamedTuple):
    auc_a: float
    auc_b: float
    z: float
    p_value: float


class MacroDifference(NamedTuple):
    """Macro AUC of two models on the same clips, their difference a - b with its paired
    patient-bootstrap CI, and the paired DeLong p-value of each pattern (NaN where undefined)."""

    macro_a: float
    macro_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_values: dict


class ThresholdCounts(NamedTuple):
    threshold: float
    sensitivity: float
    specificity: float
    tp: int
    fn: int
    tn: int
    fp: int


# ----------------------------------------------------------------------------- plain AUCs


def _labelled(y: ArrayLike, *scores: ArrayLike) -> tuple[np.ndarray, list[np.ndarray]]:
    """Boolean labels and matching scores with NaN-labelled entries dropped."""
    y = np.asarray(y, dtype=float).ravel()
    scores = [np.asarray(s, dtype=float).ravel() for s in scores]
    for s in scores:
        if s.shape != y.shape:
            raise ValueError(f"labels have {y.size} entries but scores have {s.size}")
    keep = ~np.isnan(y)
    if any(np.isnan(s[keep]).any() for s in scores):
        raise PredictionsError("scores contain NaN for labelled clips: every labelled clip needs a prediction")
    return y[keep] > 0.5, [s[keep] for s in scores]


def roc_auc(y: ArrayLike, score: ArrayLike) -> float:
    """ROC AUC of one pattern, ignoring NaN labels; NaN if only one class is present."""
    y, (score,) = _labelled(y, score)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, score))


def per_pattern_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC of each column of ``labels``/``scores`` (N, P) -> (P,), NaN labels ignored."""
    labels, scores = np.asarray(labels, float), np.asarray(scores, float)
    return np.array([roc_auc(labels[:, j], scores[:, j]) for j in range(labels.shape[1])])


def micro_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Micro AUC: one ROC over all labelled (clip, pattern) pairs pooled together."""
    return roc_auc(np.asarray(labels, float).ravel(), np.asarray(scores, float).ravel())


def macro_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Macro AUC: the unweighted mean of the per-pattern AUCs over the patterns whose
    labelled clips contain both classes (patterns with an undefined AUC are left out)."""
    aucs = per_pattern_auc(labels, scores)
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


# ----------------------------------------------------------------------------- DeLong


def _delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fast DeLong (Sun & Xu 2014): AUCs (k,) and their covariance (k, k) for k score rows.

    Midranks (``rankdata``, average ties) replace the O(m n) pair comparisons: with m positives
    and n negatives, the structural components are V10 = (rank among all - rank among
    positives) / n for each positive and V01 = 1 - (rank among all - rank among negatives) / m
    for each negative; cov(AUC) = S10 / m + S01 / n with S the sample covariances.
    """
    positives, negatives = scores[:, y], scores[:, ~y]
    m, n = positives.shape[1], negatives.shape[1]
    if m == 0 or n == 0:
        k = scores.shape[0]
        return np.full(k, np.nan), np.full((k, k), np.nan)
    rank_pos = stats.rankdata(positives, axis=1)
    rank_neg = stats.rankdata(negatives, axis=1)
    rank_all = stats.rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    aucs = rank_all[:, :m].sum(axis=1) / (m * n) - (m + 1) / (2 * n)
    v10 = (rank_all[:, :m] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m
    if m < 2 or n < 2:  # a sample covariance needs two members of each class
        return aucs, np.full((len(aucs), len(aucs)), np.nan)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n


def delong_auc_variance(y: ArrayLike, score: ArrayLike) -> tuple[float, float]:
    """(AUC, DeLong variance of the AUC) for one pattern; NaN labels ignored."""
    y, (score,) = _labelled(y, score)
    aucs, cov = _delong(y, score[None, :])
    return float(aucs[0]), float(cov[0, 0])


def delong_ci(y: ArrayLike, score: ArrayLike, alpha: float = 0.05, method: str = "logit") -> AucCI:
    """AUC with a (1 - alpha) DeLong confidence interval.

    ``method="logit"`` (default): Wald interval on logit(AUC) with the delta-method standard
    error se / (AUC (1 - AUC)), transformed back — it stays inside (0, 1) and is not
    symmetric near 1 where LUS AUCs live. ``method="plain"``: AUC +- z se, clipped to [0, 1].
    An AUC of exactly 0 or 1 has DeLong variance 0 and gets the interval [AUC, AUC].
    """
    if method not in ("logit", "plain"):
        raise ValueError(f"method={method!r}: use 'logit' or 'plain'")
    auc, var = delong_auc_variance(y, score)
    if not np.isfinite(var):
        return AucCI(auc, float("nan"), float("nan"))
    z = stats.norm.ppf(1 - alpha / 2)
    se = np.sqrt(max(var, 0.0))
    if se == 0.0 or auc in (0.0, 1.0):
        return AucCI(auc, auc, auc)
    if method == "plain":
        return AucCI(auc, float(np.clip(auc - z * se, 0, 1)), float(np.clip(auc + z * se, 0, 1)))
    centre = np.log(auc / (1 - auc))
    half = z * se / (auc * (1 - auc))
    low, high = stats.logistic.cdf([centre - half, centre + half])
    return AucCI(auc, float(low), float(high))


def delong_test(y: ArrayLike, score_a: ArrayLike, score_b: ArrayLike) -> DelongTest:
    """Paired two-sided DeLong test of AUC(a) = AUC(b) for two models scored on the same clips.

    z = (AUC_a - AUC_b) / sqrt(var_a + var_b - 2 cov_ab). Identical AUCs with zero variance
    of the difference (e.g. identical predictors) give z = 0, p = 1.
    """
    y, (score_a, score_b) = _labelled(y, score_a, score_b)
    aucs, cov = _delong(y, np.vstack([score_a, score_b]))
    diff = aucs[0] - aucs[1]
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if not np.isfinite(var) or not np.isfinite(diff):
        return DelongTest(float(aucs[0]), float(aucs[1]), float("nan"), float("nan"))
    if var <= 1e-15:
        z = 0.0 if abs(diff) < 1e-12 else float(np.sign(diff) * np.inf)
    else:
        z = float(diff / np.sqrt(var))
    return DelongTest(float(aucs[0]), float(aucs[1]), z, float(2 * stats.norm.sf(abs(z))))


# ----------------------------------------------------------------------------- thresholds


def youden_threshold(y: ArrayLike, score: ArrayLike) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (NaN labels ignored).

    Returns one of the observed scores, never an infinite one; predictions ``score >= threshold``
    are positive, so the clip whose score equals the threshold is called positive. Ties in J go
    to the highest threshold (the more specific one). Choose it on validation predictions,
    apply it to test.

    The candidates are the observed scores only: ``roc_curve``'s extra first point (threshold
    +inf, nothing called positive) is not one. The lowest score (everything positive) has
    J = 0, so the best J is never negative. When no score separates the classes better than
    chance (best J = 0, e.g. scores that rank every negative above every positive), the highest
    observed score with J = 0 is returned all the same and a warning is logged: that threshold
    carries no information. NaN only when the labelled clips lack one of the classes.
    """
    y, (score,) = _labelled(y, score)
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, thresholds = roc_curve(y, score, drop_intermediate=False)
    # thresholds are decreasing; index 0 is sklearn's sentinel above every score (+inf).
    j = (tpr - fpr)[1:]
    # Equal Js can differ in their last bit (1 - 2/3 != 2/3 - 1/3 in floats), so ties are taken
    # within 1e-9, far below 1 / (positives x negatives), the least real gap between two Js.
    best = int(np.flatnonzero(j >= j.max() - 1e-9)[0])  # first = highest threshold among ties
    if j[best] <= 0:
        logger.warning(
            "Youden's J is at most 0 at every threshold (%d positives, %d negatives): the scores do not "
            "separate the classes; returning the highest score with J = 0 (%.4g)",
            int(y.sum()), int((~y).sum()), thresholds[best + 1],
        )
    return float(thresholds[best + 1])


def sensitivity_specificity(y: ArrayLike, score: ArrayLike, threshold: float) -> ThresholdCounts:
    """Confusion counts, sensitivity and specificity with ``score >= threshold`` positive."""
    y, (score,) = _labelled(y, score)
    predicted = score >= threshold
    tp = int(np.sum(predicted & y))
    fn = int(np.sum(~predicted & y))
    tn = int(np.sum(~predicted & ~y))
    fp = int(np.sum(predicted & ~y))
    sensitivity = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    return ThresholdCounts(float(threshold), sensitivity, specificity, tp, fn, tn, fp)


# ----------------------------------------------------------------------------- prediction tables


def prediction_arrays(pred_df: pd.DataFrame, patterns: Sequence[str] = PATTERNS) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N, P), scores (N, P)) from a predictions table; PredictionsError names missing columns."""
    needed = [*patterns, *(f"p_{p}" for p in patterns)]
    missing = [c for c in needed if c not in pred_df.columns]
    if missing:
        raise PredictionsError(
            f"predictions table lacks column(s) {missing}: it needs a label column <pattern> and a "
            "probability column p_<pattern> per pattern (see the predictions CSV contract)"
        )
    labels = pred_df[list(patterns)].to_numpy(dtype=float)
    scores = pred_df[[f"p_{p}" for p in patterns]].to_numpy(dtype=float)
    return labels, scores


def summarize_predictions(
    pred_df: pd.DataFrame,
    patterns: Sequence[str] = PATTERNS,
    ci: str = "delong",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Tidy AUC table: one row per pattern, then ``micro`` and ``macro``.

    Columns: pattern, auc, ci_low, ci_high, n_pos, n_neg, ci_method.
    ``ci="delong"``: per-pattern CIs from DeLong (logit interval, see ``delong_ci``);
    ``ci="bootstrap"``: per-pattern CIs from the patient bootstrap. Micro and macro CIs always
    come from the patient bootstrap (DeLong does not cover the dependence between patterns of a
    clip), computed when ``patient_id`` is present and ``n_boot > 0``, else NaN.
    n_pos/n_neg of micro and macro count labelled (clip, pattern) pairs.
    """
    if ci not in ("delong", "bootstrap"):
        raise ValueError(f"ci={ci!r}: use 'delong' or 'bootstrap'")
    labels, scores = prediction_arrays(pred_df, patterns)
    replicates = None
    if n_boot > 0 and "patient_id" in pred_df.columns:
        replicates = patient_bootstrap(labels, scores, pred_df["patient_id"].to_numpy(), n_boot, seed)
    rows = []
    for j, pattern in enumerate(patterns):
        y = labels[:, j]
        if ci == "delong":
            auc, low, high = delong_ci(y, scores[:, j], alpha=alpha)
            method = "delong-logit"
        else:
            auc = roc_auc(y, scores[:, j])
            low, high = percentile_ci(replicates["per_pattern"][:, j], alpha) if replicates is not None else (np.nan, np.nan)
            method = "patient-bootstrap" if replicates is not None else "none"
        rows.append((pattern, auc, low, high, int(np.sum(y == 1)), int(np.sum(y == 0)), method))
    n_pos, n_neg = int(np.sum(labels == 1)), int(np.sum(labels == 0))
    for name, value in (("micro", micro_auc(labels, scores)), ("macro", macro_auc(labels, scores))):
        low, high = percentile_ci(replicates[name], alpha) if replicates is not None else (np.nan, np.nan)
        rows.append((name, value, low, high, n_pos, n_neg, "patient-bootstrap" if replicates is not None else "none"))
    return pd.DataFrame(rows, columns=["pattern", "auc", "ci_low", "ci_high", "n_pos", "n_neg", "ci_method"])


def _aligned(pred_a: pd.DataFrame, pred_b: pd.DataFrame, names: tuple[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    for name, pred in zip(names, (pred_a, pred_b)):
        if "clip_id" not in pred.columns or pred["clip_id"].duplicated().any():
            raise PredictionsError(f"predictions of {name} need a unique clip_id column")
    ids_a, ids_b = set(pred_a["clip_id"].astype(str)), set(pred_b["clip_id"].astype(str))
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        raise PredictionsError(
            f"a paired comparison needs the same clips: {len(only_a)} only in {names[0]} "
            f"(e.g. {only_a[:5]}), {len(only_b)} only in {names[1]} (e.g. {only_b[:5]}); "
            "compare predictions made on the same split"
        )
    a = pred_a.assign(clip_id=pred_a["clip_id"].astype(str)).set_index("clip_id").sort_index()
    b = pred_b.assign(clip_id=pred_b["clip_id"].astype(str)).set_index("clip_id").sort_index()
    return a, b


def compare_models(
    pred_a: pd.DataFrame,
    pred_b: pd.DataFrame,
    patterns: Sequence[str] = PATTERNS,
    names: tuple[str, str] = ("a", "b"),
) -> pd.DataFrame:
    """Paired DeLong test per pattern of two models' predictions on the same clips.

    Rows are aligned on clip_id (PredictionsError if the clip sets or labels differ).
    Columns: pattern, model_a, model_b, auc_a, auc_b, auc_diff (a - b), z, p_value, n_pos, n_neg.
    """
    a, b = _aligned(pred_a, pred_b, names)
    labels_a, scores_a = prediction_arrays(a, patterns)
    labels_b, scores_b = prediction_arrays(b, patterns)
    if not np.array_equal(labels_a, labels_b, equal_nan=True):
        raise PredictionsError(
            f"labels of {names[0]} and {names[1]} differ for the same clips: both must be "
            "predictions on the same labels table"
        )
    rows = []
    for j, pattern in enumerate(patterns):
        test = delong_test(labels_a[:, j], scores_a[:, j], scores_b[:, j])
        y = labels_a[:, j]
        rows.append(
            (pattern, names[0], names[1], test.auc_a, test.auc_b, test.auc_a - test.auc_b, test.z,
             test.p_value, int(np.sum(y == 1)), int(np.sum(y == 0)))
        )
    columns = ["pattern", "model_a", "model_b", "auc_a", "auc_b", "auc_diff", "z", "p_value", "n_pos", "n_neg"]
    return pd.DataFrame(rows, columns=columns)


def compare_macro(
    pred_a: pd.DataFrame,
    pred_b: pd.DataFrame,
    patterns: Sequence[str] = PATTERNS,
    names: tuple[str, str] = ("a", "b"),
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> MacroDifference:
    """Is model a better than model b? Macro AUC difference a - b with a (1 - alpha) percentile CI
    from the paired patient bootstrap (both models scored on the same resamples of patients,
    ``lusv.stats.bootstrap.paired_patient_bootstrap``) and the per-pattern paired DeLong p-values
    (``compare_models``). Rows are aligned on clip_id; the tables need ``patient_id``."""
    a, b = _aligned(pred_a, pred_b, names)
    if "patient_id" not in a.columns:
        raise PredictionsError(f"predictions of {names[0]} lack patient_id: the bootstrap resamples patients")
    labels, scores_a = prediction_arrays(a, patterns)
    _, scores_b = prediction_arrays(b, patterns)
    tests = compare_models(pred_a, pred_b, patterns, names)  # also refuses differing labels
    replicates = paired_patient_bootstrap(labels, scores_a, scores_b, a["patient_id"].to_numpy(), n_boot, seed)
    low, high = percentile_ci(replicates["macro"], alpha)
    macro_a, macro_b = macro_auc(labels, scores_a), macro_auc(labels, scores_b)
    return MacroDifference(macro_a, macro_b, macro_a - macro_b, low, high,
                           dict(zip(tests["pattern"], tests["p_value"].astype(float))))
