"""lusv.report.paper: the published tables as shipped data, per-fold (paper-way) vs pooled AUCs, and
paper-vs-lusv comparisons, on hand-worked examples."""

import math

import numpy as np
import pandas as pd
import pytest

from lusv.report.paper import (
    compare_sweep_with_paper,
    compare_with_paper,
    fold_mean_sd,
    fold_summary_table,
    per_fold_auc,
    per_fold_delong,
    published_table,
)
from lusv.data.patterns import PATTERNS
from lusv.stats.metrics import roc_auc


def test_published_tables_ship_the_papers_numbers():
    table1 = published_table(1).set_index("key")
    assert len(table1) == 10
    assert table1.loc["luvnet", "macro_mean"] == pytest.approx(0.894)
    assert table1.loc["luvnet", "macro_sd"] == pytest.approx(0.009)
    assert table1.loc["usvn", "consolidation_mean"] == pytest.approx(0.838)  # the printed .879 is a typo
    table4 = published_table(4).set_index("key")
    assert table4.loc["luvnet", "gmac"] == pytest.approx(304.68)
    assert published_table(8).set_index("kernel_size").loc[13, "macro"] == pytest.approx(0.908)
    assert list(published_table(9)["num_heads"]) == [1, 2, 4, 8, 16, 32, 96]
    with pytest.raises(ValueError, match="not 5"):
        published_table(5)


def _two_fold_example() -> pd.DataFrame:
    # Fold 0: positives 0.9, 0.4; negatives 0.5, 0.1 -> 3 of 4 pairs ordered: AUC 0.75.
    # Fold 1: positives 0.8, 0.7; negatives 0.2, 0.3 -> AUC 1.0.
    # Pooled: positives {0.9, 0.4, 0.8, 0.7} vs negatives {0.5, 0.1, 0.2, 0.3}: only 0.4 < 0.5
    # is out of order -> 15 / 16 = 0.9375, not the fold mean 0.875.
    scores = [0.9, 0.4, 0.5, 0.1, 0.8, 0.2, 0.7, 0.3]
    labels = [1, 1, 0, 0, 1, 0, 1, 0]
    table = pd.DataFrame({"clip_id": [f"c{i}" for i in range(8)], "patient_id": [f"p{i}" for i in range(8)],
                          "model_fold": [0, 0, 0, 0, 1, 1, 1, 1]})
    for pattern in PATTERNS:
        table[f"p_{pattern}"] = scores
        table[pattern] = labels
    return table


def test_per_fold_mean_sd_differs_from_the_pooled_auc_as_worked_by_hand():
    table = _two_fold_example()
    per_fold = per_fold_auc(table)
    a_lines = per_fold[per_fold["column"] == "a_lines"].set_index("fold")["auc"]
    assert a_lines.loc[0] == pytest.approx(0.75) and a_lines.loc[1] == pytest.approx(1.0)
    summary = fold_mean_sd(per_fold)
    assert summary["a_lines_mean"] == pytest.approx(0.875)
    assert summary["a_lines_sd"] == pytest.approx(math.sqrt(2 * 0.125**2))  # ddof = 1
    assert summary["macro_mean"] == pytest.approx(0.875)
    pooled = roc_auc(table["a_lines"], table["p_a_lines"])
    assert pooled == pytest.approx(15 / 16)
    # the fold-1 AUC is 1: its DeLong interval collapses to the point
    ci = per_fold[(per_fold["column"] == "a_lines") & (per_fold["fold"] == 1)][["ci_low", "ci_high"]].to_numpy()
    np.testing.assert_allclose(ci, [[1.0, 1.0]])


def test_per_fold_delong_pairs_models_within_each_fold():
    ours = _two_fold_example()
    worse = ours.copy()
    worse["p_a_lines"] = [0.1, 0.9, 0.5, 0.4, 0.8, 0.2, 0.7, 0.3]  # fold 0 reversed-ish, fold 1 the same
    table = per_fold_delong({"luvnet": ours, "usvn": worse})
    fold1 = table[(table["fold"] == 1) & (table["pattern"] == "a_lines")].iloc[0]
    assert fold1["auc"] == pytest.approx(1.0) and fold1["p_value"] == pytest.approx(1.0)  # identical scores
    fold0 = table[(table["fold"] == 0) & (table["pattern"] == "a_lines")].iloc[0]
    assert fold0["auc"] == pytest.approx(0.5)  # positives 0.1, 0.9 vs negatives 0.5, 0.4: 2 of 4
    assert fold0["auc_luvnet"] == pytest.approx(0.75)


def test_compare_with_paper_matches_rows_by_model_and_keeps_missing_ones():
    ours = fold_summary_table({"luvnet": _two_fold_example()})
    table = compare_with_paper(ours, 1).set_index("key")
    assert table.loc["luvnet", "macro_paper"] == pytest.approx(0.894)
    assert table.loc["luvnet", "macro_lusv"] == pytest.approx(0.875)
    assert table.loc["luvnet", "macro_diff"] == pytest.approx(0.875 - 0.894)
    assert math.isnan(table.loc["mvit_b", "macro_lusv"])  # not trained: visible, not dropped
    assert len(table) == 10


def test_compare_sweep_with_paper_fills_only_the_values_we_ran():
    ours = pd.DataFrame({"kernel_size": [5, 13], "macro_mean": [0.8, 0.85]})
    table = compare_sweep_with_paper(ours, 8).set_index("kernel_size")
    assert table.loc[13, "macro_paper"] == pytest.approx(0.908)
    assert table.loc[13, "macro_diff"] == pytest.approx(0.85 - 0.908)
    assert math.isnan(table.loc[1, "macro_lusv"])


def test_fold_vs_pooled_sets_the_hand_worked_fold_mean_beside_the_pooled_auc():
    from lusv.report.paper import fold_vs_pooled
    from lusv.report.tables import auc_summaries

    table = _two_fold_example()
    pooled = auc_summaries({"luvnet": table}, n_boot=0)
    rows = fold_vs_pooled(fold_summary_table({"luvnet": table}), pooled).set_index("column")
    assert list(rows.index) == [*PATTERNS, "micro", "macro"]
    assert rows.loc["a_lines", "fold_mean"] == pytest.approx(0.875)  # (0.75 + 1.0) / 2
    assert rows.loc["a_lines", "fold_sd"] == pytest.approx(0.125 * math.sqrt(2))
    assert rows.loc["a_lines", "pooled_auc"] == pytest.approx(15 / 16)
    assert rows.loc["macro", "pooled_auc"] == pytest.approx(15 / 16) and rows.loc["macro", "fold_mean"] == pytest.approx(0.875)
    low, high = rows.loc["a_lines", ["pooled_ci_low", "pooled_ci_high"]]
    assert low < 15 / 16 < high  # the DeLong interval of the pooled AUC
