"""Slow textbook statistics, written independently of lusv.stats.metrics, for expected values in tests.

Everything here follows the papers' definitions with explicit loops over pairs of clips and
plain Python floats, so that an expected value never comes from the function under test:

* DeLong, DeLong & Clarke-Pearson (1988): placement values (structural components)
  V10(x_i) = mean_j psi(x_i, y_j) for each positive x_i and V01(y_j) = mean_i psi(x_i, y_j)
  for each negative y_j, psi = 1 / 0.5 / 0 for x > y / x = y / x < y; AUC = mean V10;
  var(AUC) = S10 / m + S01 / n with S the sample variances (denominator m - 1, n - 1).
* Logit CI: Wald interval on logit(AUC) with the delta-method standard error
  se / (AUC (1 - AUC)), transformed back with the logistic function.
* Youden's J by brute force over the observed scores, ``score >= t`` positive, ties in J
  (within 1e-9) going to the highest threshold.
* The patient bootstrap the slow way: every replicate's resampled table is materialised (each
  drawn patient's clips copied in), its AUCs computed by the Mann-Whitney rank formula, the
  interval taken by ``numpy.percentile``. Only the draws are shared with lusv, as its documented
  seeded stream (patients numbered in the sorted order of their ids, replicate b drawing
  ``default_rng(seed).integers(0, n_patients, (n_boot, n_patients))[b]``), so that the two give
  the same replicates and any difference after the draw is a bug.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def _split(y, score):
    pairs = [(float(s), float(t)) for s, t in zip(score, y) if t == t]  # t == t drops NaN labels
    return [s for s, t in pairs if t == 1], [s for s, t in pairs if t == 0]


def psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def placement_values(y, score) -> tuple[list[float], list[float]]:
    """(V10 of each positive, V01 of each negative) by explicit pair loops."""
    pos, neg = _split(y, score)
    v10 = [sum(psi(x, v) for v in neg) / len(neg) for x in pos]
    v01 = [sum(psi(x, v) for x in pos) / len(pos) for v in neg]
    return v10, v01


def _mean(values):
    return sum(values) / len(values)


def sample_cov(u, v) -> float:
    mu, mv = _mean(u), _mean(v)
    return sum((a - mu) * (b - mv) for a, b in zip(u, v)) / (len(u) - 1)


def delong_auc_var(y, score) -> tuple[float, float]:
    """(AUC, DeLong variance of the AUC)."""
    v10, v01 = placement_values(y, score)
    return _mean(v10), sample_cov(v10, v10) / len(v10) + sample_cov(v01, v01) / len(v01)


def delong_ci(y, score, alpha: float = 0.05, method: str = "logit") -> tuple[float, float, float]:
    """(AUC, low, high): the two-sided (1 - alpha) DeLong interval, plain (clipped to [0, 1]) or logit."""
    auc, var = delong_auc_var(y, score)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    se = math.sqrt(var)
    if method == "plain":
        return auc, max(auc - z * se, 0.0), min(auc + z * se, 1.0)
    centre = math.log(auc / (1 - auc))
    half = z * se / (auc * (1 - auc))
    return auc, 1 / (1 + math.exp(-(centre - half))), 1 / (1 + math.exp(-(centre + half)))


def delong_paired_test(y, score_a, score_b) -> tuple[float, float, float, float]:
    """(AUC a, AUC b, z, two-sided p) of the paired DeLong test."""
    a10, a01 = placement_values(y, score_a)
    b10, b01 = placement_values(y, score_b)
    m, n = len(a10), len(a01)
    var = (sample_cov(a10, a10) / m + sample_cov(a01, a01) / n + sample_cov(b10, b10) / m
           + sample_cov(b01, b01) / n - 2 * (sample_cov(a10, b10) / m + sample_cov(a01, b01) / n))
    z = (_mean(a10) - _mean(b10)) / math.sqrt(var)
    return _mean(a10), _mean(b10), z, 2 * (1 - NormalDist().cdf(abs(z)))


def youden_brute_force(y, score) -> float:
    """The observed score maximising sensitivity + specificity - 1; ties to the highest score."""
    pos, neg = _split(y, score)
    best_j, best_t = -math.inf, math.nan
    for t in sorted(set(pos + neg), reverse=True):
        j = sum(s >= t for s in pos) / len(pos) + sum(s < t for s in neg) / len(neg) - 1
        if j > best_j + 1e-9:
            best_j, best_t = j, t
    return best_t


def confusion(y, score, threshold: float) -> tuple[int, int, int, int]:
    """(tp, fn, tn, fp) with ``score >= threshold`` positive."""
    pos, neg = _split(y, score)
    tp = sum(s >= threshold for s in pos)
    tn = sum(s < threshold for s in neg)
    return tp, len(pos) - tp, tn, len(neg) - tn


def rank_auc(y, score) -> float:
    """AUC as the Mann-Whitney U of the positives' mid-ranks, U / (n1 n0) (NaN labels dropped,
    NaN when a class is missing): the textbook formula, fast enough for thousands of replicates."""
    from scipy.stats import rankdata

    y, score = np.asarray(y, float), np.asarray(score, float)
    keep = ~np.isnan(y)
    y, score = y[keep] == 1, score[keep]
    n1, n0 = int(y.sum()), int((~y).sum())
    if not n1 or not n0:
        return math.nan
    return float((rankdata(score)[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def patient_bootstrap_cis(labels, scores, patient_ids, n_boot: int, seed: int, alpha: float = 0.05) -> dict:
    """{pattern index | "micro" | "macro": (low, high)}: percentile intervals of AUC replicates
    over patient resamples, each resample built as a table; a replicate without both classes is
    dropped (per pattern; macro = the mean of the defined patterns of a replicate)."""
    labels, scores = np.asarray(labels, float), np.asarray(scores, float)
    patients = np.asarray(patient_ids).astype(str)
    order = sorted(set(patients.tolist()))
    rows_of = [np.flatnonzero(patients == patient) for patient in order]
    draws = np.random.default_rng(seed).integers(0, len(order), size=(n_boot, len(order)))
    replicates: dict = {j: [] for j in range(labels.shape[1])} | {"micro": [], "macro": []}
    for draw in draws:
        rows = np.concatenate([rows_of[patient] for patient in draw])
        y, s = labels[rows], scores[rows]
        per_pattern = [rank_auc(y[:, j], s[:, j]) for j in range(labels.shape[1])]
        for j, auc in enumerate(per_pattern):
            replicates[j].append(auc)
        defined = [auc for auc in per_pattern if not math.isnan(auc)]
        replicates["macro"].append(sum(defined) / len(defined) if defined else math.nan)
        replicates["micro"].append(rank_auc(y.ravel(), s.ravel()))
    out = {}
    for key, values in replicates.items():
        finite = [v for v in values if not math.isnan(v)]
        out[key] = tuple(float(v) for v in np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)]))
    return out
