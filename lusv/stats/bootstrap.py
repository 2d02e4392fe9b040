"""The patient-level bootstrap: AUC replicates resampling PATIENTS with replacement.

Clips of one patient are correlated (same lung, same day, often several views), so a CI that
resamples clips is too narrow; resampling patients keeps each patient's clips together. A
resample that repeats a patient c times equals weighting their clips by c, so every replicate's
AUC is computed at once from per-score weight sums (``_weighted_auc``), without materialising
the resampled datasets. Seeded: the same inputs and seed give the same replicates.
``lusv.stats.metrics`` builds its micro/macro CIs on these replicates.
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
