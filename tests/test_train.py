"""lusv.config and lusv.train: parameters, run dir contents, leakage refusal, predictions."""

import dataclasses
import json
import math
import typing

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_study import IMAGE_SIZE, NUM_FOLDS, NUM_FRAMES

from lusv.infra import io
from lusv.data.cache import ClipCache
from lusv.config import PROFILES, RunParams, field_help, params_for
from lusv.errors import CheckpointError, ConfigError, LeakageError
from lusv.data.patterns import PATTERNS
from lusv.infra.devices import resolve_amp, resolve_device
from lusv.inference import load_trained, masked_bce, predict
from lusv.train import rng_state, run, set_rng_state

PREDICTION_COLUMNS = ["clip_id", "video_id", "patient_id", "fold", "model_fold", *(f"p_{p}" for p in PATTERNS), *PATTERNS]


# ----------------------------------------------------------------------------- config


def test_paper_profile_is_the_published_protocol():
    p = PROFILES["paper"]
    assert (p.model, p.encoder, p.weights) == ("luvnet", "densenet161", "imagenet")
    # patience 50 is the paper's text; the authors' training script defaults to 20
    assert (p.num_frames, p.image_size, p.batch_size, p.lr, p.epochs, p.patience) == (30, 256, 4, 1e-6, 150, 50)
    assert (p.num_heads, p.kernel_size, p.amp) == (8, 13, "auto")
    assert (p.augment, p.augmentations) == (True, "paper"), "the paper: horizontal flip and rotation only"


def test_quick_profile_is_small_and_trains_faster():
    q = PROFILES["quick"]
    assert q.encoder == "tiny" and q.weights == "random"
    assert q.num_frames <= 16 and q.image_size <= 64 and q.epochs <= 25 and q.patience == 5
    assert q.lr > PROFILES["paper"].lr
    assert q.augmentations == "extended", "quick keeps the augmentations its published figures were made with"


def test_a_run_recorded_before_the_augmentations_field_resumes_as_extended(tmp_path):
    from lusv.errors import ConfigError
    from lusv.train.checkpoint import check_same_run

    quick = PROFILES["quick"]
    before = {k: v for k, v in quick.to_dict().items() if k != "augmentations"}  # an older config.json
    check_same_run(quick, before, tmp_path)  # extended then and now: resumes
    with pytest.raises(ConfigError, match="augmentations"):
        check_same_run(dataclasses.replace(quick, augmentations="paper"), before, tmp_path)


def test_every_field_has_simple_type_and_help():
    simple = {str, int, float, bool}
    for f in dataclasses.fields(RunParams):
        args = set(typing.get_args(f.type)) - {type(None)}
        assert f.type in simple or (typing.get_origin(f.type) is typing.Union and args <= simple), f.name
        assert field_help(f.name) and "\n" not in field_help(f.name)


def test_params_for_applies_overrides_and_names_valid_keys():
    p = params_for("quick", fold=2, lr=0.01)
    assert p.fold == 2 and p.lr == 0.01 and PROFILES["quick"].lr != 0.01
    with pytest.raises(ConfigError, match=r"'lrate'.*valid parameters: .*\blr\b"):
        params_for("quick", lrate=0.1)
    with pytest.raises(ConfigError, match="paper, quick"):
        params_for("fast")


def test_invalid_values_raise_config_error():
    with pytest.raises(ConfigError, match=r"label_smoothing=1\.0 \(must be in \[0, 1\)\)"):
        params_for("quick", label_smoothing=1.0)
    with pytest.raises(ConfigError, match="amp"):
        params_for("quick", amp="fp8")
    with pytest.raises(ConfigError, match="fold=5"):
        params_for("quick", fold=5, num_folds=5)


def test_run_name_is_derived_from_parameters():
    p = params_for("quick", fold=1, seed=3, num_frames=8, image_size=32)
    assert p.name == "luvnet-tiny-T8-S32-fold1-seed3"
    assert params_for("quick", run_name="mine").name == "mine"


# ----------------------------------------------------------------------------- pieces


def test_masked_bce_ignores_missing_labels():
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    labels = torch.tensor([[1.0, float("nan"), 0.0, float("nan")]])
    total, count = masked_bce(logits, labels)
    expected = -math.log(torch.sigmoid(torch.tensor(0.5)).item()) - math.log(1 - torch.sigmoid(torch.tensor(2.0)).item())
    assert count.item() == 2
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_rng_state_round_trip_restores_all_generators():
    import random

    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_amp_is_off_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("bf16", cpu) is None
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            resolve_device("cuda")


# ----------------------------------------------------------------------------- whole runs


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run(**tiny_data.params(out, fold=1))


def test_run_dir_layout_and_config(finished_run, tiny_data):
    assert finished_run.name == f"luvnet-tiny-T{NUM_FRAMES}-S{IMAGE_SIZE}-fold1-seed0"
    names = {p.name for p in finished_run.iterdir()}
    assert {"config.json", "log.csv", "checkpoint.pt", "best.pt", "predictions_val.csv",
            "predictions_test.csv", "predictions_temporal_test.csv"} <= names
    assert not [n for n in names if n.endswith(".tmp")]  # atomic writes leave no temporaries

    config = json.loads((finished_run / "config.json").read_text())
    assert config["status"] == "finished"
    assert config["params"] == tiny_data.params(finished_run.parent, fold=1)
    assert {"python", "torch", "torchvision", "numpy"} <= set(config["versions"])
    assert config["versions"]["torch"] == torch.__version__
    assert "git_sha" in config and config["device"] == "cpu" and config["weights_source"] == "random"
    assert 1 <= config["best_epoch"] <= 2

    log = pd.read_csv(finished_run / "log.csv")
    assert list(log.columns) == ["epoch", "train_loss", "val_loss", "val_macro_auc", "lr", "seconds"]
    assert log["epoch"].tolist() == [1, 2]
    assert log["val_loss"].min() == pytest.approx(config["best_val_loss"])
    assert int(log["val_loss"].idxmin()) + 1 == config["best_epoch"]


def test_predictions_follow_contract_and_roles(finished_run, tiny_data):
    folds, temporal = tiny_data.folds(), tiny_data.temporal()
    labels = tiny_data.labels().set_index("clip_id")
    expected_ids = {
        "test": set(folds.loc[folds["fold"] == 1, "clip_id"]),
        "val": set(folds.loc[folds["fold"] == 2, "clip_id"]),
        "temporal_test": set(temporal.loc[temporal["split"] == "temporal_test", "clip_id"]),
    }
    for role, ids in expected_ids.items():
        table = pd.read_csv(finished_run / f"predictions_{role}.csv", dtype={"clip_id": str, "patient_id": str})
        assert list(table.columns) == PREDICTION_COLUMNS
        assert len(table) == len(ids) and set(table["clip_id"]) == ids
        probabilities = table[[f"p_{p}" for p in PATTERNS]].to_numpy()
        assert np.isfinite(probabilities).all() and (probabilities >= 0).all() and (probabilities <= 1).all()
        np.testing.assert_array_equal(
            table[list(PATTERNS)].to_numpy(), labels.loc[table["clip_id"], list(PATTERNS)].to_numpy()
        )
        assert (table["patient_id"].to_numpy() == labels.loc[table["clip_id"], "patient_id"].to_numpy()).all()
        assert table["video_id"].astype(str).tolist() == table["clip_id"].tolist()  # clip_policy=whole: one clip per video
        assert set(table["fold"]) == {2 if role == "val" else 1}  # the clips' own fold
        assert set(table["model_fold"]) == {1}  # the fold of the model that predicted them: this run's


def test_load_trained_and_predict_reproduce_test_predictions(finished_run, tiny_data):
    model = load_trained(finished_run)
    assert not model.training and model.weights_source.startswith("trained:")
    table = pd.read_csv(finished_run / "predictions_test.csv", dtype={"clip_id": str})
    clips, lengths = ClipCache(tiny_data.cache_dir, NUM_FRAMES, IMAGE_SIZE).load_many(table["clip_id"])
    probabilities = predict(model, clips, lengths, batch_size=3)
    assert probabilities.shape == (len(table), 4)
    np.testing.assert_allclose(probabilities, table[[f"p_{p}" for p in PATTERNS]].to_numpy(), atol=1e-6)
    _, attention = predict(load_trained(finished_run / "best.pt"), clips, lengths, return_attention=True)
    assert attention.shape[:2] == (len(table), 4) and attention.shape[-1] == NUM_FRAMES


def test_finished_run_with_resume_returns_without_training(finished_run, tiny_data):
    def results():  # the run-folder lock records each holder; no result file may change
        return {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir() if p.name != ".run.lock"}

    before = results()
    assert run(**tiny_data.params(finished_run.parent, fold=1, resume=True)) == finished_run
    assert results() == before


def test_resume_with_other_parameters_is_refused(finished_run, tiny_data):
    with pytest.raises(ConfigError, match=r"lr: 0\.001 -> 0\.5"):
        run(**tiny_data.params(finished_run.parent, fold=1, resume=True, lr=0.5, run_name=finished_run.name))


def test_a_run_recorded_before_a_parameter_existed_resumes_with_that_parameters_default(finished_run, tiny_data, tmp_path):
    import shutil

    old = tmp_path / finished_run.name
    shutil.copytree(finished_run, old)
    config = json.loads((old / "config.json").read_text())
    del config["params"]["frame_pooling"]  # as written by a lusv without that parameter
    (old / "config.json").write_text(json.dumps(config))
    assert run(**tiny_data.params(tmp_path, fold=1, resume=True)) == old  # reused, not refused
    with pytest.raises(ConfigError, match=r"frame_pooling: 'mean' -> 'max'"):
        run(**tiny_data.params(tmp_path, fold=1, resume=True, frame_pooling="max"))


def test_one_progress_line_per_epoch_off_a_terminal(tiny_data, tmp_path, capsys):
    run(**tiny_data.params(tmp_path, epochs=3, augment=False, model="usvn"))
    lines = [line for line in capsys.readouterr().out.splitlines() if " epoch " in line]
    assert [line.split(" epoch ")[1].split()[0] for line in lines] == ["1/3", "2/3", "3/3"]


def test_gradient_accumulation_counts_optimizer_steps(tiny_data, tmp_path):
    # 3 micro-batches per epoch in groups of 2 -> 2 optimizer steps per epoch (2 + 1).
    run_dir = run(**tiny_data.params(tmp_path, epochs=1, batch_size=2, grad_accum=2, max_batches_per_epoch=3))
    state = io.torch_load(run_dir / "checkpoint.pt")
    steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {2}


def _masked_bce_of(predictions: pd.DataFrame) -> float:
    """Mean binary cross-entropy over the labelled (clip, pattern) pairs of a predictions file."""
    p = predictions[[f"p_{pattern}" for pattern in PATTERNS]].to_numpy(float)
    y = predictions[list(PATTERNS)].to_numpy(float)
    known = ~np.isnan(y)
    return float(-np.mean(np.where(y[known] == 1, np.log(p[known]), np.log1p(-p[known]))))


@pytest.mark.parametrize("checkpoint_every", [1, 3])
def test_early_stopping_stops_after_patience_and_predicts_with_the_best_epochs_weights(tiny_data, tmp_path,
                                                                                      checkpoint_every):
    # lr so large that the validation loss cannot keep improving: training stops early.
    run_dir = run(**tiny_data.params(tmp_path, epochs=30, patience=2, lr=0.5, model="usvn",
                                     checkpoint_every=checkpoint_every))
    log = pd.read_csv(run_dir / "log.csv")
    best = int(log["val_loss"].idxmin()) + 1
    assert len(log) == best + 2 < 30  # stopped two epochs (the patience) after its best, long before the limit
    assert json.loads((run_dir / "config.json").read_text())["best_epoch"] == best
    # best.pt holds the best epoch's weights, not the last epoch's: the validation predictions made
    # from it give back, recomputed here, the validation loss logged for the best epoch.
    recomputed = _masked_bce_of(pd.read_csv(run_dir / "predictions_val.csv"))
    assert recomputed == pytest.approx(log["val_loss"].iloc[best - 1], rel=1e-4)
    assert abs(log["val_loss"].iloc[-1] - log["val_loss"].iloc[best - 1]) > 1e-3  # the example can tell them apart


# ----------------------------------------------------------------------------- leakage


def test_patient_in_two_folds_refuses_to_train(tiny_data, tmp_path):
    folds = tiny_data.folds()
    patient = folds.loc[folds["fold"] == 0, "patient_id"].iloc[0]
    first_clip = folds.index[folds["patient_id"] == patient][0]
    folds.loc[first_clip, "fold"] = 2  # one clip of the patient moves to the validation fold
    leaky = io.write_csv(tmp_path / "leaky_folds.csv", folds)
    with pytest.raises(LeakageError, match=repr(patient)):
        run(**tiny_data.params(tmp_path, splits=str(leaky), fold=1))
    # refused before writing anything but the run folder's lock record
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.name != ".run.lock"] == [leaky]


def test_folds_file_giving_a_clip_another_patient_refuses_to_train(tiny_data, tmp_path):
    """The labels are the authority on patients. This folds file hides a leak: it moves one clip of
    a training patient (fold 0) into the validation fold (2) under a made-up patient, so the folds
    file alone looks patient-clean."""
    folds = tiny_data.folds()
    per_patient = folds[folds["fold"] == 0]["patient_id"].value_counts()
    patient = per_patient.index[per_patient > 1][0]
    row = folds.index[folds["patient_id"] == patient][0]
    clip_id = folds.loc[row, "clip_id"]
    folds.loc[row, ["patient_id", "fold"]] = ["made-up", 2]
    leaky = io.write_csv(tmp_path / "relabelled_folds.csv", folds)
    with pytest.raises(LeakageError, match=rf"gives clip\(s\) '{clip_id}' another patient than the labels"):
        run(**tiny_data.params(tmp_path, splits=str(leaky), fold=1))


def test_temporal_test_clip_in_folds_refuses_to_train(tiny_data, tmp_path):
    temporal = tiny_data.temporal()
    held_out = temporal[temporal["split"] == "temporal_test"].iloc[:1]
    folds = pd.concat([tiny_data.folds(), held_out[["clip_id", "patient_id"]].assign(fold=0)])
    leaky = io.write_csv(tmp_path / "leaky_folds.csv", folds)
    with pytest.raises(LeakageError, match=rf"clip\(s\) '{held_out['clip_id'].iloc[0]}' of the temporal test set"):
        run(**tiny_data.params(tmp_path, splits=str(leaky)))


def test_an_entry_edited_since_prepare_is_decoded_again_before_training(tiny_data, tmp_path, caplog):
    import logging
    import shutil

    cache_dir = tmp_path / "cache"
    shutil.copytree(tiny_data.cache_dir, cache_dir)
    cache = ClipCache(cache_dir, NUM_FRAMES, IMAGE_SIZE)
    clip_id = tiny_data.labels()["clip_id"].iloc[0]
    original, _ = cache.load(clip_id)
    entry = cache.dir / "clips" / cache.manifest.set_index("clip_id").loc[clip_id, "entry"]
    io.save_npy(entry, 255 - original)  # same shape and type: only the checksum can tell
    with caplog.at_level(logging.WARNING, logger="lusv"):
        run(**tiny_data.params(tmp_path / "runs", epochs=1, cache_dir=str(cache_dir)))
    assert f"rebuilt cache entry of clip '{clip_id}'" in caplog.text and "checksum" in caplog.text
    np.testing.assert_array_equal(ClipCache(cache_dir, NUM_FRAMES, IMAGE_SIZE).load(clip_id)[0], original)


def test_folds_made_in_run_dir_when_no_splits_file(tiny_data, tmp_path):
    run_dir = run(**tiny_data.params(tmp_path, splits=None, epochs=1))
    made = pd.read_csv(run_dir / "splits.csv", dtype={"clip_id": str})
    temporal_ids = set(tiny_data.temporal().query("split == 'temporal_test'")["clip_id"])
    assert set(made["clip_id"]).isdisjoint(temporal_ids)
    assert sorted(made["fold"].unique()) == list(range(NUM_FOLDS))


def test_unknown_parameter_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="valid parameters"):
        run(profile="quick", out_dir=str(tmp_path), epoch=3)


def test_trained_weights_with_pickled_code_are_refused(finished_run, tmp_path):
    class Payload:  # any custom class makes torch.save pickle code references
        def __reduce__(self):
            return (print, ("executed",))

    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    torch.save({"model": Payload()}, copy / "best.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_trained(copy)


@pytest.mark.slow
def test_torchrun_two_processes_train_with_ddp_on_cpu(tiny_data, tmp_path):
    # gloo on the CPU exercises the same DDP code path as NCCL on GPUs: sharded sampler,
    # gradient all-reduce, rank 0 alone writing files.
    import os
    import subprocess
    import sys
    from pathlib import Path

    params = tiny_data.params(tmp_path, run_name="ddp", epochs=2)
    code = (
        "import json, sys, torch; torch.set_num_threads(1); "
        "from lusv.train import run; run(**json.loads(sys.argv[1]))"
    )
    script = tmp_path / "train_ddp.py"
    script.write_text(code)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         json.dumps(params)],
        env=env, cwd=repo, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "ddp"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["world_size"] == 2 and config["status"] == "finished"
    assert done.stdout.count("ddp epoch ") == 2  # rank 0 alone reports
    table = pd.read_csv(run_dir / "predictions_test.csv")
    assert len(table) == int((tiny_data.folds()["fold"] == 0).sum())


# ----------------------------------------------------------------------------- GPU only (CI has none)

@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_run_on_gpu_records_dtype_and_gives_finite_predictions(tiny_data, tmp_path, amp):
    run_dir = run(**tiny_data.params(tmp_path, epochs=2, device="cuda", amp=amp, channels_last=True))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["amp_dtype"] == {"bf16": "bfloat16", "fp16": "float16"}[amp]
    predictions = pd.read_csv(run_dir / "predictions_test.csv")
    probabilities = predictions[[f"p_{p}" for p in PATTERNS]].to_numpy()
    assert np.isfinite(probabilities).all() and ((probabilities >= 0) & (probabilities <= 1)).all()


@pytest.mark.gpu
def test_gpu_model_predicts_like_its_cpu_copy(finished_run, tiny_data):
    table = pd.read_csv(finished_run / "predictions_test.csv", dtype={"clip_id": str})
    clips, lengths = ClipCache(tiny_data.cache_dir, NUM_FRAMES, IMAGE_SIZE).load_many(table["clip_id"])
    on_cpu = predict(load_trained(finished_run), clips, lengths)
    on_gpu = predict(load_trained(finished_run, device="cuda"), clips, lengths)
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)


def test_label_smoothing_pulls_training_targets_towards_one_half_and_keeps_missing_labels():
    from lusv.train.loop import smoothed

    labels = torch.tensor([[1.0, 0.0, float("nan"), 1.0]])
    # y * (1 - s) + s / 2 with s = 0.2, by hand: 1 -> 0.9, 0 -> 0.1
    torch.testing.assert_close(smoothed(labels, 0.2), torch.tensor([[0.9, 0.1, float("nan"), 0.9]]), equal_nan=True)
    assert smoothed(labels, 0.0) is labels


# ----------------------------------------------------------------------------- augmentation across epochs


def _training_inputs(tiny_data, out_dir, monkeypatch, **overrides) -> list[dict]:
    """Per epoch, what each training clip was fed to the model as (augmented clip, or the cached
    feature view): read beside training by a spy on the loop's forward, which replays the
    augmentation on a copy of the generator's state so that the run itself is unchanged."""
    from lusv.data.model_input import to_model_input
    from lusv.inference import forward_batch as forward
    from lusv.train import loop, runner
    from lusv.train.loop import train_one_epoch as one_epoch  # the originals, whatever was patched before

    epochs: list[dict] = []

    def spy_forward(model, batch, device, amp_dtype=None, channels_last=False, augment=None, generator=None):
        if "features" in batch:
            inputs = batch["features"]
        else:
            state = generator.get_state()
            inputs = to_model_input(batch["clips"], device, augment=augment, generator=generator,
                                    lengths=batch["lengths"], channels_last=channels_last)
            generator.set_state(state)
        epochs[-1].update(zip(batch["clip_ids"], inputs.detach().clone()))
        return forward(model, batch, device, amp_dtype, channels_last, augment, generator)

    def spy_epoch(*args, **kwargs):
        epochs.append({})
        return one_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "forward_batch", spy_forward)
    monkeypatch.setattr(runner, "train_one_epoch", spy_epoch)
    run(**tiny_data.params(out_dir, epochs=2, max_batches_per_epoch=None, augment=True, **overrides))
    return epochs


@pytest.mark.parametrize("path", [{"model": "usvn"}, {"model": "luvnet", "train_encoder": False, "feature_views": 2}],
                         ids=["clips", "cached-features"])
def test_each_training_clip_is_augmented_anew_every_epoch_and_alike_for_the_same_seed(tiny_data, tmp_path, monkeypatch,
                                                                                      path):
    first = _training_inputs(tiny_data, tmp_path / "a", monkeypatch, **path)
    again = _training_inputs(tiny_data, tmp_path / "b", monkeypatch, **path)
    assert len(first) == 2 and set(first[0]) == set(first[1]) and len(first[0]) >= 4  # every training clip, each epoch
    changed = [cid for cid in first[0] if not torch.equal(first[0][cid], first[1][cid])]
    if "train_encoder" in path:  # one of two cached views per clip and epoch, drawn from (seed, epoch)
        assert changed, "no clip showed another view in epoch 2"
    else:
        assert changed == list(first[0]), "every clip is augmented anew in epoch 2"
    for epoch, seen in enumerate(again):  # the same seed: the same inputs, epoch by epoch
        assert all(torch.equal(seen[cid], first[epoch][cid]) for cid in seen), epoch
