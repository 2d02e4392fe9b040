"""Result tables and ROC figure on synthetic out-of-fold predictions of three models."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

import reference_stats as ref
from lusv.errors import ConfigError
from lusv.stats.metrics import PredictionsError
from lusv.data.patterns import DISPLAY_NAMES, PATTERNS
from lusv.report.tables import (
    auc_summaries,
    auc_table,
    delong_table,
    format_auc_ci,
    read_predictions,
    results_tables,
    roc_figure,
    save_figure,
    save_tables,
    threshold_table,
)

MODELS = {"luvnet": 2.5, "usvn": 1.0, "c3d": 0.3}  # signal strength per model


def make_predictions(seed: int = 0, n_patients: int = 30) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n_patients), 3)
    n = len(patient)
    labels = (rng.random((n, 4)) < [0.5, 0.4, 0.35, 0.3]).astype(float)
    labels[rng.random((n, 4)) < 0.05] = np.nan
    base = pd.DataFrame({"clip_id": [f"c{i:03d}" for i in range(n)], "patient_id": [f"P{p}" for p in patient],
                         "fold": patient % 5, "model_fold": patient % 5})  # test layout: scored by its fold's model
    out = {}
    for name, strength in MODELS.items():
        logits = np.nan_to_num(labels) * strength + rng.normal(size=(n, 4))
        df = base.copy()
        for j, p in enumerate(PATTERNS):
            df[f"p_{p}"] = 1 / (1 + np.exp(-logits[:, j]))
            df[p] = labels[:, j]
        out[name] = df
    return out


@pytest.fixture(scope="module")
def preds() -> dict[str, pd.DataFrame]:
    return make_predictions()


def test_format_auc_ci():
    assert format_auc_ci(0.9123, 0.8812, 0.9404) == "0.912 (0.88–0.94)"
    assert format_auc_ci(0.9, float("nan"), float("nan")) == "0.900"
    assert format_auc_ci(float("nan"), 0.1, 0.2) == "n/a"


def test_auc_table_shape_and_cells(preds):
    summaries = auc_summaries(preds, n_boot=100)
    assert len(summaries) == 3 * 6 and summaries["model"].unique().tolist() == list(MODELS)
    table = auc_table(summaries)
    assert table.columns.tolist() == ["Model", *(DISPLAY_NAMES[p] for p in PATTERNS), "Macro", "Micro"]
    assert table["Model"].tolist() == list(MODELS)
    auc, low, high = ref.delong_ci(preds["usvn"]["consolidation"], preds["usvn"]["p_consolidation"])
    assert table.loc[1, "Consolidation"] == format_auc_ci(auc, low, high)
    # the strongest synthetic model ranks first on every pattern
    lead = summaries[summaries["pattern"].isin(PATTERNS)].pivot(index="pattern", columns="model", values="auc")
    assert (lead["luvnet"] > lead["c3d"]).all()


def test_delong_table_against_reference(preds):
    table = delong_table(preds, reference="luvnet")
    assert table.shape == (2, 5) and table["Model"].tolist() == ["usvn", "c3d"]
    a, c = preds["luvnet"], preds["c3d"]
    direct = [ref.delong_paired_test(a[p], a[f"p_{p}"], c[f"p_{p}"])[3] for p in PATTERNS]
    assert table.iloc[1, 1:].to_numpy(dtype=float) == pytest.approx(direct, rel=1e-6)
    assert (table.iloc[1, 1:] < 0.05).all()  # a weak comparator is clearly worse
    with pytest.raises(ConfigError, match="nonexistent"):
        delong_table(preds, reference="nonexistent")


def validation_layout(val: pd.DataFrame, num_folds: int = 5) -> pd.DataFrame:
    """The real layout of stacked validation predictions: the model of fold m validates on the
    clips of fold (m + 1) % K, so a clip of fold g was predicted by fold model (g - 1) % K."""
    return val.assign(model_fold=(val["fold"] - 1) % num_folds)


def test_threshold_table_uses_each_fold_models_own_validation_thresholds(preds):
    val = {name: validation_layout(v) for name, v in make_predictions(seed=1).items()}
    table = threshold_table(preds, val)
    assert table.shape == (12, 11)
    assert table["threshold_source"].str.startswith("per fold model").all()
    row = table[(table["model"] == "usvn") & (table["pattern"] == "b_lines")].iloc[0]
    test, v = preds["usvn"], val["usvn"]
    counts, thresholds = np.zeros(4, int), []
    for m in range(5):
        validated = v[v["fold"] == (m + 1) % 5]  # the clips the model of fold m validated on
        t = ref.youden_brute_force(validated["b_lines"], validated["p_b_lines"])
        scored = test[test["fold"] == m]  # the clips it scored as test
        counts += ref.confusion(scored["b_lines"], scored["p_b_lines"], t)
        thresholds.append(t)
    assert [row["tp"], row["fn"], row["tn"], row["fp"]] == counts.tolist()
    assert row["sensitivity"] == pytest.approx(counts[0] / (counts[0] + counts[1]))
    assert row["threshold"] == pytest.approx(np.median(thresholds))
    assert row["fold_thresholds"] == "; ".join(f"{m}: {t:.4g}" for m, t in enumerate(thresholds))
    # without validation predictions the table says the thresholds are optimistic
    optimistic = threshold_table({"usvn": test})
    assert (optimistic["threshold_source"] == "test (optimistic)").all()
    t = ref.youden_brute_force(test["b_lines"], test["p_b_lines"])
    assert optimistic.loc[1, "threshold"] == t
    assert optimistic.loc[1, ["tp", "fn", "tn", "fp"]].tolist() == list(ref.confusion(test["b_lines"], test["p_b_lines"], t))


def scaled_fold_models(num_folds: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test and validation predictions where fold model m scores on its own scale 0.2 m + ...:
    only the model's own validation threshold (0.2 m + 0.15) fits its test scores."""
    pos_val, neg_val = [0.15, 0.16, 0.17], [0.05, 0.06, 0.07]
    pos_test, neg_test = [0.15, 0.18, 0.02], [0.05, 0.08, 0.10]  # one positive scored low
    val_rows, test_rows = [], []
    for fold in range(num_folds):
        for rows, model, pos, neg in (
            (test_rows, fold, pos_test, neg_test),
            (val_rows, (fold - 1) % num_folds, pos_val, neg_val),
        ):
            for i, (label, offset) in enumerate([(1.0, o) for o in pos] + [(0.0, o) for o in neg]):
                score = 0.2 * model + offset
                rows.append({"clip_id": f"c{fold}{i}", "patient_id": f"P{fold}{i // 2}", "fold": fold,
                             "model_fold": model, **{f"p_{p}": score for p in PATTERNS},
                             **{p: label for p in PATTERNS}})
    return pd.DataFrame(test_rows), pd.DataFrame(val_rows)


def test_threshold_table_pairs_thresholds_with_the_model_that_scored_the_test_clips():
    test, val = scaled_fold_models()
    table = threshold_table({"m": test}, {"m": val}).set_index("pattern")
    # per fold: 2 of 3 positives at or above 0.2 m + 0.15, every negative below -> 10/5/15/0.
    # Pairing test fold f with the validation clips of fold f (those of fold model f - 1) would
    # give tp 12, fn 3, tn 3, fp 12.
    for pattern in PATTERNS:
        assert table.loc[pattern, ["tp", "fn", "tn", "fp"]].tolist() == [10, 5, 15, 0]
        assert table.loc[pattern, "sensitivity"] == pytest.approx(2 / 3)
        assert table.loc[pattern, "specificity"] == 1.0
        assert table.loc[pattern, "threshold"] == pytest.approx(0.55)  # median of 0.15 ... 0.95
        assert table.loc[pattern, "fold_thresholds"] == "0: 0.15; 1: 0.35; 2: 0.55; 3: 0.75; 4: 0.95"


def test_threshold_table_falls_back_to_pooled_validation_for_a_one_class_validation_fold():
    test, val = scaled_fold_models()
    val.loc[val["model_fold"] == 2, "a_lines"] = 0.0  # fold model 2 validated on no A-lines clip
    row = threshold_table({"m": test}, {"m": val}).set_index("pattern").loc["a_lines"]
    assert "fold model(s) 2: one class in its validation fold" in row["threshold_source"]
    pooled = ref.youden_brute_force(val["a_lines"], val["p_a_lines"])
    assert np.isfinite(row["threshold"]) and f"2: {pooled:.4g}" in row["fold_thresholds"]
    assert row[["tp", "fn", "tn", "fp"]].sum() == len(test)  # every test clip counted


def test_threshold_table_for_an_ensemble_pools_validation_and_refuses_unknown_models():
    test, val = scaled_fold_models()
    ensemble = test.drop(columns=["fold", "model_fold"])  # like the fold ensemble's temporal predictions
    table = threshold_table({"m": ensemble}, {"m": val})
    assert (table["threshold_source"] == "one threshold for all clips, chosen on the validation "
            "predictions of fold models 0, 1, 2, 3, 4 pooled").all()
    assert table.loc[0, "threshold"] == ref.youden_brute_force(val["a_lines"], val["p_a_lines"])
    assert np.isfinite(table["threshold"]).all()
    # which fold model scored which test clip must be known, not guessed from the clips' folds
    with pytest.raises(PredictionsError, match="no model_fold"):
        threshold_table({"m": test.drop(columns="model_fold")}, {"m": val})
    with pytest.raises(PredictionsError, match="validation predictions do not"):
        threshold_table({"m": test}, {"m": val.drop(columns="model_fold")})
    with pytest.raises(PredictionsError, match="fold model.s. 3"):
        threshold_table({"m": test}, {"m": val[val["model_fold"] != 3]})


def test_study_out_of_fold_files_carry_model_fold(tmp_path):
    from lusv import study

    test, val = scaled_fold_models()
    temporal = test.assign(clip_id="t" + test["clip_id"])
    runs = []
    for m in range(5):
        run = tmp_path / "runs" / f"m-fold{m}"
        run.mkdir(parents=True)
        for split, table in (("test", test), ("val", val), ("temporal_test", temporal)):
            mine = table[table["model_fold"] == m]
            if split == "temporal_test":
                mine = table[table["fold"] == 0].assign(fold=m, model_fold=m)
            mine.to_csv(run / f"predictions_{split}.csv", index=False)
        runs.append(run)
    stacked = {}
    for split, expected in (("test", test), ("val", val)):
        stacked[split] = study.out_of_fold(runs, split)
        assert stacked[split].columns.tolist() == expected.columns.tolist()  # model_fold right after fold
        pd.testing.assert_frame_equal(stacked[split].sort_values("clip_id", ignore_index=True),
                                      expected.sort_values("clip_id", ignore_index=True), check_dtype=False)
    ensemble = study.fold_ensemble(runs, "temporal_test")
    assert "fold" not in ensemble.columns and "model_fold" not in ensemble.columns
    table = threshold_table({"m": stacked["test"]}, {"m": stacked["val"]})
    assert table.loc[0, ["tp", "fn", "tn", "fp"]].tolist() == [10, 5, 15, 0]


def test_roc_figure_has_one_axis_per_pattern(preds, tmp_path):
    import matplotlib.pyplot as plt

    fig = roc_figure(preds)
    assert len(fig.axes) == 4
    first = fig.axes[0]
    assert first.get_title() == "A-lines"
    assert len(first.get_lines()) == 4  # 3 models + chance line
    labels = first.get_legend_handles_labels()[1]  # the names the tables show, not study keys
    assert labels[0].startswith("LUV-Net (AUC ") and labels[1].startswith("USVN (AUC ")
    path = save_figure(fig, tmp_path / "fig" / "roc.png")
    plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_roc_panel_with_one_class_says_so(preds):
    import warnings

    import matplotlib.pyplot as plt

    one_class = {name: pred.assign(a_lines=1.0) for name, pred in preds.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "No artists with labels" warning from an empty legend
        fig = roc_figure(one_class)
    first = fig.axes[0]
    assert len(first.get_lines()) == 1 and first.get_legend() is None
    assert "only one class" in first.texts[0].get_text()
    assert fig.axes[1].get_legend() is not None
    plt.close(fig)


def test_results_tables_saved_as_csv(preds, tmp_path):
    tables = results_tables(preds, n_boot=50)
    assert set(tables) == {"auc_summary", "auc_table", "delong_p", "thresholds"}
    paths = save_tables(tables, tmp_path / "results")
    assert sorted(p.name for p in paths) == ["auc_summary.csv", "auc_table.csv", "delong_p.csv", "thresholds.csv"]
    back = pd.read_csv(tmp_path / "results" / "auc_table.csv")
    pd.testing.assert_frame_equal(back, tables["auc_table"])
    assert not list((tmp_path / "results").glob(".*.tmp"))  # atomic writes leave no temp files


def test_read_predictions_keeps_ids_as_strings(preds, tmp_path):
    df = preds["luvnet"].assign(clip_id=[f"{i:05d}" for i in range(len(preds["luvnet"]))])
    df.to_csv(tmp_path / "p.csv", index=False)
    assert read_predictions(tmp_path / "p.csv")["clip_id"].iloc[0] == "00000"


def test_training_table_reports_the_epoch_with_the_lowest_validation_loss(tmp_path):
    """Notebooks 02 and 03 show it for every run. Hand-worked: run a's validation loss is lowest
    at epoch 2 (0.5), while its AUC peaks at epoch 3, so the best epoch's AUC is 0.7, not 0.8."""
    from lusv.report.tables import training_table

    for name, log in {"a": {"epoch": [1, 2, 3], "train_loss": [0.9, 0.7, 0.6], "val_loss": [0.7, 0.5, 0.6],
                            "val_macro_auc": [0.6, 0.7, 0.8], "lr": [1e-3] * 3, "seconds": [1.0, 2.0, 3.5]},
                      "b": {"epoch": [], "train_loss": [], "val_loss": [], "val_macro_auc": [], "lr": [], "seconds": []}
                      }.items():
        (tmp_path / name).mkdir()
        pd.DataFrame(log).to_csv(tmp_path / name / "log.csv", index=False)
    table = training_table([tmp_path / "a", tmp_path / "b"]).set_index("run")
    assert table.loc["a", ["epochs", "best_epoch", "val_loss", "val_macro_auc", "seconds"]].tolist() == [3, 2, 0.5, 0.7, 6.5]
    assert table.loc["b", "epochs"] == 0 and np.isnan(table.loc["b", "val_loss"])
