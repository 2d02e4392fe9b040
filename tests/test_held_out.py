"""The held-out test set end to end: prepared beside the temporal split on the tiny synthetic
clips, kept out of the folds, predicted by every fold model, averaged into oof/ and reported."""

from __future__ import annotations

import matplotlib
import pandas as pd
import pytest
from tiny_study import IMAGE_SIZE, NUM_FOLDS, NUM_FRAMES, SYNTHETIC

from lusv import study
from lusv.config import params_for
from lusv.errors import LeakageError
from lusv.data.folds import load_fold_data
from lusv.data.patterns import PATTERNS

matplotlib.use("Agg")

TINY_TRAINING = {"epochs": 1, "max_batches_per_epoch": 1, "batch_size": 4, "num_workers": 0}


@pytest.fixture(scope="module")
def held_out_study(tiny_data, tmp_path_factory):
    """The tiny study's clips (already generated and cached) prepared again with a held-out set."""
    return study.prepare(
        tmp_path_factory.mktemp("held_out") / "study", profile="quick", data="synthetic",
        data_path=tiny_data.source_dir, synthetic={**SYNTHETIC, "progress": False}, num_frames=NUM_FRAMES,
        image_size=IMAGE_SIZE, num_folds=NUM_FOLDS, seed=0, temporal_test_fraction=0.25, cache_root=tiny_data.cache_dir,
        held_out_fraction=0.25, clip_policy="whole",
    )  # fmt: skip


def test_prepare_sets_the_held_out_patients_apart_from_the_folds_and_the_temporal_set(held_out_study):
    prepared = held_out_study
    held_out = pd.read_csv(prepared.held_out_csv, dtype=str)
    temporal = pd.read_csv(prepared.temporal_csv, dtype=str)
    folds = prepared.folds()
    held_patients = set(held_out.loc[held_out["split"] == "held_out", "patient_id"])
    assert held_patients, "some patients are held out"
    assert not held_patients & set(folds["patient_id"].astype(str)), "no held-out patient in the folds"
    assert not held_patients & set(temporal.loc[temporal["split"] == "temporal_test", "patient_id"])
    development = set(temporal.loc[temporal["split"] == "development", "clip_id"])
    assert set(held_out["clip_id"]) == development, "the held-out set is made from the development clips"
    assert set(folds["clip_id"].astype(str)) == set(held_out.loc[held_out["split"] == "development", "clip_id"])
    # a quarter of the 9-10 development patients: 4 stratified groups, one of them held out
    assert 1 <= len(held_patients) <= 4
    assert study.Prepared.load(prepared.run_dir).held_out_csv == prepared.held_out_csv
    assert prepared.training_inputs()["held_out"] == str(prepared.held_out_csv)


def test_preparing_again_reuses_the_held_out_split(held_out_study, tiny_data):
    mtime = held_out_study.held_out_csv.stat().st_mtime_ns
    again = study.prepare(
        held_out_study.run_dir, profile="quick", data="synthetic", data_path=tiny_data.source_dir,
        synthetic={**SYNTHETIC, "progress": False}, num_frames=NUM_FRAMES, image_size=IMAGE_SIZE, num_folds=NUM_FOLDS,
        seed=0, temporal_test_fraction=0.25, cache_root=tiny_data.cache_dir, held_out_fraction=0.25, clip_policy="whole",
    )  # fmt: skip
    assert again.held_out_csv.stat().st_mtime_ns == mtime


def test_training_refuses_folds_that_hold_held_out_clips(held_out_study, tiny_data, tmp_path):
    # the shared tiny folds were made without a held-out set: they hold its clips
    p = params_for("quick", **{**held_out_study.training_inputs(), "splits": str(tiny_data.folds_csv)})
    with pytest.raises(LeakageError, match=r"of the held-out test set .* are also in the folds"):
        load_fold_data(p, tmp_path)


def test_every_fold_model_predicts_the_held_out_set_and_results_report_it(held_out_study):
    prepared = held_out_study
    run_dirs = study.train_configurations(
        prepared, {"luvnet": {"model": "luvnet"}, "usvn": {"model": "usvn"}}, **TINY_TRAINING
    )
    held_ids = set(pd.read_csv(prepared.held_out_csv, dtype=str).query("split == 'held_out'")["clip_id"])
    per_fold = [pd.read_csv(d / "predictions_held_out.csv", dtype={"clip_id": str}) for d in run_dirs["usvn"]]
    assert len(per_fold) == NUM_FOLDS
    for fold, table in enumerate(per_fold):
        assert set(table["clip_id"]) == held_ids and set(table["model_fold"]) == {fold}
    # oof/<key>.held_out.csv holds the fold models' mean, worked out here clip by clip
    ensemble = pd.read_csv(prepared.run_dir / "oof" / "usvn.held_out.csv", dtype={"clip_id": str}).set_index("clip_id")
    for clip_id in held_ids:
        for pattern in PATTERNS:
            values = [float(t.set_index("clip_id").loc[clip_id, f"p_{pattern}"]) for t in per_fold]
            assert ensemble.loc[clip_id, f"p_{pattern}"] == pytest.approx(sum(values) / len(values), abs=1e-12)

    out = study.results(prepared.run_dir, n_boot=20)
    assert list(out) == ["test", "held_out", "temporal_test"], "the held-out set is reported as its own section"
    table = pd.read_csv(prepared.run_dir / "tables" / "held_out_auc_table.csv")
    assert set(table.iloc[:, 0]) == {"luvnet", "usvn"}
    assert (prepared.run_dir / "tables" / "held_out_delong_p.csv").is_file()
    assert (prepared.run_dir / "figures" / "roc_held_out.png").is_file()


def test_the_linear_probe_predicts_the_held_out_set_too(held_out_study):
    from lusv.evaluation.linear_probe import linear_probe

    import numpy as np
    from test_external import reference_probe

    from lusv.models.encoders import build_encoder
    from lusv.train.randomness import seed_everything

    written = linear_probe(held_out_study)
    held_ids = pd.read_csv(held_out_study.held_out_csv, dtype=str).query("split == 'held_out'")["clip_id"].tolist()
    table = pd.read_csv(written["held_out"], dtype={"clip_id": str}).set_index("clip_id")
    assert set(table.index) == set(held_ids) and len(table) == len(held_ids), "one row per clip: the fold models' mean"
    p = params_for("quick", **held_out_study.training_inputs())
    seed_everything(p.seed)  # the random-init encoder a run of this study builds
    expected = reference_probe(held_out_study, build_encoder(p.encoder, p.weights), {"held_out": held_ids})["held_out"]
    columns = [f"p_{pattern}" for pattern in PATTERNS]
    np.testing.assert_allclose(table[columns].to_numpy(), expected.loc[table.index, columns].to_numpy(), atol=1e-4)


def test_a_run_finished_before_the_held_out_set_existed_is_not_reused(held_out_study, tiny_data, tmp_path):
    from lusv.errors import ConfigError
    from lusv.train import run

    inputs = {**held_out_study.training_inputs(), "out_dir": str(tmp_path), "run_name": "usvn-fold0", "model": "usvn",
              **TINY_TRAINING}
    # trained on the shared tiny folds, made when the study had no held-out set
    before = {**inputs, "splits": str(tiny_data.folds_csv), "held_out": None}
    run(params_for("quick", **before))
    assert not (tmp_path / "usvn-fold0" / "predictions_held_out.csv").exists()
    with pytest.raises(ConfigError, match=r"finished before the study had its held_out test set"):
        run(params_for("quick", **inputs, resume=True))
