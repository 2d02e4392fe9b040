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
from lusv.infra.io import write_csv
from lusv.stats.metrics import roc_auc
from sklearn.metrics import roc_auc_score


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


# ------------------------------------------------- the paper-way tables of a run, against references

FOLDS = 3


def _model_predictions(seed: int, strength, n_clips: int = 60, fold_column: str = "model_fold") -> pd.DataFrame:
    """Clips of 3 patients each in 3 folds; four patterns of different strength; ~10% of labels missing."""
    rng = np.random.default_rng(seed)
    labels = (np.random.default_rng(100).random((n_clips, 4)) < [0.5, 0.4, 0.35, 0.45]).astype(float)
    labels[np.random.default_rng(101).random((n_clips, 4)) < 0.1] = np.nan
    scores = np.nan_to_num(labels) * strength + rng.normal(size=(n_clips, 4))
    table = pd.DataFrame({"clip_id": [f"c{i:02d}" for i in range(n_clips)], "patient_id": [f"p{i // 3}" for i in range(n_clips)],
                          fold_column: [(i // 3) % FOLDS for i in range(n_clips)]})
    for j, pattern in enumerate(PATTERNS):
        table[f"p_{pattern}"], table[pattern] = scores[:, j], labels[:, j]
    return table


def _auc(y, score) -> float:
    y, score = np.asarray(y, float), np.asarray(score, float)
    keep = ~np.isnan(y)
    return float(roc_auc_score(y[keep], score[keep]))


def _fold_aucs(table: pd.DataFrame) -> pd.DataFrame:
    """Per fold model: each pattern's AUC, micro (pooled labelled pairs) and macro, by scikit-learn."""
    rows = {}
    for fold, part in table.groupby("model_fold"):
        aucs = {p: _auc(part[p], part[f"p_{p}"]) for p in PATTERNS}
        labels, scores = part[list(PATTERNS)].to_numpy(float).ravel(), part[[f"p_{p}" for p in PATTERNS]].to_numpy().ravel()
        rows[fold] = {**aucs, "micro": _auc(labels, scores), "macro": float(np.mean(list(aucs.values())))}
    return pd.DataFrame.from_dict(rows, orient="index")


def _fake_run(tmp_path) -> tuple:
    """A run folder as lusv.study leaves it: oof test predictions of two models and each fold
    model's own predictions on a temporally separated set of 12 clips."""
    test = {"usvn": _model_predictions(1, [0.4, 0.3, 0.2, 0.1]), "luvnet": _model_predictions(2, [2.0, 1.5, 1.0, 0.6])}
    test["usvn"] = test["usvn"].sample(frac=1.0, random_state=0)  # rows in another order than the reference's
    for key, table in test.items():
        table = table.assign(fold=table["model_fold"])
        write_csv(tmp_path / "oof" / f"{key}.test.csv", table)
        for fold in range(FOLDS):  # finished fold runs whose test predictions the oof/ file was made from
            run = tmp_path / "runs" / f"{key}-fold{fold}"
            run.mkdir(parents=True)
            (run / "config.json").write_text('{"status": "finished"}')
            (run / "best.pt").touch()
            write_csv(run / "predictions_test.csv", table[table["model_fold"] == fold])
    temporal = {}
    for key, strength in (("luvnet", 1.2), ("usvn", 0.3)):
        parts = []
        for fold in range(FOLDS):
            part = _model_predictions(10 * fold + len(key), [strength] * 4, n_clips=12).drop(columns="model_fold")
            part = part.assign(clip_id="t" + part["clip_id"], fold=-1, model_fold=fold)
            write_csv(tmp_path / "runs" / f"{key}-fold{fold}" / "predictions_temporal_test.csv", part)
            parts.append(part)
        temporal[key] = pd.concat(parts, ignore_index=True)
    return test, temporal


def test_paper_results_saves_the_paper_way_tables_with_the_values_of_independent_references(tmp_path, monkeypatch):
    import reference_stats as ref
    from lusv.report import paper
    from lusv.evaluation.out_of_fold import paper_results
    from lusv.report.tables import auc_summaries

    monkeypatch.setattr(paper, "table4_beside_paper", lambda: pd.DataFrame({"key": ["luvnet"]}))  # its own test: test_roster
    test, temporal = _fake_run(tmp_path)
    pooled = auc_summaries(test, n_boot=0)
    returned = paper_results(tmp_path, pooled)
    saved = {name: pd.read_csv(tmp_path / "tables" / f"paper_{name}.csv") for name in
             ("per_fold", "fold_summary", "fold_vs_pooled", "paper_table1", "paper_table2", "paper_table3")}

    # Per fold (the paper's Tables 5-7): scikit-learn AUCs, textbook DeLong CIs, paired p-values
    # of clips matched by id within each fold, none for the reference itself or micro / macro.
    per_fold = saved["per_fold"].set_index(["model", "fold", "column"])
    luvnet = test["luvnet"].set_index("clip_id")
    for key, table in test.items():
        expected = _fold_aucs(table)
        for fold in range(FOLDS):
            rows = table[table["model_fold"] == fold].set_index("clip_id")
            for pattern in PATTERNS:
                row = per_fold.loc[(key, fold, pattern)]
                auc, low, high = ref.delong_ci(rows[pattern], rows[f"p_{pattern}"])
                assert row["auc"] == pytest.approx(expected.loc[fold, pattern]) == pytest.approx(auc)
                assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-9)
                if key == "luvnet":
                    assert np.isnan(row["p_vs_luvnet"])
                else:
                    labelled = rows[pattern].notna()
                    *_, p_value = ref.delong_paired_test(rows.loc[labelled, pattern], rows.loc[labelled, f"p_{pattern}"],
                                                         luvnet.loc[rows.index[labelled], f"p_{pattern}"])
                    assert row["p_vs_luvnet"] == pytest.approx(p_value, rel=1e-6)
            for column in ("micro", "macro"):
                assert per_fold.loc[(key, fold, column), "auc"] == pytest.approx(expected.loc[fold, column])
                assert per_fold.loc[(key, fold, column), ["ci_low", "p_vs_luvnet"]].isna().all()
    assert list(dict.fromkeys(saved["per_fold"]["model"])) == ["luvnet", "usvn"]  # the reference first

    # Mean ± sd (ddof 1) over the fold models, beside the pooled AUC of every clip.
    summary = saved["fold_summary"].set_index("key")
    pooled_rows = saved["fold_vs_pooled"].set_index(["model", "column"])
    for key, table in test.items():
        expected = _fold_aucs(table)
        for column in (*PATTERNS, "micro", "macro"):
            assert summary.loc[key, f"{column}_mean"] == pytest.approx(expected[column].mean())
            assert summary.loc[key, f"{column}_sd"] == pytest.approx(expected[column].std(ddof=1))
        assert pooled_rows.loc[(key, "b_lines"), "pooled_auc"] == pytest.approx(_auc(table["b_lines"], table["p_b_lines"]))

    # Paper | lusv | difference: the paper's figures typed in from its Tables 1-3.
    table1, table3 = saved["paper_table1"].set_index("key"), saved["paper_table3"].set_index("key")
    luvnet_macro = _fold_aucs(test["luvnet"])["macro"].mean()
    assert table1.loc["luvnet", ["macro_paper", "macro_lusv"]].tolist() == pytest.approx([0.894, luvnet_macro])
    assert table1.loc["luvnet", "macro_diff"] == pytest.approx(luvnet_macro - 0.894)
    assert table1.loc["usvn", "a_lines_paper"] == pytest.approx(0.879) and np.isnan(table1.loc["mvit_b", "macro_lusv"])
    assert list(table3.index) == ["luvnet_no_temporal", "luvnet"]
    assert table3["macro_paper"].tolist() == pytest.approx([0.885, 0.894])
    assert table3.loc["luvnet", "a_lines_paper"] == pytest.approx(0.918)
    assert table3.loc["luvnet", "macro_lusv"] == pytest.approx(luvnet_macro) and np.isnan(table3.loc["luvnet_no_temporal", "macro_lusv"])
    # Table 2: each fold model on the temporally separated set, mean over the fold models.
    table2 = saved["paper_table2"].set_index("key")
    for key in ("luvnet", "usvn"):
        expected = _fold_aucs(temporal[key])
        assert table2.loc[key, "macro_lusv"] == pytest.approx(expected["macro"].mean())
        assert table2.loc[key, "b_lines_lusv"] == pytest.approx(expected["b_lines"].mean())
    assert table2.loc["luvnet", "macro_paper"] == pytest.approx(0.844)

    # The per-fold table as notebook 06 shows it quotes the same numbers.
    display = paper.per_fold_display(returned["per_fold"]).set_index(["Model", "fold"])
    row = per_fold.loc[("usvn", 1, "a_lines")]
    assert display.loc[("USVN", 1), "A-lines"] == (f"{row['auc']:.3f} ({row['ci_low']:.2f}–{row['ci_high']:.2f}), "
                                                   f"p = {row['p_vs_luvnet']:.3f}")
