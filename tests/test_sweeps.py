"""lusv.report.sweeps: which study keys form the K and H sweeps, their all-fold AUCs (pooled with CI and
mean ± sd over fold models) against sklearn per fold, the paper's Tables 8-9 beside them, the
figure."""

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from lusv.data.patterns import PATTERNS
from lusv.report.sweeps import best_value, paper_comparisons, sweep_figure, sweep_points, sweep_tables
from test_report import make_predictions

matplotlib.use("Agg")

# key -> (K, H) as the runs record them; the profile's own LUV-Net is in both sweeps
TRAINED = {"luvnet": (5, 8), "luvnet_k13": (13, 8), "luvnet_h4": (5, 4), "luvnet_no_temporal": (5, 8)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("study")
    simulated = make_predictions()  # three models of decreasing strength on the same clips
    predictions = dict(zip(TRAINED, [simulated["luvnet"], simulated["usvn"], simulated["c3d"], simulated["usvn"]]))
    for key, (kernel, heads) in TRAINED.items():
        for fold in range(5):  # finished runs whose test predictions are the oof/ files the tests write
            run = run_dir / "runs" / f"{key}-fold{fold}"
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps({"params": {"kernel_size": kernel, "num_heads": heads},
                                                         "status": "finished"}))
            (run / "best.pt").touch()
            table = predictions[key]
            table[table["model_fold"] == fold].to_csv(run / "predictions_test.csv", index=False)
    return run_dir, predictions


def _macro(table: pd.DataFrame) -> float:
    aucs = []
    for pattern in PATTERNS:
        labelled = table[pattern].notna()
        aucs.append(roc_auc_score(table.loc[labelled, pattern], table.loc[labelled, f"p_{pattern}"]))
    return float(np.mean(aucs))


def test_sweep_points_are_read_from_the_runs_and_ordered_by_value(study):
    run_dir, predictions = study
    assert sweep_points(run_dir, predictions, "kernel_size") == {"luvnet": 5, "luvnet_k13": 13}
    assert list(sweep_points(run_dir, predictions, "num_heads").items()) == [("luvnet_h4", 4), ("luvnet", 8)]


def test_sweep_tables_pool_and_average_the_folds_as_sklearn_does(study):
    run_dir, predictions = study
    tables = sweep_tables(run_dir, predictions, n_boot=50)
    kernel = tables["kernel_size"].set_index("kernel_size")
    assert kernel["key"].tolist() == ["luvnet", "luvnet_k13"] and kernel["n_folds"].tolist() == [5, 5]
    assert kernel.loc[13, "macro_pooled"] == pytest.approx(_macro(predictions["luvnet_k13"]))
    folds = [_macro(part) for _, part in predictions["luvnet_k13"].groupby("model_fold")]
    assert kernel.loc[13, "macro_mean"] == pytest.approx(np.mean(folds))
    assert kernel.loc[13, "macro_sd"] == pytest.approx(np.std(folds, ddof=1))
    assert kernel.loc[13, "macro_ci_low"] < kernel.loc[13, "macro_pooled"] < kernel.loc[13, "macro_ci_high"]
    heads = tables["num_heads"].set_index("num_heads")
    assert heads.loc[4, "a_lines_pooled"] == pytest.approx(roc_auc_score(
        predictions["luvnet_h4"]["a_lines"].dropna(), predictions["luvnet_h4"].dropna(subset=["a_lines"])["p_a_lines"]))
    # the simulated luvnet (K = 5, H = 8) is the strongest model: best in both sweeps
    assert best_value(tables["kernel_size"], "kernel_size") == 5 and best_value(tables["num_heads"], "num_heads") == 8
    only_one = {key: predictions[key] for key in ("luvnet", "luvnet_h4")}
    assert list(sweep_tables(run_dir, only_one, n_boot=0)) == ["num_heads"], "one K value is no sweep"


def test_paper_tables_8_and_9_beside_the_sweeps_and_the_figure(study):
    run_dir, predictions = study
    tables = sweep_tables(run_dir, predictions, n_boot=20)
    paper = paper_comparisons(tables)
    table8 = paper["paper_table8"].set_index("kernel_size")
    assert len(table8) == 15 and table8.loc[13, "macro_paper"] == pytest.approx(0.908)
    ours = tables["kernel_size"].set_index("kernel_size").loc[13, "macro_mean"]
    assert table8.loc[13, "macro_lusv"] == pytest.approx(ours)
    assert table8.loc[13, "macro_diff"] == pytest.approx(ours - 0.908)
    assert np.isnan(table8.loc[1, "macro_lusv"])
    assert paper["paper_table9"].set_index("num_heads").loc[8, "macro_paper"] == pytest.approx(0.909)
    figure = sweep_figure(tables)
    left, right = figure.axes
    assert left.get_xlabel() == "temporal kernel size K" and right.get_xscale() == "log"
    paper_line = left.get_lines()[0]
    assert list(paper_line.get_xdata()) == list(range(1, 30, 2)) and paper_line.get_ydata()[6] == pytest.approx(0.908)


def test_sweep_results_of_a_run_are_saved(study, tmp_path):
    import shutil

    from lusv.infra.io import write_csv
    from lusv.study import sweep_results

    run_dir, predictions = study
    shutil.copytree(run_dir / "runs", tmp_path / "runs")
    for key, table in predictions.items():
        write_csv(tmp_path / "oof" / f"{key}.test.csv", table)
    results = sweep_results(tmp_path, list(predictions), n_boot=20)
    assert set(results.tables) == {"kernel_size", "num_heads"}
    saved = {name: pd.read_csv(tmp_path / "tables" / f"{name}.csv")
             for name in ("sweep_kernel_size", "sweep_num_heads", "paper_table8", "paper_table9")}
    folds = [_macro(part) for _, part in predictions["luvnet_k13"].groupby("model_fold")]
    kernel = saved["sweep_kernel_size"].set_index("kernel_size")
    assert kernel.loc[13, "macro_pooled"] == pytest.approx(_macro(predictions["luvnet_k13"]))
    assert kernel.loc[13, "macro_mean"] == pytest.approx(np.mean(folds))
    table8 = saved["paper_table8"].set_index("kernel_size")
    assert table8.loc[13, ["macro_paper", "macro_lusv"]].tolist() == pytest.approx([0.908, np.mean(folds)])
    heads = saved["paper_table9"].set_index("num_heads")
    assert heads.loc[4, "macro_lusv"] == pytest.approx(np.mean([_macro(part) for _, part in
                                                                predictions["luvnet_h4"].groupby("model_fold")]))
    assert saved["sweep_num_heads"]["num_heads"].tolist() == [4, 8]
    assert (tmp_path / "figures" / "sweeps.png").stat().st_size > 10_000


def test_the_paper_profile_sweeps_the_papers_grid_and_the_cpu_profiles_two_points():
    from lusv.report.paper import published_table
    from lusv.report.sweeps import sweep_grid

    assert sweep_grid("paper", "kernel_size") == published_table(8)["kernel_size"].tolist()
    assert sweep_grid("paper", "num_heads") == published_table(9)["num_heads"].tolist()
    assert sweep_grid("quick", "kernel_size") == [5, 13] and sweep_grid("quick", "num_heads") == [4, 8]
