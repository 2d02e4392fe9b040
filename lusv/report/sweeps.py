"""The K and H sweeps of LUV-Net on every fold, set beside the paper's Tables 8 and 9.

The paper's sweeps over the temporal kernel size K (its Table 8) and the number of attention
heads H (its Table 9) each come from a single fold: their K = 13 / H = 8 rows equal the fold-3
row of its Table 7. lusv trains every sweep point on all folds and reports, per point, the
pooled out-of-fold AUC with its 95% CI (DeLong per pattern, patient bootstrap for micro/macro)
and the mean ± sd over the fold models (the statistic of the paper's Tables 1-3, which
``lusv.report.paper.compare_sweep_with_paper`` sets beside the published single-fold value).

Sweep points are study keys: ``luvnet_k<K>``, ``luvnet_h<H>`` and ``luvnet`` (the profile's own
K and H, so a member of both sweeps); the value of each is read from its runs' config.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from lusv.data.patterns import DISPLAY_NAMES
from lusv.models.roster import GRID_BY_PROFILE, sweep_grid  # noqa: F401 - each profile's grid lives with the roster
from lusv.report.paper import compare_sweep_with_paper, fold_mean_sd, per_fold_auc, published_table, SUMMARY_COLUMNS
from lusv.stats.metrics import summarize_predictions

SYMBOLS = {"kernel_size": "K", "num_heads": "H"}
PAPER_TABLES = {"kernel_size": 8, "num_heads": 9}
KNOB_NAMES = {"kernel_size": "temporal kernel size K", "num_heads": "attention heads H"}


_KEY_PATTERNS = {"kernel_size": re.compile(r"luvnet(_k\d+)?"), "num_heads": re.compile(r"luvnet(_h\d+)?")}


def trained_value(run_dir: str | Path, key: str, knob: str) -> int | None:
    """The value of ``knob`` a configuration was trained with (its first fold's config.json)."""
    configs = sorted((Path(run_dir) / "runs").glob(f"{key}-fold*/config.json"))
    if not configs:
        return None
    value = json.loads(configs[0].read_text()).get("params", {}).get(knob)
    return None if value is None else int(value)


def sweep_points(run_dir: str | Path, keys, knob: str) -> dict[str, int]:
    """key -> value of ``knob`` for the keys that belong to its sweep, ordered by value."""
    points = {key: trained_value(run_dir, key, knob) for key in keys if _KEY_PATTERNS[knob].fullmatch(key)}
    return dict(sorted(((k, v) for k, v in points.items() if v is not None), key=lambda item: item[1]))


def sweep_table(predictions: Mapping[str, pd.DataFrame], points: Mapping[str, int], knob: str,
                n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per sweep value: ``<knob>, key, n_folds`` and for every pattern, micro and macro
    ``<column>_pooled, <column>_ci_low, <column>_ci_high`` (pooled out-of-fold AUC, 95% CI) and
    ``<column>_mean, <column>_sd`` (over the fold models; the shape ``compare_sweep_with_paper``
    takes)."""
    rows = []
    for key, value in points.items():
        table = predictions[key]
        row = {knob: value, "key": key, "n_folds": int(table["model_fold"].nunique())}
        pooled = summarize_predictions(table, n_boot=n_boot, seed=seed).set_index("pattern")
        for column in SUMMARY_COLUMNS:
            row.update({f"{column}_pooled": pooled.loc[column, "auc"], f"{column}_ci_low": pooled.loc[column, "ci_low"],
                        f"{column}_ci_high": pooled.loc[column, "ci_high"]})
        row.update(fold_mean_sd(per_fold_auc(table)).to_dict())
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_tables(run_dir: str | Path, predictions: Mapping[str, pd.DataFrame], n_boot: int = 1000,
                 seed: int = 0) -> dict[str, pd.DataFrame]:
    """``sweep_table`` of each knob (kernel_size, num_heads) with at least two values among
    ``predictions`` (keyed by study key)."""
    tables = {}
    for knob in SYMBOLS:
        points = sweep_points(run_dir, predictions, knob)
        if len(points) > 1:
            tables[knob] = sweep_table(predictions, points, knob, n_boot, seed)
    return tables


def paper_comparisons(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``paper_table8`` / ``paper_table9``: paper (one fold) | lusv (mean over folds) | difference."""
    return {f"paper_table{PAPER_TABLES[knob]}": compare_sweep_with_paper(table, PAPER_TABLES[knob])
            for knob, table in tables.items()}


def best_value(table: pd.DataFrame, knob: str, column: str = "macro", statistic: str = "pooled") -> int | None:
    """The sweep value with the highest ``<column>_<statistic>`` (ties: the smallest value)."""
    values = table[f"{column}_{statistic}"].to_numpy(dtype=float)
    if not np.isfinite(values).any():
        return None
    return int(table[knob].iloc[int(np.nanargmax(values))])


def sweep_figure(tables: Mapping[str, pd.DataFrame], column: str = "macro"):
    """One panel per knob: lusv's pooled AUC with its 95% CI and the mean ± sd over fold models
    against the value, the paper's single-fold Table 8 / 9 on the same axes."""
    import matplotlib.pyplot as plt


    label = {**DISPLAY_NAMES, "macro": "Macro", "micro": "Micro"}[column]
    figure, axes = plt.subplots(1, max(len(tables), 1), figsize=(5.5 * max(len(tables), 1), 4), squeeze=False)
    for axis, (knob, table) in zip(axes[0], tables.items()):
        paper = published_table(PAPER_TABLES[knob])
        axis.plot(paper[knob], paper[column], "s--", color="0.55", markersize=4,
                  label=f"paper, Table {PAPER_TABLES[knob]} (one fold)")
        pooled = table[f"{column}_pooled"].to_numpy(dtype=float)
        below = np.nan_to_num(pooled - table[f"{column}_ci_low"].to_numpy(dtype=float))
        above = np.nan_to_num(table[f"{column}_ci_high"].to_numpy(dtype=float) - pooled)
        axis.errorbar(table[knob], pooled, yerr=[below, above], fmt="o-", capsize=3, color="C0",
                      label=f"lusv, pooled over {int(table['n_folds'].max())} folds (95% CI)")
        axis.errorbar(table[knob], table[f"{column}_mean"], yerr=np.nan_to_num(table[f"{column}_sd"].to_numpy(float)),
                      fmt="x", capsize=2, color="C1", alpha=0.8, label="lusv, mean ± sd over fold models")
        if knob == "num_heads":
            axis.set_xscale("log", base=2)
            ticks = sorted(set(paper[knob]) | set(table[knob]))
            axis.set_xticks(ticks, [str(t) for t in ticks])
        axis.set_xlabel(KNOB_NAMES[knob])
        axis.set_ylabel(f"{label} AUC")
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
