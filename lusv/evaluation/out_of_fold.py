"""Out-of-fold predictions of a study run, and the results made from them.

``out_of_fold`` stacks the test-fold predictions of every fold of one model configuration: each
development clip predicted exactly once, by a model that never saw its patient. A study run
keeps them under ``<run_dir>/oof/``::

    <key>.test.csv            out-of-fold test predictions (each development clip once)
    <key>.val.csv             each fold model's validation-fold predictions (for thresholds)
                              (both: fold = the clip's fold, model_fold = the fold of the model
                              that predicted it)
    <key>.temporal_test.csv   fold-ensemble predictions on the temporally separated set
    <key>.held_out.csv        fold-ensemble predictions on the held-out test set (patients set
                              apart before the folds, lusv.data.splits.held_out_split)

Reading them back (``load_out_of_fold``) checks them against their fold runs (``oof_mismatch``):
a run unfinished now, or predictions that are no longer the ones a file was made from (a fold
retrained since), refuse the file in one line rather than mix two trainings in one number.
``results`` turns them into the result tables and ROC figures (``lusv.report.tables``), over the
models whose out-of-fold predictions cover the reference's clips (``comparable_keys``: a model
trained on other folds, ``run_all.sh --folds``, is left out with a warning, not compared on other clips);
``out_of_fold_attention`` reruns each fold's model on its test clips to keep the attention.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lusv.data.patterns import PATTERNS
from lusv.data.prepared import Prepared
from lusv.errors import ConfigError, LusvError
from lusv.evaluation.video_level import level_summaries, level_table
from lusv.inference import load_trained, predict
from lusv.infra.io import read_table, write_csv
from lusv.paths import in_repository
from lusv.report.paper import paper_way, table4_beside_paper
from lusv.report.sweeps import paper_comparisons, sweep_figure, sweep_tables
from lusv.report.tables import results_tables, roc_figure, save_figure, save_tables
from lusv.train import unfinished_reason

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "temporal_test", "held_out")
# The test sets every fold model predicts (set apart before the folds); results show each after
# the cross-validated one, the held-out set first (the paper's order).
ENSEMBLE_SPLITS = ("held_out", "temporal_test")


def write_out_of_fold(study_dir: Path, key: str, run_dirs: list[Path], temporal_test: bool,
                      held_out: bool = False) -> None:
    """Write ``oof/<key>.{test,val}.csv`` (and ``.temporal_test.csv``, ``.held_out.csv``) of one
    model configuration; a set-apart split the study does not have (any more) loses its file."""
    oof_dir = study_dir / "oof"
    write_csv(oof_dir / f"{key}.test.csv", out_of_fold(run_dirs, "test"))
    write_csv(oof_dir / f"{key}.val.csv", out_of_fold(run_dirs, "val"))
    for split, present in (("temporal_test", temporal_test), ("held_out", held_out)):
        if present:
            write_csv(oof_dir / f"{key}.{split}.csv", fold_ensemble(run_dirs, split))
        else:
            (oof_dir / f"{key}.{split}.csv").unlink(missing_ok=True)


def out_of_fold(run_dirs: list[Path], split: str = "test") -> pd.DataFrame:
    """Stack one split's predictions of every fold; refuses a clip predicted twice.

    With test = fold f and validation = fold f+1, each development clip is in exactly one
    fold's test set and exactly one fold's validation set, so both stacks are clean.
    ``model_fold`` (after ``fold``) says which fold model predicted each clip.
    """
    frames = [_read_predictions(Path(d) / f"predictions_{split}.csv") for d in run_dirs]
    stacked = pd.concat(frames, ignore_index=True)
    duplicated = stacked["clip_id"][stacked["clip_id"].duplicated()]
    if len(duplicated):
        raise LusvError(f"clips in the {split} set of more than one fold: {sorted(duplicated)[:5]} — folds overlap")
    return stacked


def fold_ensemble(run_dirs: list[Path], split: str = "temporal_test") -> pd.DataFrame:
    """The fold ensemble's predictions on a set every fold model predicted (``ensemble_mean``)."""
    return ensemble_mean([_read_predictions(Path(d) / f"predictions_{split}.csv") for d in run_dirs])


def ensemble_mean(per_model: list[pd.DataFrame]) -> pd.DataFrame:
    """The fold ensemble: per clip, the mean of the models' probabilities (``p_<pattern>``) beside
    the first model's other columns (ids, labels), without the per-model ``fold`` and ``model_fold``.

    The one place lusv averages fold models: the study's set-apart test sets, the linear probe's,
    and external validation all score a clip this way."""
    stacked = pd.concat(per_model, ignore_index=True)
    probability_columns = [c for c in stacked.columns if c.startswith("p_")]
    keep_first = [c for c in stacked.columns if c not in probability_columns and c not in ("fold", "model_fold")]
    firsts = stacked.groupby("clip_id", sort=False)[keep_first].first().reset_index(drop=True)
    means = stacked.groupby("clip_id", sort=False)[probability_columns].mean().reset_index(drop=True)
    return pd.concat([firsts, means], axis=1)


def fold_runs(study_dir: Path, key: str) -> list[Path]:
    """The fold run folders of model ``key``: ``runs/<key>-fold<f>`` for each fold of the study
    (prepared.json), else every such folder there is (a run folder left from a study prepared with
    more folds is not one of them)."""
    runs = Path(study_dir) / "runs"
    prepared = Prepared.recorded(study_dir)
    if prepared is not None:
        return [runs / f"{key}-fold{fold}" for fold in range(prepared.num_folds)]
    numbered = re.compile(rf"{re.escape(key)}-fold(\d+)")
    found = [(int(m[1]), d) for d in runs.glob(f"{key}-fold*") if (m := numbered.fullmatch(d.name))]
    return [d for _, d in sorted(found)]


def oof_mismatch(study_dir: Path, key: str, split: str, table: pd.DataFrame) -> str | None:
    """Why ``table``, the study's ``oof/<key>.<split>.csv``, cannot be trusted now, else None: one of
    its fold runs is unfinished (running, interrupted, failed, gone), or the runs' predictions are no
    longer the ones it was made from (a fold retrained since). A model without fold runs (the linear
    probe) has nothing to compare with."""
    dirs = fold_runs(study_dir, key)
    if not any(d.is_dir() for d in dirs):
        return None
    made_from = _folds_made_from(study_dir, key, table)
    if made_from is not None:  # a subset of folds (run_all.sh --folds): only the runs the file was made from
        dirs = [d for d in dirs if d.name.rsplit("-fold", 1)[1] in made_from]
    unfinished = [f"{d.name} {why}" for d in dirs if (why := unfinished_reason(d))]
    if unfinished:
        return "its fold run " + "; ".join(unfinished)
    expected = out_of_fold(dirs, split) if split in ("test", "val") else fold_ensemble(dirs, split)
    columns = [c for c in expected.columns if c.startswith("p_")]
    ordered = [frame.sort_values("clip_id", kind="stable").reset_index(drop=True) for frame in (table, expected)]
    same = (list(ordered[0]["clip_id"]) == list(ordered[1]["clip_id"]) and set(columns) <= set(table.columns)
            and np.allclose(ordered[0][columns].to_numpy(float), ordered[1][columns].to_numpy(float), rtol=0, atol=1e-9))
    return None if same else "its fold runs' predictions differ from it (a fold was retrained since it was written)"


def _folds_made_from(study_dir: Path, key: str, table: pd.DataFrame) -> set[str] | None:
    """The fold numbers (as text) of the fold models a prediction table was made from: its
    ``model_fold`` column (test, val), else that of the model's test table (the fold ensembles of
    the set-apart sets); None when neither says."""
    if "model_fold" not in table:
        sibling = Path(study_dir) / "oof" / f"{key}.test.csv"
        table = read_table(sibling) if sibling.is_file() else table
    if "model_fold" not in table or not len(table):
        return None
    return {str(int(fold)) for fold in table["model_fold"].unique()}


def _checked(study_dir: Path, key: str, split: str, path: Path) -> pd.DataFrame:
    """The oof table at ``path``, refused in one line when ``oof_mismatch`` finds a reason."""
    table = _read_predictions(path)
    why = oof_mismatch(study_dir, key, split, table)
    if why:
        raise LusvError(f"{path} cannot be used: {why}; let that run finish or rerun the model's training "
                        "(notebooks 02-04, study.train_folds) to rewrite it")
    return table


def _read_predictions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise LusvError(f"{path} is missing: that training run did not finish")
    return read_table(path)


def load_out_of_fold(run_dir: str | Path, split: str = "test", keys: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """The ``split`` prediction tables of a study run keyed by model configuration.

    ``keys`` picks and orders them (the order of every table and legend); default: all, sorted.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    oof_dir = in_repository(run_dir) / "oof"
    found = {path.name[: -len(f".{split}.csv")]: path for path in oof_dir.glob(f"*.{split}.csv")}
    if keys is None:
        keys = sorted(found)
    missing = [key for key in keys if key not in found]
    if missing:
        raise LusvError(f"no {split} predictions for {missing} in {oof_dir}: train those models first")
    return {key: _checked(oof_dir.parent, key, split, found[key]) for key in keys}



def trained_runs(study_dir: str | Path, key: str) -> list[Path]:
    """The finished runs of ``key`` in a study (``runs/<key>-fold<f>`` with its test predictions), by fold."""
    runs = in_repository(study_dir) / "runs"
    pattern = re.compile(re.escape(key) + r"-fold(\d+)")
    found = [(int(m.group(1)), d) for d in runs.glob(f"{key}-fold*") if (m := pattern.fullmatch(d.name))]
    return [d for _, d in sorted(found) if (d / "predictions_test.csv").is_file()]


def comparable_keys(run_dir: str | Path, keys: list[str] | None = None, reference: str = "luvnet") -> list[str]:
    """``keys`` (None: every model with out-of-fold predictions, sorted) whose test predictions
    cover the same clips as ``reference``'s, so that every table compares models on the same clips.
    A model trained on other folds (a subset run, ``--folds``) is left out with a warning saying
    which folds each has; without the reference's predictions, ``keys`` are returned as they are."""
    oof_dir = in_repository(run_dir) / "oof"
    keys = sorted(p.name[: -len(".test.csv")] for p in oof_dir.glob("*.test.csv")) if keys is None else list(keys)
    if reference not in keys or not (oof_dir / f"{reference}.test.csv").is_file():
        return keys
    folds = {key: read_table(oof_dir / f"{key}.test.csv")[["clip_id", "model_fold"]]
             for key in keys if (oof_dir / f"{key}.test.csv").is_file()}
    clips = set(folds[reference]["clip_id"])
    kept = [key for key in keys if key not in folds or set(folds[key]["clip_id"]) == clips]
    for key in sorted(set(keys) - set(kept)):
        log.warning("%s is left out of the comparisons: its out-of-fold predictions come from fold(s) %s, %s's from "
                    "fold(s) %s (train it on the same folds to compare it)", key, _folds(folds[key]), reference,
                    _folds(folds[reference]))
    return kept


def _folds(table: pd.DataFrame) -> str:
    return ", ".join(str(int(f)) for f in sorted(table["model_fold"].unique()))


@dataclass
class SplitResults:
    """The tables and ROC figure of one held-out set (cross-validated test or temporal test)."""

    tables: dict
    roc: object  # matplotlib Figure
    paths: list


def results(
    run_dir: str | Path, reference: str = "luvnet", keys: list[str] | None = None, n_boot: int = 1000
) -> dict[str, SplitResults]:
    """Result tables and ROC figures of the trained models of a study run, saved and returned.

    Writes tables/<split>_<table>.csv for the cross-validated ("test") and, where present, the
    held-out ("held_out") and temporally separated ("temporal_test") predictions, and
    figures/roc_<split>.png.
    """
    run_dir = in_repository(run_dir)
    out = {}
    test = load_out_of_fold(run_dir, "test", comparable_keys(run_dir, keys, reference) if keys is None else keys)
    val = load_out_of_fold(run_dir, "val", list(test))
    splits = {"test": (test, val)}
    for split in ENSEMBLE_SPLITS:
        split_keys = [key for key in test if (run_dir / "oof" / f"{key}.{split}.csv").is_file()]
        if split_keys:
            # The fold ensemble (mean of the fold models) is no single fold model: its thresholds
            # are chosen on the validation predictions of all fold models pooled (see threshold_source).
            splits[split] = (load_out_of_fold(run_dir, split, split_keys), val)
    for split, (predictions, val_predictions) in splits.items():
        tables = results_tables(predictions, reference=reference, val_predictions=val_predictions, n_boot=n_boot)
        paths = save_tables({f"{split}_{name}": table for name, table in tables.items()}, run_dir / "tables")
        figure = roc_figure(predictions)
        paths.append(save_figure(figure, run_dir / "figures" / f"roc_{split}.png"))
        out[split] = SplitResults(tables, figure, paths)
    return out


def write_report(
    run_dir: str | Path, reference: str = "luvnet", keys: list[str] | None = None, n_boot: int = 1000
) -> list[Path]:
    """``results`` for the command line: saves everything and returns the paths written."""
    import matplotlib.pyplot as plt

    written = []
    for split_results in results(run_dir, reference, keys, n_boot).values():
        written += split_results.paths
        plt.close(split_results.roc)
    return written



@dataclass
class FoldAttention:
    """Attention of each fold's model on its own test clips (every development clip once)."""

    clip_ids: list[str]
    attention: "np.ndarray"  # (N, P or 1, H, T)
    lengths: "np.ndarray"  # (N,)
    labels: "np.ndarray"  # (N, P) with NaN for missing
    probabilities: "np.ndarray"  # (N, P)
    model_folds: list[int]  # the fold model that predicted each clip (its test fold's)


def out_of_fold_attention(prepared, key: str = "luvnet") -> FoldAttention:
    """Run every fold's best model on its test clips from the cache and keep the attention
    (``prepared``: the ``lusv.study.Prepared`` of the study run)."""
    import numpy as np


    cache = prepared.cache()
    parts = []
    runs = [d for d in fold_runs(prepared.run_dir, key) if d.is_dir()]
    unfinished = [f"{d.name} {why}" for d in runs if (why := unfinished_reason(d))]
    if unfinished:
        raise LusvError(f"cannot show the attention of {key}: {'; '.join(unfinished)}; let it finish or rerun it")
    for run_dir in runs:
        test = _read_predictions(run_dir / "predictions_test.csv")
        clips, lengths = cache.load_many(test["clip_id"])
        probabilities, attention = predict(load_trained(run_dir), clips, lengths, return_attention=True)
        if attention is None:
            raise ConfigError(f"model {key!r} has no attention to show")
        parts.append((test, attention, lengths, probabilities))
    if not parts:
        raise LusvError(f"no trained runs named {key}-fold* in {prepared.run_dir / 'runs'}: train them first")
    tests = pd.concat([p[0] for p in parts], ignore_index=True)
    return FoldAttention(
        clip_ids=tests["clip_id"].tolist(),
        attention=np.concatenate([p[1] for p in parts]),
        lengths=np.concatenate([p[2] for p in parts]),
        labels=tests[list(PATTERNS)].to_numpy(dtype=float),
        probabilities=np.concatenate([p[3] for p in parts]),
        model_folds=tests["model_fold"].astype(int).tolist(),
    )


def fold_model_predictions(run_dir: str | Path, split: str = "temporal_test", keys: list[str] | None = None
                           ) -> dict[str, pd.DataFrame]:
    """Each fold model's own predictions on ``split``, stacked per configuration (``model_fold``
    says which model): on the temporally separated set every clip appears once per fold model,
    which is what the paper's mean ± sd over fold models needs (the oof/ file holds their mean).
    Configurations without a finished run for the split are left out."""
    run_dir = in_repository(run_dir)
    runs = run_dir / "runs"
    keys = keys if keys is not None else sorted({d.name.rsplit("-fold", 1)[0] for d in runs.glob("*-fold*")})
    stacked = {}
    for key in keys:
        dirs = fold_runs(run_dir, key)
        made_from = _folds_made_from(run_dir, key, pd.DataFrame())
        if made_from is not None:  # a subset of folds (run_all.sh --folds): the runs its oof/ files came from
            dirs = [d for d in dirs if d.name.rsplit("-fold", 1)[1] in made_from]
        if not any((d / f"predictions_{split}.csv").is_file() for d in dirs):
            continue
        unfinished = [f"{d.name} {why}" for d in dirs if (why := unfinished_reason(d))]
        if unfinished:
            raise LusvError(f"cannot use the fold models of {key}: {'; '.join(unfinished)}; let them finish or rerun "
                            "the model's training (notebooks 02-04, study.train_folds)")
        stacked[key] = pd.concat([_read_predictions(d / f"predictions_{split}.csv") for d in dirs], ignore_index=True)
    return stacked


def paper_results(run_dir: str | Path, pooled: pd.DataFrame, reference: str = "luvnet",
                  keys: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """The paper's way of reporting for a study run (``lusv.report.paper.paper_way``): per-fold AUCs
    with DeLong CIs and p-values, mean ± sd over folds beside the pooled AUCs (``pooled``:
    ``lusv.report.tables.auc_summaries`` of the test split), paper | lusv | difference for Tables 1,
    3 and, with a temporally separated set, 2, and Table 4 (size and cost of lusv's roster,
    ``lusv.report.paper.table4_beside_paper``). Saved as ``tables/paper_<name>.csv``. Tables 8 and 9
    (the sweeps) are added as notebook 04 saved them (``sweep_results``), when it has run."""
    run_dir = in_repository(run_dir)
    test = load_out_of_fold(run_dir, "test", comparable_keys(run_dir, keys, reference) if keys is None else keys)
    test = {key: test[key] for key in sorted(test, key=lambda key: key != reference)}  # the reference first
    temporal = fold_model_predictions(run_dir, "temporal_test", list(test))
    tables = {**paper_way(test, pooled, temporal, reference), "table4": table4_beside_paper()}
    save_tables({f"paper_{name}": table for name, table in tables.items()}, run_dir / "tables")
    for name in ("table8", "table9"):
        if (run_dir / "tables" / f"paper_{name}.csv").is_file():
            tables[f"paper_{name}"] = read_table(run_dir / "tables" / f"paper_{name}.csv")
    return tables


def video_level_results(run_dir: str | Path, keys: list[str] | None = None, split: str = "test",
                        n_boot: int = 1000) -> dict[str, pd.DataFrame]:
    """Window-level (the paper's unit) and video-level AUCs of a study run's ``split``
    predictions, with patient-bootstrap CIs (``lusv.evaluation.video_level``): ``levels`` (long, numeric),
    ``window_vs_video`` (window beside video = mean of its windows) and ``video_max`` (video =
    max of its windows), saved as ``tables/<split>_<name>.csv``. Without a ``video_id`` column
    each clip is its own video and the levels agree."""
    run_dir = in_repository(run_dir)
    keys = comparable_keys(run_dir) if keys is None else keys
    summaries = level_summaries(load_out_of_fold(run_dir, split, keys), n_boot=n_boot)
    tables = {"levels": summaries, "window_vs_video": level_table(summaries, ("window", "video_mean")),
              "video_max": level_table(summaries, ("video_max",))}
    save_tables({f"{split}_{name}": table for name, table in tables.items()}, run_dir / "tables")
    return tables


@dataclass
class SweepResults:
    """The K / H sweeps of a study run (``lusv.report.sweeps``): one table per knob, paper | lusv |
    difference for Tables 8 / 9, and the figure of macro AUC against K and H."""

    tables: dict
    paper: dict
    figure: object  # matplotlib Figure
    paths: list


def sweep_results(run_dir: str | Path, keys: list[str], n_boot: int = 1000) -> SweepResults:
    """The sweeps among ``keys`` (``luvnet``, ``luvnet_k<K>``, ``luvnet_h<H>``) on every fold,
    saved as ``tables/sweep_<knob>.csv``, ``tables/paper_table{8,9}.csv`` and
    ``figures/sweeps.png``; a knob with fewer than two trained values is left out."""
    run_dir = in_repository(run_dir)
    tables = sweep_tables(run_dir, load_out_of_fold(run_dir, "test", keys), n_boot)
    paper = paper_comparisons(tables)
    paths = save_tables({**{f"sweep_{knob}": table for knob, table in tables.items()}, **paper}, run_dir / "tables")
    figure = sweep_figure(tables)
    paths.append(save_figure(figure, run_dir / "figures" / "sweeps.png"))
    return SweepResults(tables, paper, figure, paths)
