"""The study as a document: human model names, conclusions generated from the tables they quote,
quiet notebook logging and progress, the HTML index, the saliency-in-region score and the
synthetic region masks it is scored against."""

from __future__ import annotations

import json
import logging
import re
import sys

import numpy as np
import pandas as pd
import pytest

from lusv.report.conclusions import ablation_conclusion, comparison_conclusion, model_conclusion, results_conclusion
from lusv.report.html import write_index
from lusv.report.names import model_name, readable, with_model_names
from lusv.data.patterns import DISPLAY_NAMES, PATTERNS
from lusv.report.tables import auc_summaries, auc_table, delong_table
from lusv.explain.saliency import region_scores, summarize_region_scores
from test_report import make_predictions


def test_study_keys_get_human_names():
    assert [model_name(k) for k in ("luvnet", "usvn", "luvnet_k13", "luvnet_h4", "r2plus1d", "linear_probe", "mystery")] == [
        "LUV-Net", "USVN", "LUV-Net K=13", "LUV-Net H=4", "R(2+1)D-18", "Linear probe", "mystery"]
    table = with_model_names(pd.DataFrame({"Model": ["luvnet_no_temporal", "c3d"], "x": [1, 2]}))
    assert table["Model"].tolist() == ["LUV-Net without temporal module", "C3D"]
    long = readable(pd.DataFrame({"model": ["luvnet_k13"], "pattern": ["pleural_effusion"], "auc": [0.7]}))
    assert long.iloc[0].tolist() == ["LUV-Net K=13", "Pleural effusion", 0.7]
    assert readable(pd.DataFrame({"column": ["macro", "a_lines"]}))["column"].tolist() == ["Macro", "A-lines"]
    headers = readable(pd.DataFrame(columns=["key", "pleural_effusion_diff", "macro_paper", "gmac_lusv", "num_heads",
                                             "fold_mean", "auc"])).columns.tolist()
    assert headers == ["Model", "Pleural effusion, difference", "Macro, paper", "GMAC, lusv", "H", "fold_mean", "auc"]


@pytest.fixture(scope="module")
def tables():
    predictions = make_predictions()
    summaries = auc_summaries(predictions, n_boot=50)
    return predictions, summaries, auc_table(summaries), delong_table(predictions)


def test_comparison_conclusion_quotes_the_cells_of_the_auc_table(tables):
    _, summaries, table, delong = tables
    text = comparison_conclusion(summaries, delong, "luvnet", paper_table=1)
    for _, row in table.iterrows():  # every model's macro cell, exactly as the table prints it
        assert f"{model_name(row['Model'])} {row['Macro']}" in text
    # highest first: the strongest simulated model (luvnet) leads the listing
    assert text.index("LUV-Net 0.") < text.index("USVN 0.") < text.index("C3D 0.")
    # every pattern with p < 0.05 in the DeLong table is named with its p-value, and only those
    assert "Paired DeLong p < 0.05 against LUV-Net (8 of 8 pairs" in text  # all tiny here (hand-checked table)
    for _, row in delong.iterrows():
        segment = text.split(f"{model_name(row['Model'])} for ")[1].split(";")[0].split(". ")[0]
        for pattern in PATTERNS:
            p = row[DISPLAY_NAMES[pattern]]
            assert f"{DISPLAY_NAMES[pattern]} ({'p < 0.001' if p < 0.001 else f'p = {p:.3f}'})" in segment
    few = delong.assign(**{"A-lines": [0.0123, 0.2], "B-lines": [0.5, 0.049]})
    few_text = comparison_conclusion(summaries, few.iloc[:, :3], "luvnet", paper_table=None)
    assert "(2 of 4 pairs, uncorrected): USVN for A-lines (p = 0.012); C3D for B-lines (p = 0.049)." in few_text
    assert "No paired DeLong test against LUV-Net reaches p < 0.05 (4 model-pattern pairs)" in comparison_conclusion(
        summaries, few.iloc[:, :3].assign(**{"A-lines": 0.5, "B-lines": 0.5}), "luvnet", paper_table=None)
    # the paper's Table 1 macro AUCs of the same models (published figures)
    assert "LUV-Net 0.894 ± 0.009" in text and "USVN 0.856 ± 0.058" in text and "C3D 0.792 ± 0.023" in text


def test_model_conclusion_states_chance_from_the_ci_and_names_best_and_worst_pattern(tables):
    _, summaries, table, _ = tables
    one = summaries[summaries["model"] == "c3d"]
    text = model_conclusion(one, "c3d")
    assert f"macro AUC {table.set_index('Model').loc['c3d', 'Macro']}" in text
    low, high = one.set_index("pattern").loc["macro", ["ci_low", "ci_high"]]
    expected = "above chance" if low > 0.5 else ("below chance" if high < 0.5 else "not distinguishable from chance")
    assert expected in text
    per_pattern = one[one["pattern"].isin(PATTERNS)].sort_values("auc")
    assert f"Highest pattern: {DISPLAY_NAMES[per_pattern['pattern'].iloc[-1]]}" in text
    assert f"lowest: {DISPLAY_NAMES[per_pattern['pattern'].iloc[0]]}" in text
    assert "The paper reports C3D at macro AUC 0.792 ± 0.023" in text


def test_ablation_conclusion_gives_the_temporal_gain_and_the_sweeps_beside_the_papers(tables):
    from lusv.report.sweeps import sweep_table

    predictions, _, _, _ = tables
    renamed = {"luvnet": predictions["luvnet"], "luvnet_no_temporal": predictions["usvn"],
               "luvnet_k13": predictions["c3d"], "luvnet_h4": predictions["usvn"]}
    summaries = auc_summaries(renamed, n_boot=50)
    sweeps = {"kernel_size": sweep_table(renamed, {"luvnet": 5, "luvnet_k13": 13}, "kernel_size", n_boot=50),
              "num_heads": sweep_table(renamed, {"luvnet_h4": 4, "luvnet": 8}, "num_heads", n_boot=50)}
    text = ablation_conclusion(summaries, None, sweeps=sweeps)
    macro = summaries[summaries["pattern"] == "macro"].set_index("model")
    assert f"by {macro.loc['luvnet', 'auc'] - macro.loc['luvnet_no_temporal', 'auc']:+.3f}" in text
    cell = auc_table(summaries).set_index("Model")["Macro"]  # the sweep quotes the pooled cells of the AUC table
    assert f"K = 5 {cell['luvnet']}, K = 13 {cell['luvnet_k13']}; highest here K = 5" in text
    assert f"H = 4 {cell['luvnet_h4']}, H = 8 {cell['luvnet']}; highest here H = 8" in text
    assert "all 5 folds" in text
    assert ("The paper's sweep is a single fold (its Table 8): 0.899 at K = 5, 0.908 at K = 13; its highest "
            "K = 13 (0.908), K = 23 (0.905), K = 3 (0.904).") in text
    assert "(its Table 9): 0.907 at H = 4, 0.909 at H = 8; its highest H = 2 (0.909), H = 8 (0.909)" in text
    tied = sweeps["num_heads"].assign(macro_pooled=[0.8123, 0.8119])
    assert "highest here, tied to three decimals: H = 4, H = 8." in ablation_conclusion(
        summaries, None, sweeps={"num_heads": tied})


def test_results_conclusion_quotes_window_and_video_level_macro_aucs():
    from lusv.evaluation.video_level import level_summaries, level_table
    from test_video_level import _windows

    levels = level_summaries({"luvnet": _windows()}, n_boot=50)
    table = level_table(levels, ("window", "video_mean", "video_max"))["Macro"].tolist()
    predictions = {"luvnet": _windows()}
    text = results_conclusion({"test": auc_summaries(predictions, n_boot=0)}, {}, levels=levels)
    assert (f"LUV-Net macro AUC per window (the paper's unit, 9 windows) {table[0]}; per video (3 videos) "
            f"{table[1]} with a video scored by the mean of its windows, {table[2]} by their max") in text
    one_per_video = level_summaries({"luvnet": _windows().drop(columns="video_id")}, n_boot=0)
    assert "every clip is its own video" in results_conclusion({"test": auc_summaries(predictions, n_boot=0)}, {},
                                                               levels=one_per_video)


def test_results_conclusion_covers_the_temporal_set_and_the_fold_wise_figures(tables):
    from lusv.report.paper import compare_with_paper, fold_summary_table

    predictions, summaries, _, delong = tables
    folds = fold_summary_table(predictions)
    comparison = compare_with_paper(folds, 1)
    text = results_conclusion({"test": summaries, "temporal_test": summaries}, {"test": delong}, folds, comparison)
    luvnet = folds.set_index("key").loc["luvnet"]
    assert f"{luvnet['macro_mean']:.3f} ± {luvnet['macro_sd']:.3f}" in text
    assert f"{luvnet['macro_mean'] - 0.894:+.3f}" in text
    assert "temporally separated set" in text and "Table 2" in text
    assert "3 of the paper's 10 Table 1 models were trained" in text
    assert "held-out" not in text, "no held-out set, no held-out sentence"
    with_held_out = results_conclusion({"test": summaries, "held_out": summaries}, {"test": delong}, folds, comparison)
    sentence = next(part for part in with_held_out.split("Macro AUC on ") if part.startswith("the held-out test set"))
    assert "The paper (Table" not in sentence, "the paper publishes no held-out table to quote"


def test_region_scores_on_a_known_mask():
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, :2] = True  # 2 of 16 pixels
    saliency = np.zeros((4, 4))
    saliency[0, 0], saliency[0, 1], saliency[3, 3] = 3.0, 1.0, 4.0  # half the mass inside, peak outside
    assert region_scores(saliency, mask) == {"share_inside": 0.5, "area_fraction": 0.125, "pointing_hit": 0.0,
                                             "empty_map": False}
    saliency[0, 0] = 4.0  # two tied peaks, one inside: half a hit
    assert region_scores(saliency, mask)["pointing_hit"] == 0.5
    assert region_scores(np.zeros((4, 4)), mask) == {"share_inside": 0.0, "area_fraction": 0.125, "pointing_hit": 0.0,
                                                     "empty_map": True}
    uniform = region_scores(np.ones((4, 4)), mask)  # a flat map is the random-map baseline exactly
    assert uniform["share_inside"] == uniform["area_fraction"] == 0.125
    from lusv.errors import ConfigError

    with pytest.raises(ConfigError, match="region mask is empty"):
        region_scores(saliency, np.zeros((4, 4), dtype=bool))


def test_region_score_summary_compares_with_the_random_map_baseline():
    rows = [{"clip_id": f"c{i}", "pattern": "b_lines", "share_inside": 0.6 + 0.01 * i, "area_fraction": 0.1,
             "pointing_hit": float(i % 2), "empty_map": False} for i in range(8)]
    rows.append({"clip_id": "c9", "pattern": "b_lines", "share_inside": 0.0, "area_fraction": 0.1,
                 "pointing_hit": 0.0, "empty_map": True})  # counted, not scored
    summary = summarize_region_scores(pd.DataFrame(rows)).set_index("pattern")
    b = summary.loc["B-lines"]
    assert b["n_frames"] == 8 and b["share_inside"] == pytest.approx(0.635) and b["random_map_share"] == 0.1
    assert b["lift"] == pytest.approx(0.535) and b["p_value"] < 0.01 and b["pointing_game"] == 0.5
    assert summary.loc["A-lines", "n_frames"] == 0 and np.isnan(summary.loc["A-lines", "share_inside"])
    assert b["empty_maps"] == 1


def test_attention_conclusion_says_whether_the_maps_fall_on_the_regions():
    from lusv.report.conclusions import attention_conclusion

    summary = pd.DataFrame([
        {"pattern": "A-lines", "n_frames": 9, "share_inside": 0.30, "random_map_share": 0.05, "lift": 0.25,
         "p_value": 0.004, "empty_maps": 0},
        {"pattern": "B-lines", "n_frames": 9, "share_inside": 0.01, "random_map_share": 0.04, "lift": -0.03,
         "p_value": 0.02, "empty_maps": 3},
        {"pattern": "Consolidation", "n_frames": 0, "share_inside": np.nan, "random_map_share": np.nan,
         "lift": np.nan, "p_value": np.nan, "empty_maps": 0},
    ])
    text = attention_conclusion(None, summary, frames_without_region=2)
    assert "18 non-empty maps scored; 2 top frames did not show the pattern" in text
    assert "A-lines 0.300 vs 0.050 (p = 0.004); B-lines 0.010 vs 0.040 (p = 0.020)." in text
    assert "3 further maps are all zero" in text
    assert "avoid the drawn region (less inside than a random map, p < 0.05) for B-lines." in text
    assert "more than a random map would for A-lines." in text
    nothing = attention_conclusion(None, summary.iloc[1:])
    assert "For no pattern do the maps fall on the drawn region more than a random map would" in nothing


def test_region_masks_follow_the_frame_truth_and_the_cached_pixels(tiny_data):
    from lusv.data.cache import ClipCache
    from lusv.data.sources.synthetic import frame_truth, region_masks
    from tiny_study import IMAGE_SIZE, NUM_FRAMES

    ids = tiny_data.labels()["clip_id"].tolist()[:6]
    masks = region_masks(tiny_data.source_dir, ids, NUM_FRAMES, IMAGE_SIZE)
    assert masks.shape == (6, NUM_FRAMES, 4, IMAGE_SIZE, IMAGE_SIZE) and masks.dtype == bool
    # a region is drawn exactly in the frames where the truth says the pattern is present
    np.testing.assert_array_equal(masks.any(axis=(3, 4)), frame_truth(tiny_data.source_dir, ids, NUM_FRAMES) > 0)
    # and where the cached pixels show it: effusion is anechoic (dark), A-lines are bright bands
    clips, _ = ClipCache(tiny_data.cache_dir, NUM_FRAMES, IMAGE_SIZE).load_many(ids)
    gray = clips[..., 0].astype(float)
    for pattern, darker in (("pleural_effusion", True), ("a_lines", False)):
        inside = masks[:, :, PATTERNS.index(pattern)]
        if inside.any():
            assert (gray[inside].mean() < gray[~inside].mean()) == darker, pattern


def test_notebook_logging_keeps_info_in_the_file_and_warnings_in_the_notebook(tmp_path, monkeypatch, capsys):
    from lusv.infra.console import PROGRESS_ENV, bars_enabled
    from lusv.report.notebook import notebook_logging

    # setenv first: monkeypatch then restores the variable (unset) after notebook_logging sets it,
    # so later tests' training subprocesses do not inherit the notebooks' summary mode
    monkeypatch.setenv(PROGRESS_ENV, "auto")
    monkeypatch.delenv(PROGRESS_ENV)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        monkeypatch.setattr(sys, "stderr", sys.stdout)  # the handler writes where capsys looks
        path = notebook_logging(tmp_path / "run", "02_train_folds")
        notebook_logging(tmp_path / "run", "02_train_folds")  # a rerun of the cell adds no duplicates
        logging.getLogger("lusv.train").info("epoch 1 detail")
        for clip in ("c1", "c2", "c3"):
            logging.getLogger("lusv.data.cache").warning("clip %s was skipped", clip)
        for handler in root.handlers:
            handler.flush()
        shown = capsys.readouterr().out
        assert shown.splitlines() == [
            "WARNING lusv.data.cache: clip c1 was skipped [shown once; every occurrence in 02_train_folds.log]"]
        kept = path.read_text()
        assert path == tmp_path / "run" / "logs" / "02_train_folds.log"
        assert "epoch 1 detail" in kept and all(f"clip {c} was skipped" in kept for c in ("c1", "c2", "c3"))
        assert not bars_enabled(True)
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)


def test_summary_progress_prints_one_line_per_run(monkeypatch, capsys):
    from lusv.infra.console import PROGRESS_ENV
    from lusv.train.progress import EpochProgress

    monkeypatch.setenv(PROGRESS_ENV, "summary")
    progress = EpochProgress("luvnet-fold0", epochs=5, done=1, live=False, show=True)
    progress.epoch_done(2, 0.7, 0.69, 0.55, 1.0, improved=True)
    progress.epoch_done(3, 0.6, 0.70, 0.60, 1.5, improved=False)
    progress.close()
    assert capsys.readouterr().out.splitlines() == [
        "luvnet-fold0: epochs 2-3 of 5 in 2.5 s, best val_loss 0.6900 (val_auc 0.550) at epoch 2"]
    monkeypatch.delenv(PROGRESS_ENV)
    progress = EpochProgress("luvnet-fold0", epochs=5, done=0, live=False, show=True)
    progress.epoch_done(1, 0.7, 0.69, 0.55, 1.0, improved=True)
    progress.close()
    assert capsys.readouterr().out.startswith("luvnet-fold0 epoch 1/5  train_loss 0.7000")


def test_index_html_has_the_headline_table_the_conclusions_and_every_link(tmp_path):
    run = tmp_path / "quick-synthetic"
    (run / "tables").mkdir(parents=True)
    pd.DataFrame({"Model": ["luvnet", "luvnet_k13"], "A-lines": ["0.812 (0.70–0.90)", "0.700 (0.60–0.80)"]}).to_csv(
        run / "tables" / "test_auc_table.csv", index=False)
    (run / "notebooks").mkdir()
    for name in ("01_preprocess", "06_results"):
        (run / "notebooks" / f"{name}.ipynb").write_text("{}")
    (run / "notebooks" / "06_results.html").write_text("<html></html>")
    (run / "figures").mkdir()
    (run / "figures" / "roc_test.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (run / "conclusions").mkdir()
    (run / "conclusions" / "06_results.md").write_text("**LUV-Net** macro AUC 0.812 <beats> chance.\n")

    page = write_index(run).read_text()
    assert (run / "index.html").is_file()
    assert "<td>LUV-Net</td>" in page and "<td>LUV-Net K=13</td>" in page and "<td>0.812 (0.70–0.90)</td>" in page
    assert '<a href="notebooks/06_results.html">06_results</a>' in page  # rendered page preferred
    assert '<a href="notebooks/01_preprocess.ipynb">01_preprocess</a>' in page  # else the notebook
    assert '<img src="figures/roc_test.png"' in page and 'href="tables/test_auc_table.csv"' in page
    assert "<strong>LUV-Net</strong> macro AUC 0.812 &lt;beats&gt; chance." in page


def test_index_html_opens_with_the_claims_table_and_lists_the_findings(tmp_path):
    run = tmp_path / "quick-synthetic"
    (run / "tables").mkdir(parents=True)
    pd.DataFrame({"#": ["3"], "Claim": ["The temporal module improves LUV-Net"],
                  "quick-synthetic (a pipeline check)": ["holds: +0.130 (95% CI +0.05 to +0.21) <b>"]}).to_csv(
        run / "tables" / "claims.csv", index=False)
    pd.DataFrame({"Model": ["luvnet"], "Macro": ["0.717 (0.64–0.79)"]}).to_csv(run / "tables" / "test_auc_table.csv",
                                                                               index=False)
    (run / "conclusions").mkdir()
    (run / "conclusions" / "06_results.md").write_text("**Cross-validated (out-of-fold)**\n\n- first finding\n- second\n")
    page = write_index(run).read_text()
    first_table = page.split("<table", 1)[1].split("</table>", 1)[0]
    assert "The temporal module improves LUV-Net" in first_table and "<td>LUV-Net</td>" not in first_table
    assert ('<span class="verdict holds">holds</span>: +0.130 (95% CI +0.05 to +0.21) &lt;b&gt;' in first_table)
    assert page.index("class=\"claims\"") < page.index("<td>LUV-Net</td>"), "the claims above the AUC table"
    assert "<p><strong>Cross-validated (out-of-fold)</strong></p>\n<ul><li>first finding</li><li>second</li></ul>" in page


def test_conclusions_are_bullets_one_finding_each(tables):
    _, summaries, _, delong = tables
    text = comparison_conclusion(summaries, delong, "luvnet", paper_table=1)
    lines = text.splitlines()
    assert all(line.startswith("- ") for line in lines) and len(lines) == 4  # listing, rank, DeLong, the paper
    assert lines[1] == "- LUV-Net ranks 1 of 3."
    sections = results_conclusion({"test": summaries, "held_out": summaries}, {"test": delong})
    assert sections.startswith("**Cross-validated (out-of-fold)**\n\n- Macro AUC on the out-of-fold clips")
    assert "\n\n**Held-out test set**\n\n- Macro AUC on the held-out test set" in sections


def test_index_html_of_a_run_without_results_says_what_is_missing(tmp_path):
    page = write_index(tmp_path).read_text()
    assert "the results notebook (06) has not run" in page and "No executed notebooks yet." in page
