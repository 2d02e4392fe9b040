"""The patient-level bootstrap: AUC replicates resampling PATIENTS with replacement.

Clips of one patient are correlated (same lung, same day, often several views), so a CI that
resamples clips is too narrow; resampling patients keeps each patient's clips together. A
resample that repeats a patient c times equals weighting their clips by c, so every replicate's
AUC is computed at once from per-score weight sums (``_weighted_auc``), without materialising
the resampled datasets. Seeded: the same inputs and seed give the same replicates (the patients,
numbered in the sorted order of their ids, are drawn with ``numpy.random.default_rng(seed).integers``,
one row of draws per replicate). ``lusv.stats.metrics`` builds its micro/macro CIs on these
replicates; ``paired_patient_bootstrap`` scores two models on the same resamples, for the CI of
a difference.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike


def _patient_draw_counts(n_patients: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_patients) multiplicities of patients drawn with replacement."""
    drawn = rng.integers(0, n_patients, size=(n_boot, n_patients))
    flat = drawn + (np.arange(n_boot) * n_patients)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n_patients).reshape(n_boot, n_patients)


def _weighted_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC per row of ``weights`` (B, N): each clip counted ``weight`` times (ties count 1/2).

    A bootstrap sample that repeats a patient c times is the same as weighting their clips by
    c, so this is the AUC of every resampled dataset at once, without materialising them.
    """
    n_boot = weights.shape[0]
    _, score_rank = np.unique(score, return_inverse=True)
    n_unique = int(score_rank.max()) + 1
    offsets = (np.arange(n_boot) * n_unique)[:, None]

    def per_unique_score(mask: np.ndarray) -> np.ndarray:
        idx = (offsets + score_rank[mask][None, :]).ravel()
        return np.bincount(idx, weights=weights[:, mask].ravel(), minlength=n_boot * n_unique).reshape(
            n_boot, n_unique
        )

    pos, neg = per_unique_score(y), per_unique_score(~y)
    neg_below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def patient_bootstrap(
    labels: np.ndarray,
    scores: np.ndarray,
    patient_ids: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    chunk_size: int = 250,
) -> dict[str, np.ndarray]:
    """Bootstrap AUC replicates resampling PATIENTS with replacement (clips stay together).

    ``labels``/``scores`` are (N, P). Returns {"per_pattern": (n_boot, P), "micro": (n_boot,),
    "macro": (n_boot,)} from the same draws; replicates lacking a class are NaN.
    Seeded: the same inputs and seed give the same replicates.
    """
    labels = np.asarray(labels, float)
    scores = np.asarray(scores, float)
    if labels.ndim == 1:
        labels, scores = labels[:, None], scores[:, None]
    _, patient_code = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    n_patients = int(patient_code.max()) + 1
    rng = np.random.default_rng(seed)
    n_clips, n_patterns = labels.shape
    labelled = ~np.isnan(labels)
    flat_clip = np.nonzero(labelled.ravel())[0] // n_patterns  # clip of each pooled pair
    per_pattern, micro = [], []
    for start in range(0, n_boot, chunk_size):
        counts = _patient_draw_counts(n_patients, min(chunk_size, n_boot - start), rng)
        clip_weights = counts[:, patient_code].astype(float)
        per_pattern.append(
            np.stack(
                [
                    _weighted_auc(labels[labelled[:, j], j] > 0.5, scores[labelled[:, j], j],
                                  clip_weights[:, labelled[:, j]])
                    for j in range(n_patterns)
                ],
                axis=1,
            )
        )
        micro.append(_weighted_auc(labels[labelled] > 0.5, scores[labelled], clip_weights[:, flat_clip]))
    per_pattern_arr = np.concatenate(per_pattern)
    with warnings.catch_warnings():  # replicates where no pattern has both classes -> NaN
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        macro = np.nanmean(per_pattern_arr, axis=1)
    return {"per_pattern": per_pattern_arr, "micro": np.concatenate(micro), "macro": macro}


def paired_patient_bootstrap(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    patient_ids: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Replicates of the AUC difference a - b, both models scored on the SAME patient resamples.

    ``labels`` (N, P) and the two models' ``scores_a``/``scores_b`` (N, P) on the same clips, in the
    same order. Returns {"per_pattern": (n_boot, P), "macro": (n_boot,), "macro_a": (n_boot,),
    "macro_b": (n_boot,)}: per-pattern and macro AUC differences (macro = the mean over the
    patterns with both classes in that resample, as ``patient_bootstrap``), and each model's macro.
    Pairing removes what the two models share (which patients happen to be drawn), so the CI of
    the difference is narrower than two separate CIs would suggest. Seeded like ``patient_bootstrap``.
    """
    labels = np.asarray(labels, float)
    scores_a, scores_b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    if labels.ndim == 1:
        labels, scores_a, scores_b = labels[:, None], scores_a[:, None], scores_b[:, None]
    if scores_a.shape != labels.shape or scores_b.shape != labels.shape:
        raise ValueError(f"labels {labels.shape} and both models' scores {scores_a.shape}, {scores_b.shape} "
                         "must have the same shape: a paired bootstrap needs both models on the same clips")
    n_patterns = labels.shape[1]
    # One bootstrap over the two models side by side: every replicate draws its patients once for both.
    both = patient_bootstrap(np.hstack([labels, labels]), np.hstack([scores_a, scores_b]), patient_ids, n_boot, seed)
    a, b = both["per_pattern"][:, :n_patterns], both["per_pattern"][:, n_patterns:]
    with warnings.catch_warnings():  # replicates where no pattern has both classes -> NaN
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        macro_a, macro_b = np.nanmean(a, axis=1), np.nanmean(b, axis=1)
    return {"per_pattern": a - b, "macro": macro_a - macro_b, "macro_a": macro_a, "macro_b": macro_b}


def percentile_ci(replicates: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, NaN replicates dropped."""
    finite = np.asarray(replicates, float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def patient_bootstrap_auc(
    y: ArrayLike, score: ArrayLike, patient_ids: ArrayLike, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile (1 - alpha) CI of one pattern's AUC from a seeded patient-level bootstrap."""
    replicates = patient_bootstrap(np.asarray(y, float), np.asarray(score, float), patient_ids, n_boot, seed)
    return percentile_ci(replicates["per_pattern"][:, 0], alpha)
