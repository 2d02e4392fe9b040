"""``lusv external`` and the linear probe on the tiny study.

A tiny study (the tiny data, three folds) trains LUV-Net on frozen features and USVN end to end,
one epoch each; another dataset that labels only A-lines and B-lines is then predicted with the
fold models. Expected values come from the fold models themselves run clip by clip (their mean)
and a textbook Youden search written here.
"""


import numpy as np
import pandas as pd
import pytest

from lusv import study
from lusv.cli import main
from lusv.data.patterns import PATTERNS

from tiny_study import copy_of_tiny_study


@pytest.fixture(scope="module")
def tiny_study(tiny_data, tmp_path_factory):
    return copy_of_tiny_study(tiny_data, tmp_path_factory.mktemp("external") / "study",
                              {"luvnet": {"model": "luvnet", "train_encoder": False, "feature_views": 1},
                               "usvn": {"model": "usvn"}})


def _other_dataset(tiny_data, tmp_path):
    """8 of the synthetic videos under new ids, A-lines and B-lines labelled, the rest empty; one missing file."""
    labels = pd.read_csv(tiny_data.source_dir / "labels.csv").iloc[:8]
    rows = pd.DataFrame({
        "clip_id": [f"EXT-{i}" for i in range(8)] + ["EXT-missing"],
        "path": [str(tiny_data.source_dir / p) for p in labels["path"]] + [str(tmp_path / "gone.mp4")],
        "patient_id": [f"EXT-P{i // 2}" for i in range(8)] + ["EXT-P9"],
        "a_lines": [0, 1, 0, 1, 0, 1, 1, 0, 1], "b_lines": [1, 0, 1, 0, 1, 0, 0, 1, 0],
        "consolidation": [""] * 9, "pleural_effusion": [""] * 9,
    })  # fmt: skip
    csv = tmp_path / "other" / "labels.csv"
    csv.parent.mkdir()
    rows.to_csv(csv, index=False)
    return csv


def _textbook_youden(y, score):
    """The highest threshold t (among the scores) maximising sensitivity + specificity - 1 of score >= t."""
    keep = ~np.isnan(y)
    y, score = y[keep].astype(bool), score[keep]
    best_j, best_t = -np.inf, None
    for t in sorted(set(score), reverse=True):
        j = np.mean(score[y] >= t) + np.mean(score[~y] < t) - 1
        if j > best_j + 1e-9:
            best_j, best_t = j, t
    return best_t


def test_external_with_two_patterns_labelled(tiny_study, tiny_data, tmp_path, capsys):
    csv = _other_dataset(tiny_data, tmp_path)
    out = tmp_path / "ext"
    code = main(["external", "--study", str(tiny_study.run_dir), "--data", "folder", "--data-path", str(csv),
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "missing file" in printed  # the ingestion summary

    table = pd.read_csv(out / "external_auc.csv").set_index(["model", "pattern"])
    assert sorted(table.index.get_level_values("model").unique()) == ["luvnet", "usvn"]
    for model in ("luvnet", "usvn"):
        for pattern in ("consolidation", "pleural_effusion"):
            row = table.loc[(model, pattern)]
            assert np.isnan(row["auc"]) and row["n_labelled"] == 0 and row["note"] == "not labelled in this dataset"
        for pattern in ("a_lines", "b_lines"):
            row = table.loc[(model, pattern)]
            assert row["n_labelled"] == 8 and row["n_pos"] == 4
            assert 0 <= row["ci_low"] <= row["auc"] <= row["ci_high"] <= 1

    # The probabilities are the mean of the fold models run on the clips themselves.
    from lusv.data.cache import ClipCache
    from lusv.inference import load_trained, predict

    ids = [f"EXT-{i}" for i in range(8)]
    clips, lengths = ClipCache(tmp_path / "cache", tiny_study.num_frames, tiny_study.image_size).load_many(ids)
    for model in ("luvnet", "usvn"):
        saved = pd.read_csv(out / f"predictions_{model}.csv", dtype={"clip_id": str}).set_index("clip_id").loc[ids]
        folds = [predict(load_trained(tiny_study.run_dir / "runs" / f"{model}-fold{f}"), clips, lengths) for f in range(3)]
        np.testing.assert_allclose(saved[[f"p_{p}" for p in PATTERNS]].to_numpy(), np.mean(folds, axis=0), atol=2e-3)
        assert saved["consolidation"].isna().all() and (saved["a_lines"] == [0, 1, 0, 1, 0, 1, 1, 0]).all()

        # Thresholds come from the study's pooled validation predictions, not from this dataset.
        val = pd.read_csv(tiny_study.run_dir / "oof" / f"{model}.val.csv")
        for pattern in PATTERNS:
            expected = _textbook_youden(val[pattern].to_numpy(float), val[f"p_{pattern}"].to_numpy(float))
            assert table.loc[(model, pattern), "threshold"] == pytest.approx(expected)
        y, score, t = saved["a_lines"].to_numpy(), saved["p_a_lines"].to_numpy(), table.loc[(model, "a_lines"), "threshold"]
        assert table.loc[(model, "a_lines"), "sensitivity"] == pytest.approx(np.mean(score[y == 1] >= t))


def test_external_with_only_the_later_patterns_labelled(tiny_study, tiny_data, tmp_path):
    """A dataset labelling consolidation and effusion only (the two-pattern dataset above labels
    the first two, so misaligned later columns went unnoticed): each AUC is scikit-learn's on the
    typed-in labels and that pattern's probabilities, which are the fold models' mean."""
    import reference_stats as ref
    from sklearn.metrics import roc_auc_score

    from lusv.data.cache import ClipCache
    from lusv.evaluation.external import external_validation
    from lusv.inference import load_trained, predict

    later = {"consolidation": [1, 0, 1, 0, 0, 1, 1, 0], "pleural_effusion": [0, 0, 1, 1, 0, 1, 0, 1]}
    source = pd.read_csv(tiny_data.source_dir / "labels.csv").iloc[:8]
    ids = [f"EXT-{i}" for i in range(8)]
    pd.DataFrame({"clip_id": ids, "path": [str(tiny_data.source_dir / p) for p in source["path"]],
                  "patient_id": [f"EXT-P{i // 2}" for i in range(8)], "a_lines": "", "b_lines": "", **later}
                 ).to_csv(tmp_path / "later.csv", index=False)
    results = external_validation(tiny_study.run_dir, "folder", tmp_path / "later.csv", out_dir=tmp_path / "ext",
                                  cache_root=tmp_path / "cache")
    table = results.table.set_index(["model", "pattern"])
    clips, lengths = ClipCache(tmp_path / "cache", tiny_study.num_frames, tiny_study.image_size).load_many(ids)
    for model in ("luvnet", "usvn"):
        saved = pd.read_csv(tmp_path / "ext" / f"predictions_{model}.csv", dtype={"clip_id": str}).set_index("clip_id").loc[ids]
        folds = [predict(load_trained(tiny_study.run_dir / "runs" / f"{model}-fold{f}"), clips, lengths) for f in range(3)]
        np.testing.assert_allclose(saved[[f"p_{p}" for p in PATTERNS]].to_numpy(), np.mean(folds, axis=0), atol=2e-3)
        for pattern in ("a_lines", "b_lines"):
            assert saved[pattern].isna().all() and np.isnan(table.loc[(model, pattern), "auc"])
            assert table.loc[(model, pattern), "note"] == "not labelled in this dataset"
        for pattern, y in later.items():
            row, score = table.loc[(model, pattern)], saved[f"p_{pattern}"].to_numpy()
            assert saved[pattern].tolist() == y and row["n_pos"] == 4 and row["n_neg"] == 4
            assert row["auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx(ref.delong_ci(y, score)[1:], rel=1e-9)
            positive = score >= row["threshold"]
            assert row["sensitivity"] == pytest.approx(positive[np.array(y) == 1].mean())
            assert row["specificity"] == pytest.approx(1 - positive[np.array(y) == 0].mean())


def test_external_refuses_a_study_without_fold_models(tiny_data, tmp_path, capsys):
    copy_of_tiny_study(tiny_data, tmp_path / "empty")
    code = main(["external", "--study", str(tmp_path / "empty"), "--data-path", str(_other_dataset(tiny_data, tmp_path))])
    assert code == 2
    assert "no finished fold models" in capsys.readouterr().err


def reference_probe(prepared, encoder, set_apart: dict[str, list[str]] | None = None) -> dict[str, pd.DataFrame]:
    """The linear probe written out the slow way, p_<pattern> by clip id for each role.

    Fold f: test = fold f, validation = fold f + 1, training = the other folds (read from the
    prepared folds file). A clip is the mean of its real frames' cached plain features (computed
    here from the feature cache's rows); per pattern scikit-learn's LogisticRegression(C=1,
    max_iter=5000) is fit on the training clips that label the pattern (all one class: that
    class's rate). Test and validation clips are predicted by their fold's model, the clips of
    ``set_apart`` ({split: clip ids}) by the mean of every fold's model."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    from lusv.config import params_for
    from lusv.data.features import run_feature_cache

    features = run_feature_cache(params_for("quick", **prepared.training_inputs()), prepared.cache(), encoder)
    labels = prepared.labels().set_index("clip_id")
    folds = prepared.folds().set_index("clip_id")["fold"]

    def pooled(ids):
        return np.stack([rows[:length].astype(np.float64).mean(axis=0) for rows, length in map(features.load, ids)])

    out = {"test": [], "val": []}
    sums = {split: 0.0 for split in set_apart or {}}
    for fold in range(prepared.num_folds):
        roles = {"test": folds.index[folds == fold], "val": folds.index[folds == (fold + 1) % prepared.num_folds]}
        train = folds.index[~folds.isin([fold, (fold + 1) % prepared.num_folds])]
        x_train = pooled(train)
        evaluated = {**roles, **(set_apart or {})}
        fold_p = {role: pd.DataFrame(index=list(ids)) for role, ids in evaluated.items()}
        for pattern in PATTERNS:
            y = labels.loc[train, pattern].to_numpy(float)
            known = ~np.isnan(y)
            if len(np.unique(y[known])) < 2:
                for role, ids in evaluated.items():
                    fold_p[role][f"p_{pattern}"] = y[known].mean()
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = LogisticRegression(C=1.0, max_iter=5000).fit(x_train[known], y[known].astype(int))
            for role, ids in evaluated.items():
                fold_p[role][f"p_{pattern}"] = model.predict_proba(pooled(ids))[:, 1]
        for role in roles:
            out[role].append(fold_p[role])
        for split in sums:
            sums[split] = sums[split] + fold_p[split]
    result = {role: pd.concat(parts) for role, parts in out.items()}
    return {**result, **{split: total / prepared.num_folds for split, total in sums.items()}}


def test_mean_pooling_counts_real_frames_only_and_fits_see_only_labelled_training_clips():
    from sklearn.linear_model import LogisticRegression

    from lusv.evaluation.linear_probe import fit_fold, mean_pooled

    class Features:  # two clips of 4 frames, the second with 2 real ones and padding rows of 50
        def load_many(self, ids):
            rows = np.array([[[1.0], [2.0], [3.0], [6.0]], [[4.0], [8.0], [50.0], [50.0]]])
            return rows[[int(i) for i in ids]], np.array([4, 2])[[int(i) for i in ids]]

    np.testing.assert_array_equal(mean_pooled(Features(), ["0", "1"]), [[3.0], [6.0]])
    rng = np.random.default_rng(0)
    x = {f"c{i}": rng.normal(size=3) for i in range(12)}
    train = pd.DataFrame({"clip_id": [f"c{i}" for i in range(8)], **{p: [0, 1, 0, 1, 1, 0, np.nan, 1] for p in PATTERNS}})
    train["a_lines"] = [0, 0, 0, 0, 0, 0, np.nan, 0]  # one class: its training rate, 0
    test = pd.DataFrame({"clip_id": [f"c{i}" for i in range(8, 12)], **{p: 0.0 for p in PATTERNS}})
    got = fit_fold(x, {"train": train, "test": test})["test"]
    known = [0, 1, 2, 3, 4, 5, 7]  # c6 labels nothing: it is not trained on
    expected = LogisticRegression(C=1.0, max_iter=5000).fit(np.stack([x[f"c{i}"] for i in known]), [0, 1, 0, 1, 1, 0, 1])
    np.testing.assert_allclose(got[:, 1], expected.predict_proba(np.stack([x[f"c{i}"] for i in range(8, 12)]))[:, 1],
                               atol=1e-6)
    np.testing.assert_array_equal(got[:, 0], 0.0)


def test_linear_probe_writes_out_of_fold_predictions_fit_on_the_training_folds(tiny_study):
    from lusv.inference import load_trained
    from lusv.evaluation.linear_probe import linear_probe

    written = linear_probe(tiny_study)
    # Every probability is the slow reference's: fit on the training folds only, never on the
    # clips it predicts. The frozen encoder is the one LUV-Net's frozen runs read (same seed).
    encoder = load_trained(tiny_study.run_dir / "runs" / "luvnet-fold0").encoder
    temporal = pd.read_csv(tiny_study.temporal_csv, dtype=str).query("split == 'temporal_test'")["clip_id"].tolist()
    expected = reference_probe(tiny_study, encoder, {"temporal_test": temporal})
    columns = [f"p_{p}" for p in PATTERNS]
    for split in ("test", "val", "temporal_test"):
        table = pd.read_csv(written[split], dtype={"clip_id": str}).set_index("clip_id")
        assert sorted(table.index) == sorted(expected[split].index), split
        np.testing.assert_allclose(table[columns].to_numpy(), expected[split].loc[table.index, columns].to_numpy(),
                                   atol=1e-4, err_msg=split)
    test = pd.read_csv(written["test"], dtype={"clip_id": str})
    folds = tiny_study.folds()
    assert sorted(test["clip_id"]) == sorted(folds["clip_id"])  # every development clip once
    assert (test["model_fold"] == test["fold"]).all()
    val = pd.read_csv(written["val"])
    assert (val["fold"] == (val["model_fold"] + 1) % 3).all()
    probabilities = test[[f"p_{p}" for p in PATTERNS]].to_numpy()
    assert np.isfinite(probabilities).all() and ((probabilities >= 0) & (probabilities <= 1)).all()
    # One more model key for the result tables.
    predictions = study.load_out_of_fold(tiny_study.run_dir, "test", ["luvnet", "linear_probe"])
    from lusv.report.tables import auc_summaries

    assert set(auc_summaries(predictions)["model"]) >= {"luvnet", "linear_probe"}


def test_external_validation_refits_the_linear_probe_from_the_studys_folds(tiny_study, tiny_data, tmp_path):
    """The temporally separated clips, read again as another dataset, get the probe's predictions the
    study itself made for them (every fold model's mean, fitted when the study ran)."""
    from lusv.evaluation.external import external_validation
    from lusv.evaluation.linear_probe import linear_probe

    if not (tiny_study.run_dir / "oof" / "linear_probe.temporal_test.csv").is_file():
        linear_probe(tiny_study)
    expected = pd.read_csv(tiny_study.run_dir / "oof" / "linear_probe.temporal_test.csv", dtype={"clip_id": str})
    source = pd.read_csv(tiny_data.source_dir / "labels.csv", dtype={"clip_id": str, "patient_id": str})
    rows = source.set_index("clip_id").loc[expected["clip_id"]].reset_index()
    rows = rows.assign(clip_id="EXT-" + rows["clip_id"], path=[str(tiny_data.source_dir / p) for p in rows["path"]])
    csv = tmp_path / "temporal" / "labels.csv"
    csv.parent.mkdir()
    rows.to_csv(csv, index=False)
    results = external_validation(tiny_study.run_dir, "folder", csv, keys=["linear_probe"], out_dir=tmp_path / "ext",
                                  cache_root=tmp_path / "cache")
    columns = [f"p_{p}" for p in PATTERNS]
    ours = results.predictions["linear_probe"].set_index("clip_id").loc["EXT-" + expected["clip_id"], columns]
    np.testing.assert_allclose(ours.to_numpy(), expected[columns].to_numpy(), atol=1e-6)
    table = results.table[results.table["model"] == "linear_probe"]
    assert len(table) == 4 and np.isfinite(table["threshold"]).any()
    assert (tmp_path / "ext" / "predictions_linear_probe.csv").is_file()


def test_external_conclusion_quotes_the_auc_table_and_names_unscored_patterns():
    from lusv.report.conclusions import external_conclusion

    table = pd.DataFrame([
        {"model": "luvnet", "pattern": "a_lines", "auc": 0.8125, "ci_low": 0.61, "ci_high": 0.93},
        {"model": "luvnet", "pattern": "b_lines", "auc": 0.5, "ci_low": 0.3, "ci_high": 0.7},
        {"model": "luvnet", "pattern": "consolidation", "auc": np.nan, "ci_low": np.nan, "ci_high": np.nan},
        {"model": "luvnet", "pattern": "pleural_effusion", "auc": np.nan, "ci_low": np.nan, "ci_high": np.nan},
    ])
    text = external_conclusion(table, "other-labels", 8)
    assert "LUV-Net: A-lines 0.812 (0.61–0.93), B-lines 0.500 (0.30–0.70)" in text
    assert "Not scored (not labelled, or one class only): Consolidation, Pleural effusion" in text
    assert "(8 clips;" in text


@pytest.mark.slow
def test_external_validation_notebook_on_a_dataset_with_two_patterns(tiny_study, tiny_data, tmp_path):
    papermill = pytest.importorskip("papermill")
    import nbformat

    from lusv.paths import REPO_ROOT

    csv = _other_dataset(tiny_data, tmp_path)
    output = tmp_path / "08.ipynb"
    papermill.execute_notebook(
        str(REPO_ROOT / "notebooks" / "08_external_validation.ipynb"), str(output), kernel_name="python3",
        parameters={"study_dir": str(tiny_study.run_dir), "data": "folder", "data_path": str(csv)}, progress_bar=False,
    )  # fmt: skip
    notebook = nbformat.read(output, as_version=4)
    written = next((tiny_study.run_dir / "external").glob("*/external_auc.csv"))
    table = pd.read_csv(written)
    conclusion = (tiny_study.run_dir / "conclusions" / "08_external_validation.md").read_text()
    luvnet_a = table[(table["model"] == "luvnet") & (table["pattern"] == "a_lines")].iloc[0]
    assert f"A-lines {luvnet_a['auc']:.3f}" in conclusion, "the conclusion quotes the table it came from"
    assert "Not scored (not labelled, or one class only): Consolidation, Pleural effusion" in conclusion
    last = [o for o in notebook.cells[-1].get("outputs", []) if "text/markdown" in o.get("data", {})]
    assert last and "What this run shows" in last[0]["data"]["text/markdown"]
