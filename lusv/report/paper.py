"""The paper's published figures as data, its way of reporting, and paper-vs-lusv tables.

LUV-Net (Lee et al., MIDL 2025) reports each AUC as the mean ± standard deviation of the five
fold models' AUCs (its Tables 1-3), with per-fold DeLong CIs and paired p-values in its appendix
(Tables 5-7). lusv's headline numbers pool the out-of-fold predictions instead (one AUC with a
CI over every development clip); this module adds the paper's way beside them, so that every
published number can be set beside ours made the same way.

The published tables ship with the package (``lusv/report/paper_tables/table{1,2,3,4,8,9}.csv``, copied
from the paper; USVN's consolidation cell of Table 1 corrected from its printing typo). Rows are
keyed by the lusv study key of the matching model (``luvnet``, ``usvn``, ``c3d``...).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Mapping

import numpy as np
import pandas as pd

from lusv.data.patterns import DISPLAY_NAMES, PATTERNS
from lusv.models import build_model
from lusv.models.cost import model_cost
from lusv.models.roster import configuration, CONFIGURATIONS
from lusv.report.names import model_name
from lusv.report.tables import format_auc_ci
from lusv.stats.metrics import delong_ci, delong_test, macro_auc, micro_auc, prediction_arrays

SUMMARY_COLUMNS = (*PATTERNS, "micro", "macro")
TABLES = (1, 2, 3, 4, 8, 9)


def published_table(number: int) -> pd.DataFrame:
    """Table ``number`` of the paper as published (1-3: AUC mean/sd per column; 4: size and
    cost; 8, 9: the single-fold sweeps over K and H)."""
    if number not in TABLES:
        raise ValueError(f"the paper's tables shipped with lusv are {TABLES}, not {number}")
    with resources.files("lusv.report").joinpath(f"paper_tables/table{number}.csv").open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle, dtype={"key": str})


@lru_cache(maxsize=4)
def _roster_costs(num_frames: int, image_size: int) -> tuple[tuple[str, int, float], ...]:
    table4_first = list(published_table(4)["key"])
    keys = table4_first + [key for key in CONFIGURATIONS if key not in table4_first]
    costs = []
    for key in keys:  # counted with random weights: the count is the same and nothing is read
        options = {**configuration(key), "weights": "random"}
        model = options.pop("model")
        cost = model_cost(lambda: build_model(model, num_frames=num_frames, image_size=image_size, **options),
                          num_frames, image_size)
        costs.append((key, cost.parameters, cost.gmac))
    return tuple(costs)


def table4_beside_paper(num_frames: int = 30, image_size: int = 256) -> pd.DataFrame:
    """The paper's Table 4 beside lusv's roster: parameters (millions) and multiply-accumulates
    (GMAC per clip) of every model, paper | lusv | difference.

    Counted on the meta device (shapes only: no weights, no memory, no training; seconds, and
    cached per setting), DenseNet-161 and H = 8 where the paper used them, by default in the
    paper setting of 30 frames of 256 x 256 (``lusv.models.cost``). Roster models without a
    paper row (the ablation, the frame-based model, R(2+1)D-18) keep empty paper cells. The
    paper's inference seconds (one A100) are not set beside anything: not measured here."""
    ours = pd.DataFrame(_roster_costs(num_frames, image_size), columns=["key", "parameters", "gmac_lusv"])
    ours["params_m_lusv"] = ours["parameters"] / 1e6
    paper = published_table(4).rename(columns={"params_m": "params_m_paper", "gmac": "gmac_paper"})
    merged = ours.merge(paper, on="key", how="left")
    merged["params_m_diff"] = merged["params_m_lusv"] - merged["params_m_paper"]
    merged["gmac_diff"] = merged["gmac_lusv"] - merged["gmac_paper"]
    return merged[["key", "paper_model", "params_m_paper", "params_m_lusv", "params_m_diff", "gmac_paper",
                   "gmac_lusv", "gmac_diff"]]


def per_fold_auc(predictions: pd.DataFrame, fold_column: str = "model_fold", alpha: float = 0.05) -> pd.DataFrame:
    """The paper's appendix tables: each fold model's AUC on its own test fold.

    One row per (fold, column) with ``auc, ci_low, ci_high`` (DeLong, logit interval) for each
    pattern and the micro/macro AUC (no CI, as in the paper). ``predictions`` is an out-of-fold
    table (``lusv.study`` writes ``oof/<key>.test.csv``).
    """
    if fold_column not in predictions.columns:
        raise ValueError(f"predictions lack the {fold_column!r} column: per-fold AUCs need to know each row's fold model")
    rows = []
    for fold, part in predictions.groupby(fold_column, sort=True):
        labels, scores = prediction_arrays(part)
        for j, pattern in enumerate(PATTERNS):
            auc, low, high = delong_ci(labels[:, j], scores[:, j], alpha=alpha)
            rows.append((int(fold), pattern, auc, low, high))
        rows.append((int(fold), "micro", micro_auc(labels, scores), np.nan, np.nan))
        rows.append((int(fold), "macro", macro_auc(labels, scores), np.nan, np.nan))
    return pd.DataFrame(rows, columns=["fold", "column", "auc", "ci_low", "ci_high"])


def per_fold_delong(
    predictions: Mapping[str, pd.DataFrame], reference: str = "luvnet", fold_column: str = "model_fold"
) -> pd.DataFrame:
    """Paired DeLong p-value of each model against ``reference``, per fold and pattern (the
    paper's Tables 5-7). Models are matched clip by clip within each fold."""
    if reference not in predictions:
        raise ValueError(f"no predictions for the reference model {reference!r} (have {sorted(predictions)})")
    ref = predictions[reference].set_index("clip_id")
    rows = []
    for key, table in predictions.items():
        if key == reference:
            continue
        other = table.set_index("clip_id").loc[ref.index]
        for fold in sorted(ref[fold_column].unique()):
            in_fold = (ref[fold_column] == fold).to_numpy()
            labels, ref_scores = prediction_arrays(ref[in_fold])
            _, scores = prediction_arrays(other[in_fold])
            for j, pattern in enumerate(PATTERNS):
                test = delong_test(labels[:, j], scores[:, j], ref_scores[:, j])
                rows.append((key, int(fold), pattern, test.auc_a, test.auc_b, test.p_value))
    return pd.DataFrame(rows, columns=["model", "fold", "pattern", "auc", f"auc_{reference}", "p_value"])


def fold_mean_sd(per_fold: pd.DataFrame) -> pd.Series:
    """Mean and sample standard deviation (ddof=1, as numpy/pandas/Excel's STDEV) over folds:
    a Series indexed like ``a_lines_mean, a_lines_sd, ..., macro_sd`` (the paper's Tables 1-3).

    The paper does not say which standard deviation it used; with 5 folds the population sd is
    sqrt(4/5) = 0.89 times this one.
    """
    values = {}
    for column in SUMMARY_COLUMNS:
        aucs = per_fold.loc[per_fold["column"] == column, "auc"].to_numpy(dtype=float)
        aucs = aucs[np.isfinite(aucs)]
        values[f"{column}_mean"] = float(aucs.mean()) if aucs.size else np.nan
        values[f"{column}_sd"] = float(aucs.std(ddof=1)) if aucs.size > 1 else np.nan
    return pd.Series(values)


def fold_summary_table(predictions: Mapping[str, pd.DataFrame], fold_column: str = "model_fold") -> pd.DataFrame:
    """Mean ± sd over folds for each model: one row per key, columns as ``published_table(1)``."""
    rows = {key: fold_mean_sd(per_fold_auc(table, fold_column)) for key, table in predictions.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("key").reset_index()


def compare_with_paper(ours: pd.DataFrame, number: int, statistic: str = "mean") -> pd.DataFrame:
    """Paper | lusv | difference for each AUC column of Table ``number`` (1, 2 or 3), matched by
    model key. ``ours`` has a ``key`` column and ``<column>_mean`` columns (``fold_summary_table``).
    Paper rows lusv has not trained are kept with empty lusv cells, so the gap stays visible."""
    if number not in (1, 2, 3):
        raise ValueError("compare_with_paper takes the AUC tables 1, 2 or 3; Tables 4, 8, 9 have their own shape")
    paper = published_table(number)
    merged = paper.merge(ours, on="key", how="left", suffixes=("_paper", "_lusv"))
    out = merged[["key", "paper_model"]].copy()
    for column in SUMMARY_COLUMNS:
        paper_value = merged[f"{column}_{statistic}_paper"]
        lusv_value = merged[f"{column}_{statistic}_lusv"]
        out[f"{column}_paper"] = paper_value
        out[f"{column}_lusv"] = lusv_value
        out[f"{column}_diff"] = lusv_value - paper_value
    return out


def compare_sweep_with_paper(ours: pd.DataFrame, number: int) -> pd.DataFrame:
    """Tables 8 (kernel size K) and 9 (heads H): paper | lusv | difference per sweep value.

    ``ours`` has the sweep column (``kernel_size`` or ``num_heads``) and ``<column>_mean`` columns.
    Values we did not run stay empty."""
    if number not in (8, 9):
        raise ValueError("compare_sweep_with_paper takes Table 8 (K) or 9 (H)")
    paper = published_table(number)
    knob = paper.columns[0]
    merged = paper.merge(ours, on=knob, how="left")
    out = merged[[knob]].copy()
    for column in SUMMARY_COLUMNS:
        out[f"{column}_paper"] = merged[column]
        out[f"{column}_lusv"] = merged.get(f"{column}_mean", np.nan)
        out[f"{column}_diff"] = out[f"{column}_lusv"] - out[f"{column}_paper"]
    return out


def per_fold_table(per_fold: Mapping[str, pd.DataFrame], delong: pd.DataFrame | None = None,
                   reference: str = "luvnet") -> pd.DataFrame:
    """The paper's Tables 5-7 in one long table: per model, fold and column (patterns, micro,
    macro) the AUC with its DeLong CI and, for patterns, the paired p-value against ``reference``.

    ``per_fold`` maps model key -> ``per_fold_auc`` table; ``delong`` is ``per_fold_delong``."""
    parts = [table.assign(model=key) for key, table in per_fold.items()]
    long = pd.concat(parts, ignore_index=True)[["model", "fold", "column", "auc", "ci_low", "ci_high"]]
    long[f"p_vs_{reference}"] = np.nan
    if delong is not None and len(delong):
        p_values = delong.rename(columns={"pattern": "column"}).set_index(["model", "fold", "column"])["p_value"]
        index = pd.MultiIndex.from_frame(long[["model", "fold", "column"]])
        long[f"p_vs_{reference}"] = p_values.reindex(index).to_numpy()
    return long


def fold_vs_pooled(fold_summary: pd.DataFrame, pooled: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over fold models (the paper's way) beside the pooled out-of-fold AUC with its
    95% CI (lusv's headline), one row per (model, column). ``pooled`` is
    ``lusv.report.tables.auc_summaries`` (model, pattern, auc, ci_low, ci_high)."""
    rows = []
    for _, summary in fold_summary.iterrows():
        for column in SUMMARY_COLUMNS:
            match = pooled[(pooled["model"] == summary["key"]) & (pooled["pattern"] == column)]
            auc, low, high = match[["auc", "ci_low", "ci_high"]].iloc[0] if len(match) else (np.nan,) * 3
            rows.append({"model": summary["key"], "column": column, "fold_mean": summary[f"{column}_mean"],
                         "fold_sd": summary[f"{column}_sd"], "pooled_auc": auc, "pooled_ci_low": low,
                         "pooled_ci_high": high})
    return pd.DataFrame(rows)


def paper_way(test: Mapping[str, pd.DataFrame], pooled: pd.DataFrame,
              temporal_by_fold_model: Mapping[str, pd.DataFrame] | None = None,
              reference: str = "luvnet") -> dict[str, pd.DataFrame]:
    """Every table the paper reports, made its way from a run's predictions (notebook 06):

    * ``per_fold``: per model, fold and column the AUC, DeLong CI, p-value vs ``reference``;
    * ``fold_summary``: mean ± sd over folds per model (the shape of ``published_table(1)``);
    * ``fold_vs_pooled``: those beside the pooled out-of-fold AUCs with CIs (``pooled``);
    * ``paper_table1``, ``paper_table3``: paper | lusv | difference (cross-validation; the
      temporal ablation rows), every paper row kept, empty where the run has no such model;
    * ``paper_table2`` (with ``temporal_by_fold_model``: each fold model's predictions on the
      temporally separated set, ``lusv.evaluation.out_of_fold.fold_model_predictions``).
    """
    per_fold = {key: per_fold_auc(table) for key, table in test.items()}
    delong = per_fold_delong(test, reference) if reference in test and len(test) > 1 else None
    summary = pd.DataFrame.from_dict({k: fold_mean_sd(t) for k, t in per_fold.items()}, orient="index")
    summary = summary.rename_axis("key").reset_index()
    tables = {
        "per_fold": per_fold_table(per_fold, delong, reference),
        "fold_summary": summary,
        "fold_vs_pooled": fold_vs_pooled(summary, pooled),
        "paper_table1": compare_with_paper(summary, 1),
        "paper_table3": compare_with_paper(summary, 3),
    }
    if temporal_by_fold_model:
        tables["paper_table2"] = compare_with_paper(fold_summary_table(temporal_by_fold_model), 2)
    return tables


def per_fold_display(per_fold: pd.DataFrame, reference: str = "luvnet") -> pd.DataFrame:
    """``per_fold_table`` for reading: one row per (model, fold), one column per pattern and
    the macro AUC, cells 'AUC (CI low–high)' with ', p = ...' against ``reference``."""
    p_column = f"p_vs_{reference}"
    cells = per_fold.assign(cell=[
        format_auc_ci(row.auc, row.ci_low, row.ci_high)
        + (f", p = {getattr(row, p_column):.3f}" if np.isfinite(getattr(row, p_column)) else "")
        for row in per_fold.itertuples()
    ])
    wide = cells.pivot(index=["model", "fold"], columns="column", values="cell")
    wide = wide[[c for c in (*PATTERNS, "macro") if c in wide.columns]]
    order = list(dict.fromkeys(per_fold["model"]))
    wide = wide.reindex(pd.MultiIndex.from_tuples(sorted(wide.index, key=lambda i: (order.index(i[0]), i[1]))))
    wide = wide.rename(columns={**DISPLAY_NAMES, "macro": "Macro"}).reset_index(names=["Model", "fold"])
    wide["Model"] = wide["Model"].map(model_name)
    return wide.rename_axis(columns=None)
