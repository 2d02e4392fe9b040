"""lusv.evaluation.video_level: window predictions -> video predictions (mean / max of the windows, any
positive window), and AUCs at both levels with patient-bootstrap CIs, on a hand-worked example."""

import numpy as np
import pandas as pd
import pytest

from lusv.errors import ConfigError, PredictionsError
from lusv.data.patterns import PATTERNS
from lusv.evaluation.video_level import level_summaries, level_table, video_predictions

# Three videos of three windows; v2 and v3 belong to the same patient.
#   v1 (patient p1): p = 0.2, 0.9, 0.4   labels 0, 1, 1  -> mean 0.5,     max 0.9,  video label 1
#   v2 (patient p2): p = 0.6, 0.5, 0.1   labels 0, 0, 0  -> mean 0.4,     max 0.6,  video label 0
#   v3 (patient p2): p = 0.95, 0.05, 0.1 labels 0, 0, 0  -> mean 0.3667,  max 0.95, video label 0
# Window AUC: positives 0.9, 0.4 vs the 7 negatives; 0.9 beats 6, 0.4 beats 4 -> 10 / 14 = 5/7.
# Video AUC: mean 0.5 > 0.4, 0.3667 -> 1;  max 0.9 beats 0.6, not 0.95 -> 1/2.
# B-lines has v1's first window unlabelled: window AUC 0.9 beats 5 of 6, 0.4 beats 3 -> 8/12;
# the video labels (any positive window) are unchanged.
PROBABILITIES = [0.2, 0.9, 0.4, 0.6, 0.5, 0.1, 0.95, 0.05, 0.1]
LABELS = [0, 1, 1, 0, 0, 0, 0, 0, 0]


def _windows() -> pd.DataFrame:
    table = pd.DataFrame({
        "clip_id": [f"v{v}_w{w}" for v in (1, 2, 3) for w in range(3)],
        "video_id": [f"v{v}" for v in (1, 2, 3) for _ in range(3)],
        "patient_id": ["p1"] * 3 + ["p2"] * 6,
        "fold": [0] * 3 + [1] * 6,
        "model_fold": [0] * 3 + [1] * 6,
    })  # fmt: skip
    for pattern in PATTERNS:
        table[f"p_{pattern}"] = PROBABILITIES
        table[pattern] = np.array(LABELS, dtype=float)
    table.loc[0, "b_lines"] = np.nan
    return table


def test_video_predictions_average_or_take_the_max_of_the_windows_and_any_positive_label():
    mean = video_predictions(_windows(), "mean")
    assert mean["clip_id"].tolist() == ["v1", "v2", "v3"] and mean["patient_id"].tolist() == ["p1", "p2", "p2"]
    assert mean["n_windows"].tolist() == [3, 3, 3] and mean["model_fold"].tolist() == [0, 1, 1]
    np.testing.assert_allclose(mean["p_a_lines"], [0.5, 0.4, 1.1 / 3])
    np.testing.assert_allclose(video_predictions(_windows(), "max")["p_a_lines"], [0.9, 0.6, 0.95])
    for pattern in PATTERNS:
        assert mean[pattern].tolist() == [1.0, 0.0, 0.0]


def test_a_video_label_is_missing_only_when_no_window_is_labelled():
    windows = _windows()
    windows.loc[[3, 4], "consolidation"] = np.nan  # v2: one labelled negative window left
    windows.loc[[6, 7, 8], "pleural_effusion"] = np.nan  # v3: none labelled
    videos = video_predictions(windows)
    assert videos["consolidation"].tolist() == [1.0, 0.0, 0.0]
    assert videos["pleural_effusion"].iloc[:2].tolist() == [1.0, 0.0] and np.isnan(videos["pleural_effusion"].iloc[2])


def test_without_video_id_each_clip_is_its_own_video():
    windows = _windows().drop(columns="video_id")
    videos = video_predictions(windows, "max")
    assert videos["clip_id"].tolist() == windows["clip_id"].tolist()
    np.testing.assert_allclose(videos["p_a_lines"], PROBABILITIES)
    assert (videos["n_windows"] == 1).all()


def test_a_video_split_across_patients_or_fold_models_is_refused():
    windows = _windows()
    windows.loc[2, "patient_id"] = "p9"
    with pytest.raises(PredictionsError, match=r"video\(s\) \['v1'\] have windows with more than one patient_id"):
        video_predictions(windows)
    windows = _windows()
    windows.loc[8, "model_fold"] = 0
    with pytest.raises(PredictionsError, match="more than one model_fold"):
        video_predictions(windows)
    with pytest.raises(ConfigError, match="'median'"):
        video_predictions(_windows(), "median")


def test_window_and_video_aucs_as_worked_by_hand_with_patient_resampled_cis():
    summary = level_summaries({"luvnet": _windows()}, n_boot=200).set_index(["level", "pattern"])
    assert summary.loc[("window", "a_lines"), "auc"] == pytest.approx(5 / 7)
    assert summary.loc[("window", "b_lines"), "auc"] == pytest.approx(8 / 12)
    assert summary.loc[("window", "macro"), "auc"] == pytest.approx((3 * 5 / 7 + 8 / 12) / 4)
    # micro: 8 positive pairs (0.9, 0.4 per pattern) vs 27 negatives; 0.9 beats all but the four
    # 0.95s (23 each), 0.4 beats the three labelled 0.2s, eight 0.1s and four 0.05s (15 each)
    assert summary.loc[("window", "micro"), "auc"] == pytest.approx((4 * 23 + 4 * 15) / (8 * 27))
    assert summary.loc[("video_mean", "a_lines"), "auc"] == pytest.approx(1.0)
    assert summary.loc[("video_max", "b_lines"), "auc"] == pytest.approx(0.5)
    assert summary.loc[("window", "a_lines"), "n_units"] == 9 and summary.loc[("video_max", "macro"), "n_units"] == 3
    # Resampling patients (p1 drawn c1 times, p2 c2 times): at the window level the AUC is
    # (2 c1 + 8 c2) / (2 c1 + 12 c2): 5/7 when both are drawn, 1 with p1 alone, undefined with
    # p2 alone. v2 and v3 always come together, so the max-video AUC is 1/2 whenever defined.
    # Resampling windows or videos instead would give intervals reaching far below.
    assert summary.loc[("window", "a_lines"), ["ci_low", "ci_high"]].tolist() == pytest.approx([5 / 7, 1.0])
    assert summary.loc[("video_max", "a_lines"), ["ci_low", "ci_high"]].tolist() == pytest.approx([0.5, 0.5])
    assert (summary["ci_method"] == "patient-bootstrap").all()


def test_level_table_has_one_row_per_model_and_level():
    summaries = level_summaries({"luvnet": _windows(), "usvn": _windows()}, n_boot=20)
    table = level_table(summaries)
    assert table.columns.tolist() == ["Model", "Level", "windows / videos", "A-lines", "B-lines", "Consolidation",
                                      "Pleural effusion", "Macro", "Micro"]
    assert table[["Model", "windows / videos"]].values.tolist() == [["luvnet", 9], ["luvnet", 3], ["usvn", 9], ["usvn", 3]]
    assert table["Level"].tolist()[:2] == ["window (the paper's)", "video, mean of its windows"]
    assert table.loc[0, "A-lines"] == "0.714 (0.71–1.00)"
    assert level_table(summaries, ["video_max"])["Level"].tolist() == ["video, max of its windows"] * 2
    with pytest.raises(ConfigError, match="unknown level"):
        level_table(summaries, ["clip"])


def test_video_level_results_of_a_run_are_saved_beside_its_other_tables(tmp_path):
    from lusv.infra.io import write_csv
    from lusv.study import video_level_results

    write_csv(tmp_path / "oof" / "luvnet.test.csv", _windows())
    tables = video_level_results(tmp_path, n_boot=20)
    saved = pd.read_csv(tmp_path / "tables" / "test_levels.csv")
    assert len(saved) == 3 * 6 and set(saved["level"]) == {"window", "video_mean", "video_max"}
    assert tables["window_vs_video"]["windows / videos"].tolist() == [9, 3]
    # the saved tables hold the hand-worked values: the max-video AUC is 1/2 in every resample
    video_max = pd.read_csv(tmp_path / "tables" / "test_video_max.csv")
    assert video_max[["Level", "windows / videos", "A-lines"]].values.tolist() == [
        ["video, max of its windows", 3, "0.500 (0.50–0.50)"]]
    window_vs_video = pd.read_csv(tmp_path / "tables" / "test_window_vs_video.csv")
    assert window_vs_video["A-lines"].str.split(" ").str[0].tolist() == ["0.714", "1.000"]


def test_video_level_cis_equal_the_slow_patient_bootstrap_of_a_video_table_made_by_hand():
    """Ten patients, one or two videos each of two or three windows: the video table is made here
    with pandas (mean / max of the windows' probabilities, max of their labels), and every CI at
    each level is the slow patient bootstrap of reference_stats on that table, same seed."""
    from reference_stats import patient_bootstrap_cis

    rng = np.random.default_rng(4)
    rows = []
    for patient in range(10):
        for video in range(1 + patient % 2):
            labels = (rng.random(4) < [0.5, 0.4, 0.5, 0.3]).astype(float)
            for window in range(2 + (patient + video) % 2):
                # the first window carries the video's labels, later ones lose some positives
                window_labels = labels if window == 0 else labels * (rng.random(4) < 0.8)
                rows.append({"clip_id": f"v{patient}.{video}_w{window}", "video_id": f"v{patient}.{video}",
                             "patient_id": f"p{patient}", "fold": patient % 3, "model_fold": patient % 3,
                             **{f"p_{p}": float(labels[j] * 0.8 + rng.normal()) for j, p in enumerate(PATTERNS)},
                             **dict(zip(PATTERNS, window_labels))})
    windows = pd.DataFrame(rows)
    probabilities = [f"p_{p}" for p in PATTERNS]
    grouped = windows.groupby("video_id", sort=False)
    tables = {"window": windows,
              "video_mean": grouped[probabilities].mean().join(grouped[list(PATTERNS)].max()).join(grouped["patient_id"].first()),
              "video_max": grouped[probabilities].max().join(grouped[list(PATTERNS)].max()).join(grouped["patient_id"].first())}
    summary = level_summaries({"luvnet": windows}, n_boot=200, seed=2).set_index(["level", "pattern"])
    for level, table in tables.items():
        expected = patient_bootstrap_cis(table[list(PATTERNS)].to_numpy(float), table[probabilities].to_numpy(float),
                                         table["patient_id"], n_boot=200, seed=2)
        assert summary.loc[(level, "macro"), "n_units"] == len(table)
        for key, column in [*enumerate(PATTERNS), ("micro", "micro"), ("macro", "macro")]:
            got = summary.loc[(level, column), ["ci_low", "ci_high"]].to_numpy(dtype=float)
            np.testing.assert_allclose(got, expected[key], rtol=0, atol=1e-12, err_msg=f"{level} {column}")
