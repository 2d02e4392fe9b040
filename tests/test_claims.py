"""The verdict on each claim of the paper: verdicts known by construction, the paired bootstrap
against a slow textbook version, and ``lusv claims`` on two small study folders.

Prediction tables are built so that each verdict is known before any test runs: a model that
sees the labels through little noise is better than one that sees them through much noise, a
monotone transform of a model's scores is its equal (the same ranking, so the same AUC in every
resample), and a model that was never trained is missing.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from lusv.data.patterns import PATTERNS
from lusv.report.paper_claims import CLAIMS, claim, paper_numbers
from lusv.report.verdicts import (best_value_part, chance_parts, combine, comparison_part, cost_part, HOLDS,
                                  NOT_RESOLVED, NOT_TESTED, REVERSED)
from lusv.stats.bootstrap import paired_patient_bootstrap, percentile_ci
from lusv.stats.metrics import compare_macro

N_PATIENTS = 40


def _labels(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(N_PATIENTS), 3)
    labels = (rng.random((len(patient), 4)) < [0.5, 0.4, 0.35, 0.3]).astype(float)
    labels[rng.random(labels.shape) < 0.05] = np.nan
    base = pd.DataFrame({"clip_id": [f"c{i:03d}" for i in range(len(patient))],
                         "patient_id": [f"P{p:02d}" for p in patient], "fold": patient % 5, "model_fold": patient % 5})
    for j, pattern in enumerate(PATTERNS):
        base[pattern] = labels[:, j]
    return base


def _model(labels: pd.DataFrame, noise: float, seed: int) -> pd.DataFrame:
    """Scores = label + noise: the smaller the noise, the better the model."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    for pattern in PATTERNS:
        out[f"p_{pattern}"] = 1 / (1 + np.exp(-(np.nan_to_num(labels[pattern].to_numpy()) * 2 - 1
                                                + noise * rng.normal(size=len(labels)))))
    return out


@pytest.fixture(scope="module")
def models() -> dict[str, pd.DataFrame]:
    labels = _labels()
    good, poor = _model(labels, 0.4, 1), _model(labels, 3.0, 2)
    same = good.copy()
    for pattern in PATTERNS:  # a monotone transform: the same ranking, so the same AUCs on any resample
        same[f"p_{pattern}"] = good[f"p_{pattern}"] ** 3
    return {"luvnet": good, "usvn": poor, "c3d": same, "luvnet_no_temporal": poor.sample(frac=1.0, random_state=0)}


# ----------------------------------------------------------------------------- the paired bootstrap


def _textbook_paired(labels, scores_a, scores_b, patients, n_boot, seed):
    """Materialise each resample (patients drawn with replacement, each drawn patient's clips
    copied in), score BOTH models on it with scikit-learn, and take the macro difference."""
    codes = {p: i for i, p in enumerate(sorted(set(patients)))}
    code = np.array([codes[p] for p in patients])
    draws = np.random.default_rng(seed).integers(0, len(codes), size=(n_boot, len(codes)))
    diffs = []
    for drawn in draws:
        rows = np.concatenate([np.flatnonzero(code == c) for c in drawn])
        per_model = []
        for scores in (scores_a, scores_b):
            aucs = []
            for j in range(labels.shape[1]):
                y, s = labels[rows, j], scores[rows, j]
                keep = ~np.isnan(y)
                y, s = y[keep], s[keep]
                aucs.append(roc_auc_score(y, s) if 0 < y.sum() < len(y) else np.nan)
            per_model.append(np.nanmean(aucs))
        diffs.append(per_model[0] - per_model[1])
    return np.array(diffs)


def test_paired_bootstrap_of_a_difference_equals_the_textbook_version(models):
    a, b = models["luvnet"], models["usvn"].set_index("clip_id").loc[models["luvnet"]["clip_id"]].reset_index()
    labels = a[list(PATTERNS)].to_numpy(float)
    scores_a = a[[f"p_{p}" for p in PATTERNS]].to_numpy(float)
    scores_b = b[[f"p_{p}" for p in PATTERNS]].to_numpy(float)
    patients = a["patient_id"].to_numpy()
    fast = paired_patient_bootstrap(labels, scores_a, scores_b, patients, n_boot=60, seed=3)
    slow = _textbook_paired(labels, scores_a, scores_b, list(patients), n_boot=60, seed=3)
    np.testing.assert_allclose(fast["macro"], slow, atol=1e-12)
    np.testing.assert_allclose(fast["macro"], fast["macro_a"] - fast["macro_b"])
    result = compare_macro(a, b, n_boot=60, seed=3)
    assert (result.ci_low, result.ci_high) == pytest.approx(np.percentile(slow, [2.5, 97.5]))
    assert percentile_ci(fast["macro"]) == pytest.approx(tuple(np.percentile(slow, [2.5, 97.5])))


def test_pairing_makes_the_ci_of_a_difference_narrower_than_two_separate_draws(models):
    a, b = models["luvnet"], models["usvn"]
    labels = a[list(PATTERNS)].to_numpy(float)
    scores = [m[[f"p_{p}" for p in PATTERNS]].to_numpy(float) for m in (a, b)]
    paired = paired_patient_bootstrap(labels, scores[0], scores[1], a["patient_id"], n_boot=400, seed=0)["macro"]
    unpaired = (paired_patient_bootstrap(labels, scores[0], scores[0], a["patient_id"], 400, seed=1)["macro_a"]
                - paired_patient_bootstrap(labels, scores[1], scores[1], a["patient_id"], 400, seed=2)["macro_a"])
    assert np.std(paired) < np.std(unpaired)


# ----------------------------------------------------------------------------- verdicts by construction


def test_a_better_an_equal_a_worse_and_a_missing_model(models):
    better = comparison_part("6", "luvnet", "usvn", models, n_boot=300)
    assert better["verdict"] == HOLDS and better["ci_low"] > 0
    equal = comparison_part("6", "luvnet", "c3d", models, n_boot=300)
    assert equal["verdict"] == NOT_RESOLVED and equal["estimate"] == 0 and equal["ci_low"] <= 0 <= equal["ci_high"]
    worse = comparison_part("6", "usvn", "luvnet", models, n_boot=300)
    assert worse["verdict"] == REVERSED and worse["ci_high"] < 0
    missing = comparison_part("5", "luvnet", "luvnet_resnet50", models, n_boot=300)
    assert missing["verdict"] == NOT_TESTED and missing["evidence"] == "no LUV-Net (ResNet-50) in this run"
    assert np.isnan(missing["estimate"]) and not re.search(r"\d\.\d", missing["evidence"]), "never a number"
    # rows are matched by clip id, not by position (luvnet_no_temporal is usvn shuffled)
    shuffled = comparison_part("3", "luvnet", "luvnet_no_temporal", models, n_boot=300)
    assert shuffled["estimate"] == pytest.approx(better["estimate"]) and shuffled["verdict"] == HOLDS
    # the DeLong p-values beside it: the good model beats the poor one on every pattern
    assert better["evidence"].endswith("DeLong p < 0.05 for A-lines, B-lines, Consolidation, Pleural effusion")


def test_a_smaller_network_stands_in_for_the_papers_and_says_so(models):
    stand_in = comparison_part("1", "luvnet", "r2plus1d_34", {**models, "r2plus1d": models["usvn"]}, n_boot=100)
    assert stand_in["verdict"] == HOLDS and "R(2+1)D-18 in place of R(2+1)D-34" in stand_in["evidence"]
    assert stand_in["part"] == "LUV-Net > R(2+1)D-34"


def test_a_claim_of_several_parts(models):
    parts = [comparison_part("1", "luvnet", key, models, n_boot=200) for key in ("usvn", "c3d", "mvit_b")]
    assert combine(parts) == (NOT_RESOLVED, "holds vs USVN; not resolved vs C3D; 1 of 3 not tested here")
    assert combine(parts[:1])[0] == HOLDS
    assert combine([parts[0], parts[0], parts[2]]) == (HOLDS, "vs USVN, USVN; 1 of 3 not tested here")
    reversed_ = comparison_part("1", "usvn", "luvnet", models, n_boot=200)
    assert combine([*parts, reversed_])[0] == REVERSED, "one part against the claim is enough"
    assert combine(parts[2:]) == (NOT_TESTED, "no MViT-B in this run")
    untested = [comparison_part("7", cnn, t, models) for cnn in ("c3d", "r2plus1d_34") for t in ("mvit_b", "swin_b")]
    assert combine(untested) == (NOT_TESTED, "no MViT-B, Swin-B or R(2+1)D-34 in this run")
    assert untested[2]["evidence"] == "no R(2+1)D-34 or MViT-B (nor R(2+1)D-18 in its place) in this run"


def test_best_value(models):
    good, poor, same = models["luvnet"], models["usvn"], models["c3d"]
    assert best_value_part("8", "kernel_size", 13, {5: poor, 13: good}, n_boot=300)["verdict"] == HOLDS
    assert best_value_part("8", "kernel_size", 13, {5: good, 13: poor}, n_boot=300)["verdict"] == REVERSED
    tie = best_value_part("8", "kernel_size", 13, {5: same, 13: good}, n_boot=300)
    assert tie["verdict"] == NOT_RESOLVED and "CIs overlap" in tie["evidence"]
    untrained = best_value_part("9", "num_heads", 8, {4: good, 2: poor}, n_boot=300)
    assert untrained["verdict"] == NOT_TESTED and untrained["evidence"] == "values trained here: H = 2, H = 4"
    assert best_value_part("9", "num_heads", 8, {8: good}, n_boot=300)["verdict"] == NOT_TESTED, "one value: no sweep"


def test_attention_and_regions_against_chance():
    attention = pd.DataFrame({"pattern": list(PATTERNS), "n_scored": [10, 10, 10, 0],
                              "attention_auc": [0.9, 0.2, 0.55, np.nan], "auc_p_value": [0.001, 0.004, 0.4, np.nan],
                              "peak": [2.0, 1.03, 1.5, np.nan]})
    parts = chance_parts("11", attention, "attention")
    assert [p["verdict"] for p in parts] == [HOLDS, REVERSED, NOT_RESOLVED, NOT_TESTED]
    assert "nearly uniform attention (peak 1.03" in parts[1]["evidence"]
    regions = pd.DataFrame({"pattern": ["A-lines", "B-lines"], "n_frames": [9, 9], "share_inside": [0.3, 0.04],
                            "random_map_share": [0.05, 0.04], "p_value": [0.004, np.nan]})
    assert [p["verdict"] for p in chance_parts("12", regions, "regions")] == [HOLDS, NOT_RESOLVED]
    assert chance_parts("12", None, "regions")[0]["verdict"] == NOT_TESTED


def test_cost_is_counted_against_a_ten_percent_band():
    table4 = pd.DataFrame({"key": ["luvnet", "usvn"], "gmac_lusv": [304.7, 302.7], "params_m_lusv": [136.0, 26.3]})
    close = cost_part("10", table4)
    assert close["verdict"] == HOLDS and "ratio 1.01" in close["evidence"] and "136.0 M vs 26.3 M" in close["evidence"]
    assert cost_part("10", table4.assign(gmac_lusv=[400.0, 302.7]))["verdict"] == REVERSED
    assert cost_part("10", table4.iloc[:1])["verdict"] == NOT_TESTED


def test_every_claim_is_data_with_the_papers_numbers():
    assert len(CLAIMS) >= 10 and len({c.id for c in CLAIMS}) == len(CLAIMS)
    assert paper_numbers(claim("3")) == "LUV-Net 0.894 ± 0.009; LUV-Net without temporal module 0.885 ± 0.011"
    assert paper_numbers(claim("1")) == "LUV-Net 0.894 ± 0.009; highest other Frame-based 0.883 ± 0.011"
    assert paper_numbers(claim("8")) == "macro 0.908 at K = 13 (highest 0.908); micro highest at K = 23 (0.907)"
    assert "USVN 302.74 GMAC" in paper_numbers(claim("10"))
    assert {key for c in CLAIMS for key in c.keys()} <= {
        "luvnet", "luvnet_no_temporal", "luvnet_resnet50", "luvnet_random_init", "usvn", "c3d", "r2plus1d_34",
        "cnn_lstm", "frame_based", "mvit_b", "swin_b", "linear_probe"}


# ----------------------------------------------------------------------------- lusv claims on run folders


def _study(root, name: str, models: dict[str, pd.DataFrame], profile: str, data: str, temporal=None):
    """A study folder with out-of-fold predictions only (what the claims read), no training."""
    from lusv.data.prepared import Prepared

    run = root / name
    Prepared(run_dir=run, labels_csv=run / "prepare" / "labels.csv", folds_csv=run / "prepare" / "folds.csv",
             temporal_csv=None, cache_root=root / "cache", num_frames=8, image_size=32, num_folds=5, dataset=name,
             data=data, profile=profile).save()
    (run / "oof").mkdir()
    for key, table in models.items():
        table.to_csv(run / "oof" / f"{key}.test.csv", index=False)
        if temporal is not None:
            temporal[key].to_csv(run / "oof" / f"{key}.temporal_test.csv", index=False)
    (run / "tables").mkdir()
    pd.DataFrame({"key": ["luvnet", "usvn"], "gmac_lusv": [3.1, 3.0], "params_m_lusv": [1.0, 0.5]}).to_csv(
        run / "tables" / "paper_table4.csv", index=False)
    return run


def test_lusv_claims_prints_one_column_per_run_and_saves_csv_and_markdown(models, tmp_path, capsys, monkeypatch):
    from lusv.cli import main

    quick = _study(tmp_path, "quick-synthetic", {k: models[k] for k in ("luvnet", "usvn", "c3d")}, "quick", "synthetic",
                   temporal={k: models[k] for k in ("luvnet", "usvn", "c3d")})
    pocus = _study(tmp_path, "pretrained-pocus", {"luvnet": models["usvn"], "usvn": models["luvnet"],
                                                  "linear_probe": models["c3d"]}, "pretrained", "pocus")
    monkeypatch.chdir(tmp_path)
    assert main(["claims", str(quick), str(pocus), "--n-boot", "200"]) == 0
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert lines[0].startswith("| # | Claim | Where | The paper | quick-synthetic (synthetic quick run: a pipeline check")
    assert "| pretrained-pocus (real clips, frozen ImageNet encoder: not the paper's fine-tuning) |" in lines[0]
    summary = pd.read_csv(tmp_path / "claims.csv", dtype=str).set_index("#")
    assert list(summary.index) == [c.id for c in CLAIMS], "every claim a row"
    quick_col, pocus_col = summary.columns[3], summary.columns[4]
    assert summary.loc["6", quick_col].startswith("holds: LUV-Net ")
    assert summary.loc["6", pocus_col].startswith("reversed: LUV-Net ")
    assert summary.loc["2", pocus_col] == "not tested here: no temporally separated test set (fold ensemble) in this run"
    assert summary.loc["5", quick_col] == "not tested here: no LUV-Net (ResNet-50) in this run"
    assert summary.loc["13", quick_col] == "not tested here: no Linear probe in this run"
    assert summary.loc["13", pocus_col].startswith("reversed: LUV-Net 0."), "here LUV-Net is the poor model, the probe the good"
    assert summary.loc["10", quick_col].startswith("holds: counted at 30 x 256 x 256, not trained")
    assert summary.loc["8", quick_col] == "not tested here: values trained here: none"
    detail = pd.read_csv(tmp_path / "claims_detail.csv")
    assert set(detail["run"]) == {"quick-synthetic", "pretrained-pocus"}
    saved = (tmp_path / "claims.md").read_text()
    assert saved.startswith(printed.out.rstrip("\n")) and "Each part, with its numbers:" in saved
    assert "Each part" not in printed.out, "printed: the summary and the rules (--detail adds the parts)"
    assert "| **holds**: LUV-Net" in printed.out


def test_lusv_claims_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    from lusv.cli import main

    assert main(["claims", str(tmp_path)]) == 2
    assert "is neither a study folder" in capsys.readouterr().err


def test_an_external_validation_is_a_column_too(models, tmp_path):
    from lusv.evaluation.claims import claims_tables

    study = _study(tmp_path, "pretrained-pocus", {"luvnet": models["luvnet"]}, "pretrained", "pocus")
    external = study / "external" / "other"
    external.mkdir(parents=True)
    for key in ("luvnet", "linear_probe"):
        models["luvnet" if key == "linear_probe" else "usvn"].to_csv(external / f"predictions_{key}.csv", index=False)
    (external / "external.json").write_text(json.dumps({"study": str(study), "dataset": "other", "clips": 120}))
    tables = claims_tables([external], n_boot=200)
    column = tables.runs[0]
    assert column.startswith("pretrained-pocus on other (external validation on other (120 clips) of a study of real")
    summary = tables.summary.set_index("#")
    assert summary.loc["13", column].startswith("reversed:"), "the probe (the good model here) transfers better"
    assert summary.loc["2", column].startswith("not tested here")
