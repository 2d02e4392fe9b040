"""The linear probe: logistic regression on mean-pooled frozen-encoder features, a reference row.

What does a head trained on frozen features add over the simplest classifier those features
allow? For each fold of a prepared study, with the runs' fold roles (test = fold f, validation =
fold f + 1, training = the rest) and the runs' feature cache (``lusv.data.features.run_feature_cache``:
the same encoder, weights, frames and size, so nothing is computed twice):

- each clip is the mean of its real frames' plain features;
- per pattern, an L2 logistic regression (scikit-learn's default strength, C = 1) on those raw
  features, fit on the training clips that label it (as the networks' weights see only them);
  a pattern whose training clips are all one class is predicted at that class's training rate;
- the fold's model predicts its validation, test, temporal-test and held-out clips.

Measured on the 78 POCUS fold clips (EfficientNet-Lite0, 16 x 224 x 224): standardising the
features first lowered the out-of-fold macro AUC (0.72 vs 0.78), and choosing C per pattern by
the log loss on the 16-clip validation folds was noisier still (0.61), so neither is done.

``linear_probe(prepared)`` writes ``oof/<key>.test.csv``, ``oof/<key>.val.csv`` (and
``oof/<key>.temporal_test.csv`` and ``.held_out.csv``, the mean of the fold models) in the predictions format of
``lusv.evaluation.out_of_fold``, so the result tables treat it as one more model key, and
``oof/<key>.json`` (the settings it was fitted with).

External validation (``lusv.evaluation.external``) validates the probe too: ``external_probe`` refits
each fold's regressions from the study's recorded folds and features (the same clips, features,
C and solver give the same coefficients: nothing is pickled or stored) and averages the fold
models' probabilities on the other dataset's features (``ensemble_mean``), as it does for the
networks.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lusv.config import params_for
from lusv.data.features import run_feature_cache
from lusv.data.folds import load_fold_data
from lusv.data.patterns import PATTERNS
from lusv.evaluation.out_of_fold import ensemble_mean
from lusv.infra.io import atomic_path, write_csv
from lusv.models.encoders import build_encoder
from lusv.models.roster import check_folds
from lusv.train import cut_into_windows, predictions_table, seed_everything

log = logging.getLogger(__name__)

C = 1.0
KEY = "linear_probe"


def mean_pooled(features: Any, clip_ids: list[str]) -> np.ndarray:
    """(N, F) float64: the mean of each clip's real frames' plain features from a FeatureCache."""
    stacked, lengths = features.load_many(clip_ids)
    mask = np.arange(stacked.shape[1])[None, :] < lengths[:, None]
    return (stacked.astype(np.float64) * mask[..., None]).sum(axis=1) / np.maximum(lengths, 1)[:, None]


def fit_pattern(x_train: np.ndarray, y_train: np.ndarray):
    """A probability function for one pattern fitted on labelled rows (a constant at the training
    rate when the training clips are all one class)."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y_train)) < 2:
        rate = float(y_train.mean()) if len(y_train) else 0.5
        return lambda x: np.full(len(x), rate)
    model = LogisticRegression(C=C, max_iter=5000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence notes on separable folds
        model.fit(x_train, y_train)
    return lambda x: model.predict_proba(x)[:, 1]


def fit_patterns(x_train: np.ndarray, train: pd.DataFrame) -> list:
    """One probability function per pattern, each fitted on the training rows that label it."""
    predictors = []
    for pattern in PATTERNS:
        y_train = train[pattern].to_numpy(float)
        known = ~np.isnan(y_train)
        predictors.append(fit_pattern(x_train[known], y_train[known].astype(int)))
    return predictors


def predict_patterns(predictors: list, x: np.ndarray) -> np.ndarray:
    """Probabilities (N, 4) of ``fit_patterns``' functions on features ``x`` (N, F)."""
    return np.stack([predict(x) for predict in predictors], axis=1) if len(x) else np.zeros((0, len(PATTERNS)))


def fit_fold(pooled: dict[str, np.ndarray], roles: dict[str, pd.DataFrame]) -> dict[str, np.ndarray]:
    """Probabilities (N, 4) of every role but training, the model fit on the training role."""
    def x(role: str) -> np.ndarray:
        ids = roles[role]["clip_id"]
        return np.stack([pooled[cid] for cid in ids]) if len(ids) else np.zeros((0, len(next(iter(pooled.values())))))

    predictors = fit_patterns(x("train"), roles["train"])
    return {role: predict_patterns(predictors, x(role)) for role in roles if role != "train"}


def _probe_encoder(prepared: Any, profile: str, overrides: dict):
    base = params_for(profile, **{**prepared.training_inputs(), **overrides})
    seed_everything(base.seed)  # a random-init encoder is then the one the runs built (same seed)
    return base, build_encoder(base.encoder, base.weights)


def study_folds(prepared: Any, profile: str, overrides: dict, encoder, folds: Any = None):
    """Each fold of the study (or of ``folds``) as the probe sees it: (fold, its roles' rows, clip id ->
    mean-pooled features), the features read from (or added once to) the runs' feature cache."""
    features = None
    for fold in check_folds(folds, prepared.num_folds) or range(prepared.num_folds):
        p = params_for(profile, **{**prepared.training_inputs(), **overrides, "fold": fold})
        data = load_fold_data(p, prepared.run_dir / "runs")
        if p.clip_policy == "windows":  # each role's videos -> their windows, as training sees them
            cut_into_windows(p, prepared.cache().videos, data)
        roles = data.roles()
        everyone = pd.concat(list(roles.values()), ignore_index=True)["clip_id"].tolist()
        if features is None:
            features = run_feature_cache(p, prepared.cache(), encoder)
            log.info("linear probe features: %s", features.build(everyone, views=0, progress=False))
        yield fold, roles, dict(zip(everyone, mean_pooled(features, everyone)))


def linear_probe(prepared: Any, key: str = KEY, *, profile: str | None = None, folds: Any = None,
                 **overrides: Any) -> dict[str, Path]:
    """Fit and predict the linear probe on every fold of ``prepared`` (a ``lusv.data.prepared.Prepared``)
    with the encoder of the study's profile (``profile``, when given, must agree with it); writes and
    returns ``oof/<key>.<split>.csv`` by split, and records its settings in ``oof/<key>.json``.
    ``folds``: only those (a list, or text "0,1"), as the study's subset runs train them."""
    profile = prepared.resolve_profile(profile)
    base, encoder = _probe_encoder(prepared, profile, overrides)
    parts: dict[str, list[pd.DataFrame]] = {"test": [], "val": [], "temporal_test": [], "held_out": []}
    for fold, roles, pooled in study_folds(prepared, profile, overrides, encoder, folds):
        for role, values in fit_fold(pooled, roles).items():
            parts[role].append(predictions_table(roles[role], values, fold))
    written = {}
    oof = prepared.run_dir / "oof"
    record = {"key": key, "profile": profile, "overrides": overrides, "encoder": base.encoder, "weights": base.weights,
              "C": C, "folds": check_folds(folds, prepared.num_folds)}
    with atomic_path(oof / f"{key}.json") as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    for split in ("test", "val"):
        written[split] = write_csv(oof / f"{key}.{split}.csv", pd.concat(parts[split], ignore_index=True))
    for split in ("temporal_test", "held_out"):  # predicted by every fold model: their mean
        if not parts[split] or not len(parts[split][0]):
            continue
        written[split] = write_csv(oof / f"{key}.{split}.csv", ensemble_mean(parts[split]))
    return written


def external_probe(prepared: Any, source: Any, table: pd.DataFrame, key: str = KEY) -> pd.DataFrame:
    """The probe's fold ensemble on another dataset (``table``'s clips, read from ``source``: its clip
    cache, or its windows under the study's windows policy): every fold's regressions refitted from
    the study's folds and features with the settings ``oof/<key>.json`` recorded (a study from before
    that record: the profile's encoder), applied to the same encoder's features of ``table``'s
    clips; returns ``table``'s id columns and the fold models' mean ``p_<pattern>``."""
    record_path = prepared.run_dir / "oof" / f"{key}.json"
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    overrides, folds = record.get("overrides", {}), record.get("folds")
    profile = prepared.resolve_profile(None)
    base, encoder = _probe_encoder(prepared, profile, overrides)
    ids = table["clip_id"].tolist()
    features = run_feature_cache(base, source, encoder)
    log.info("linear probe features of the other dataset: %s", features.build(ids, views=0, progress=False))
    x_other = mean_pooled(features, ids)
    per_fold = []
    for _, roles, pooled in study_folds(prepared, profile, overrides, encoder, folds):
        x_train = np.stack([pooled[cid] for cid in roles["train"]["clip_id"]])
        frame = table[[c for c in ("clip_id", "video_id", "patient_id") if c in table]].copy()
        probabilities = predict_patterns(fit_patterns(x_train, roles["train"]), x_other)
        for i, pattern in enumerate(PATTERNS):
            frame[f"p_{pattern}"] = probabilities[:, i]
        per_fold.append(frame)
    return ensemble_mean(per_fold)
