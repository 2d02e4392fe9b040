"""Result tables and ROC figure on synthetic out-of-fold predictions of three models."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from lusv.errors import ConfigError
from lusv.metrics import compare_models, delong_ci, sensitivity_specificity, youden_threshold
from lusv.patterns import DISPLAY_NAMES, PATTERNS
from lusv.report import (
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
                         "fold": patient % 5})
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
    auc, low, high = delong_ci(preds["usvn"]["consolidation"], preds["usvn"]["p_consolidation"])
    assert table.loc[1, "Consolidation"] == format_auc_ci(auc, low, high)
    # the strongest synthetic model ranks first on every pattern
    lead = summaries[summaries["pattern"].isin(PATTERNS)].pivot(index="pattern", columns="model", values="auc")
    assert (lead["luvnet"] > lead["c3d"]).all()


def test_delong_table_against_reference(preds):
    table = delong_table(preds, reference="luvnet")
    assert table.shape == (2, 5) and table["Model"].tolist() == ["usvn", "c3d"]
    direct = compare_models(preds["luvnet"], preds["c3d"])
    assert table.iloc[1, 1:].to_numpy(dtype=float) == pytest.approx(direct["p_value"].to_numpy())
    assert (table.iloc[1, 1:] < 0.05).all()  # a weak comparator is clearly worse
    with pytest.raises(ConfigError, match="nonexistent"):
        delong_table(preds, reference="nonexistent")


def test_threshold_table_uses_validation_thresholds_per_fold(preds):
    val = make_predictions(seed=1)  # stand-in for each fold model's validation predictions
    table = threshold_table(preds, val)
    assert table.shape == (12, 10)
    assert (table["threshold_source"] == "validation per fold").all()
    row = table[(table["model"] == "usvn") & (table["pattern"] == "b_lines")].iloc[0]
    test, v = preds["usvn"], val["usvn"]
    counts = np.zeros(4, int)
    for f in range(5):
        t = youden_threshold(v.loc[v["fold"] == f, "b_lines"], v.loc[v["fold"] == f, "p_b_lines"])
        c = sensitivity_specificity(test.loc[test["fold"] == f, "b_lines"], test.loc[test["fold"] == f, "p_b_lines"], t)
        counts += [c.tp, c.fn, c.tn, c.fp]
    assert [row["tp"], row["fn"], row["tn"], row["fp"]] == counts.tolist()
    assert row["sensitivity"] == pytest.approx(counts[0] / (counts[0] + counts[1]))
    # without validation predictions the table says the thresholds are optimistic
    optimistic = threshold_table({"usvn": test})
    assert (optimistic["threshold_source"] == "test (optimistic)").all()
    c = sensitivity_specificity(test["b_lines"], test["p_b_lines"], youden_threshold(test["b_lines"], test["p_b_lines"]))
    assert optimistic.loc[1, ["tp", "fn", "tn", "fp"]].tolist() == [c.tp, c.fn, c.tn, c.fp]


def test_roc_figure_has_one_axis_per_pattern(preds, tmp_path):
    import matplotlib.pyplot as plt

    fig = roc_figure(preds)
    assert len(fig.axes) == 4
    first = fig.axes[0]
    assert first.get_title() == "A-lines"
    assert len(first.get_lines()) == 4  # 3 models + chance line
    assert first.get_legend_handles_labels()[1][0].startswith("luvnet (AUC ")
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
