"""The windows clip policy (lusv.data.windows): slicing, labels per window, folds, a tiny training run.

Expected values are hand-worked below (window starts, labels of a drawn example, resampled
frames) or come from a slow re-implementation of the "any frame carries it" rule written here
over the synthetic generator's own per-frame truth file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lusv.errors import ConfigError, LabelsError
from lusv.data.patterns import PATTERNS
from lusv.data.video import resample_indices
from lusv.data.windows import (
    WINDOW_COLUMNS,
    WindowedClips,
    frame_labels_from_truth,
    window_starts,
    window_table,
)

NAN = float("nan")


# ------------------------------------------------------------------ slicing
@pytest.mark.parametrize("frames, window, overlap, expected", [
    (28, 16, 4, [0, 12]),          # the quick synthetic video: exactly 2 windows, stride 12
    (54, 30, 6, [0, 24]),          # the paper's windows: stride 24
    (30, 16, 4, [0, 12, 14]),      # 0..15, 12..27, and the tail 28..29 -> a window aligned to the end
    (60, 30, 6, [0, 24, 30]),      # 0..29, 24..53, tail 54..59 -> 30..59
    (16, 16, 4, [0]),              # exactly one window
    (10, 16, 4, [0]),              # shorter than a window: one (padded) window
    (25, 5, 0, [0, 5, 10, 15, 20]),  # no overlap, no tail
])
def test_window_starts_hand_worked(frames, window, overlap, expected):
    assert window_starts(frames, window, overlap) == expected


def test_window_starts_refuse_an_overlap_of_a_whole_window():
    with pytest.raises(ConfigError, match="overlap < T"):
        window_starts(30, 16, 16)


class _Videos:
    """A stand-in whole-video cache: video A's frame i is filled with i, video B's with 100 + i."""

    image_size, dir = 2, "fake"

    def __init__(self):
        self.arrays = {"A": np.arange(30, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8),
                       "B": (100 + np.arange(10, dtype=np.uint8))[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)}

    def __contains__(self, video_id):
        return video_id in self.arrays

    def load(self, video_id):
        return self.arrays[video_id], len(self.arrays[video_id])


def _label_rows(*videos):
    return pd.DataFrame([{"clip_id": v, "patient_id": f"P{v}", **dict(zip(PATTERNS, labels))} for v, labels in videos])


def test_windows_are_views_of_one_video_and_a_short_video_is_padded():
    videos = _Videos()
    table = window_table(_label_rows(("A", [1, 1, 1, 1]), ("B", [0, 0, 0, 0])), {"A": 30, "B": 10}, 16, 4)
    assert table["clip_id"].tolist() == ["A_w000", "A_w001", "A_w002", "B_w000"]
    assert table["start"].tolist() == [0, 12, 14, 0] and table["length"].tolist() == [16, 16, 16, 10]
    clips = WindowedClips(videos, table, 16)
    window, length = clips.load("A_w002")
    assert length == 16 and window[:, 0, 0, 0].tolist() == list(range(14, 30))
    assert np.shares_memory(window, videos.arrays["A"])  # a slice, not a copy
    window, length = clips.load("B_w000")  # no frame of A (or of anything else) after B's 10 frames
    assert length == 10 and window[:, 0, 0, 0].tolist() == list(range(100, 110)) + [0] * 6
    batch, lengths = clips.load_many(["A_w001", "B_w000"])
    assert batch.shape == (2, 16, 2, 2, 1) and lengths.tolist() == [16, 10]
    assert batch[0, :, 0, 0, 0].tolist() == list(range(12, 28))


# ------------------------------------------------------------------ labels
def test_frame_labels_from_per_frame_truth():
    truth = pd.DataFrame({"clip_id": ["C"] * 6, "frame": range(6), "a_lines": [1, 1, 0, 0, 1, 1],
                          "b_lines": [0] * 6, "consolidation": [0, 0, 1, 0, 0, 0], "pleural_effusion": [1] * 6})
    expected = pd.DataFrame([("C", 0, 1, "a_lines"), ("C", 4, 5, "a_lines"), ("C", 2, 2, "consolidation"),
                             ("C", 0, 5, "pleural_effusion")], columns=["clip_id", "first_frame", "last_frame", "pattern"])
    pd.testing.assert_frame_equal(frame_labels_from_truth(truth), expected)


def test_window_labels_hand_worked(caplog):
    # V: 30 frames -> windows 0..15, 12..27, 14..29 (T 16, overlap 4). A-lines on frames 0..3 (first
    # window only), B-lines on 28..29 (last only), consolidation on frame 13 (first two windows),
    # effusion unlabelled for the video (stays NaN). W has no frame labels: its video labels.
    frame_labels = pd.DataFrame([("V", 0, 3, "a_lines"), ("V", 28, 29, "b_lines"), ("V", 13, 13, "consolidation")],
                                columns=["clip_id", "first_frame", "last_frame", "pattern"])
    videos = _label_rows(("V", [1, 1, 1, NAN]), ("W", [1, 0, NAN, 0]))
    table = window_table(videos, {"V": 30, "W": 10}, 16, 4, frame_labels)
    assert list(table.columns) == list(WINDOW_COLUMNS)
    expected = np.array([[1, 0, 1, NAN], [0, 0, 1, NAN], [0, 1, 0, NAN], [1, 0, NAN, 0]])
    np.testing.assert_array_equal(table[list(PATTERNS)].to_numpy(dtype=float), expected)
    assert table["video_id"].tolist() == ["V", "V", "V", "W"] and table["patient_id"].tolist() == ["PV"] * 3 + ["PW"]
    assert "disagree" not in caplog.text  # V's labels agree with its frame labels


def test_a_span_touching_a_windows_first_or_last_frame_marks_that_window():
    # 30 frames, T 16, overlap 4: windows 0..15, 12..27, 14..29. Each span touches an edge:
    # A-lines only frame 15 (the first window's last frame), B-lines only frame 11 (just before the
    # second window), consolidation only frame 28 (after the second window's last), effusion only
    # frame 12 (the second window's first frame, before the third's).
    spans = pd.DataFrame([("V", 15, 15, "a_lines"), ("V", 11, 11, "b_lines"), ("V", 28, 28, "consolidation"),
                          ("V", 12, 12, "pleural_effusion")], columns=["clip_id", "first_frame", "last_frame", "pattern"])
    table = window_table(_label_rows(("V", [1, 1, 1, 1])), {"V": 30}, 16, 4, spans)
    expected = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [1, 0, 1, 0]], dtype=float)
    np.testing.assert_array_equal(table[list(PATTERNS)].to_numpy(dtype=float), expected)


def test_window_labels_after_resampling_name_source_frames():
    # 10 source frames at 30 fps resampled to 15 fps keep source frames 0, 2, 4, 6, 8; T 2, no
    # overlap: cached windows 0..1, 2..3 and the end-aligned 3..4 span source frames 0..2, 4..6, 6..8.
    assert resample_indices(10, 30.0, 15.0).tolist() == [0, 2, 4, 6, 8]
    assert resample_indices(10, 25.0, 10.0).tolist() == [0, 2, 5, 7]
    assert resample_indices(7, None, 15.0).tolist() == list(range(7))
    frame_labels = pd.DataFrame([("V", 1, 1, "a_lines"), ("V", 7, 7, "b_lines")],
                                columns=["clip_id", "first_frame", "last_frame", "pattern"])
    table = window_table(_label_rows(("V", [1, 1, 0, 0])), {"V": 5}, 2, 0, frame_labels,
                         source_index={"V": resample_indices(10, 30.0, 15.0)})
    assert table["start"].tolist() == [0, 2, 3]
    assert table["a_lines"].tolist() == [1, 0, 0] and table["b_lines"].tolist() == [0, 0, 1]


def test_frame_labels_with_an_unknown_pattern_are_refused():
    bad = pd.DataFrame([("V", 0, 3, "pneumothorax")], columns=["clip_id", "first_frame", "last_frame", "pattern"])
    with pytest.raises(LabelsError, match="unknown pattern"):
        window_table(_label_rows(("V", [1, 0, 0, 0])), {"V": 30}, 16, 4, bad)


# ------------------------------------------------------------------ a prepared study with windows
T, OVERLAP, VIDEO_FRAMES = 8, 2, 14  # 14 frames: windows 0..7 and 6..13


@pytest.fixture(scope="module")
def windowed_study(tmp_path_factory):
    from lusv.study import prepare

    root = tmp_path_factory.mktemp("windows")
    return prepare(root / "study", profile="quick", data="synthetic", data_path=root / "synthetic",
                   synthetic={"n_clips": 12, "n_patients": 6, "num_frames": VIDEO_FRAMES, "frame_size": 32, "seed": 1,
                              "progress": False},
                   num_frames=T, image_size=32, num_folds=3, seed=0, temporal_split=False,
                   cache_root=root / "cache", clip_policy="windows", window_overlap=OVERLAP)


def test_prepared_windows_follow_the_per_frame_truth(windowed_study):
    from lusv.infra.io import read_table

    windows = read_table(windowed_study.windows_csv)
    assert list(windows.columns) == list(WINDOW_COLUMNS)
    assert len(windows) == 2 * 12 and windows["start"].tolist() == [0, 6] * 12 and set(windows["length"]) == {T}
    assert windows["clip_id"].tolist() == [f"{v}_w{i:03d}" for v in sorted(set(windows["video_id"])) for i in (0, 1)]
    # the rule, slowly, from the generator's own file: present when any frame of the window has it
    truth = pd.read_csv(windowed_study.data_path + "/frame_truth.csv", dtype={"clip_id": str})
    for row in windows.itertuples(index=False):
        frames = truth[(truth.clip_id == row.video_id) & (truth.frame >= row.start) & (truth.frame < row.start + row.length)]
        assert len(frames) == T
        for pattern in PATTERNS:
            assert getattr(row, pattern) == float(frames[pattern].max()), (row.clip_id, pattern)
    assert (windows[list(PATTERNS)].nunique() > 1).all()  # the example is not degenerate


def test_no_patient_and_no_video_in_two_roles_with_windows(windowed_study):
    from lusv.config import params_for
    from lusv.infra.devices import Distributed
    from lusv.data.folds import load_fold_data
    from lusv.train.data import ensure_cached

    p = params_for("quick", **windowed_study.training_inputs(), fold=1)
    data = load_fold_data(p, windowed_study.run_dir)
    clips = ensure_cached(p, data, Distributed())
    roles = data.roles()
    assert sum(len(t) for t in roles.values()) == 24 and isinstance(clips, WindowedClips)
    for name, table in roles.items():
        assert table["clip_id"].str.fullmatch(r"SYN-C\d{4}_w00[01]").all(), name
        for other, other_table in roles.items():
            if other != name:
                assert not set(table["patient_id"]) & set(other_table["patient_id"]), (name, other)
                assert not set(table["video_id"]) & set(other_table["video_id"]), (name, other)
    folds = pd.read_csv(windowed_study.folds_csv, dtype={"clip_id": str})
    test = roles["test"]
    assert set(test["fold"]) == {1} and set(test["video_id"]) == set(folds.loc[folds["fold"] == 1, "clip_id"])


def test_tiny_training_run_predicts_windows_with_their_video_id(windowed_study, tmp_path):
    from lusv.config import params_for
    from lusv.train import run

    p = params_for("quick", **windowed_study.training_inputs(), out_dir=str(tmp_path), epochs=1, batch_size=4,
                   max_batches_per_epoch=1, num_workers=0, fold=0)
    run_dir = run(p)
    predictions = pd.read_csv(run_dir / "predictions_test.csv", dtype={"clip_id": str, "video_id": str})
    assert list(predictions.columns[:5]) == ["clip_id", "video_id", "patient_id", "fold", "model_fold"]
    folds = pd.read_csv(windowed_study.folds_csv, dtype={"clip_id": str})
    test_videos = sorted(folds.loc[folds["fold"] == 0, "clip_id"])
    assert predictions["clip_id"].tolist() == [f"{v}_w{i:03d}" for v in test_videos for i in (0, 1)]
    assert predictions["video_id"].tolist() == [v for v in test_videos for _ in (0, 1)]
    assert predictions[[f"p_{pattern}" for pattern in PATTERNS]].notna().all().all()

    # lusv predict on a test video's file cuts the same windows and gives the same probabilities
    from lusv.predict.video import predict_clip

    labels = pd.read_csv(windowed_study.labels_csv, dtype={"clip_id": str}).set_index("clip_id")
    video = test_videos[0]
    result = predict_clip(labels.loc[video, "path"], run_dir, plot_path=tmp_path / "plot.png")
    expected = predictions.loc[predictions["video_id"] == video, [f"p_{pattern}" for pattern in PATTERNS]].to_numpy()
    np.testing.assert_allclose(result.window_probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(list(result.probabilities.values()), expected.mean(axis=0), atol=1e-5)
    assert result.length == T and (tmp_path / "plot.png").is_file()


def test_external_validation_cuts_the_studys_windows_and_means_them_per_video(windowed_study, tmp_path):
    """A windows study judges another dataset window by window, as ``lusv predict`` does: a video's
    probability is the mean over the fold models of the mean of its windows'."""
    import dataclasses

    from reference_stats import youden_brute_force

    from lusv import study
    from lusv.evaluation.external import external_validation
    from lusv.predict.video import predict_clip

    # its own caches: the frozen features of every video must not leak into the shared fixture's
    prepared = dataclasses.replace(windowed_study, run_dir=tmp_path / "study", cache_root=tmp_path / "study_cache")
    prepared.save()
    study.train_configurations(prepared, {"luvnet": {"model": "luvnet", "train_encoder": False}},
                               epochs=1, batch_size=4, max_batches_per_epoch=1, num_workers=0)
    source = pd.read_csv(windowed_study.labels_csv, dtype={"clip_id": str}).iloc[:6]
    other = pd.DataFrame({"clip_id": [f"EXT-{i}" for i in range(6)], "path": source["path"],
                          "patient_id": [f"EXT-P{i // 2}" for i in range(6)],
                          "a_lines": [0, 1, 0, 1, 1, 0], "b_lines": [1, 1, 0, 0, 1, 0],
                          "consolidation": "", "pleural_effusion": ""})
    other.to_csv(tmp_path / "other.csv", index=False)
    results = external_validation(prepared.run_dir, "folder", tmp_path / "other.csv",
                                  out_dir=tmp_path / "ext", cache_root=tmp_path / "cache")

    windows = pd.read_csv(tmp_path / "ext" / "predictions_luvnet.windows.csv", dtype={"clip_id": str})
    assert windows["clip_id"].tolist() == [f"EXT-{i}_w00{w}" for i in range(6) for w in (0, 1)]
    saved = results.predictions["luvnet"]
    assert saved["clip_id"].tolist() == [f"EXT-{i}" for i in range(6)] and (saved["n_windows"] == 2).all()
    runs = [prepared.run_dir / "runs" / f"luvnet-fold{fold}" for fold in range(3)]
    for row, path in list(zip(saved.itertuples(index=False), other["path"]))[:2]:  # 2 of 6: each plots Grad-CAM
        expected = np.mean([list(predict_clip(path, run, plot_path=tmp_path / "p.png").probabilities.values())
                            for run in runs], axis=0)
        np.testing.assert_allclose([getattr(row, f"p_{p}") for p in PATTERNS], expected, atol=2e-3)

    # the threshold is chosen on the study's validation videos, each the mean of its windows
    validation = pd.read_csv(prepared.run_dir / "oof" / "luvnet.val.csv", dtype={"video_id": str})
    per_video = validation.groupby("video_id").agg({"p_a_lines": "mean", "a_lines": "max"})
    table = results.table.set_index("pattern")
    assert table.loc["a_lines", "threshold"] == pytest.approx(
        youden_brute_force(per_video["a_lines"].tolist(), per_video["p_a_lines"].tolist()))
    assert table.loc["a_lines", "n_labelled"] == 6 and np.isnan(table.loc["consolidation", "auc"])


def test_frozen_features_are_computed_once_per_video_and_sliced_per_window(windowed_study, tmp_path):
    from lusv.config import params_for
    from lusv.models import build_model
    from lusv.data.features import run_feature_cache

    p = params_for("quick", **windowed_study.training_inputs(), train_encoder=False)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = build_model("luvnet", encoder="tiny", weights="random", num_frames=T, image_size=32).eval()
    clips = windowed_study.cache()
    features = run_feature_cache(p, clips, model.encoder)
    features.build(["SYN-C0001_w000", "SYN-C0001_w001"], views=0, progress=False)
    manifest = features.features.manifest
    assert manifest["clip_id"].tolist() == ["SYN-C0001"] and manifest["length"].tolist() == [VIDEO_FRAMES]
    video, _ = features.features.load("SYN-C0001")
    second, length = features.load("SYN-C0001_w001")
    assert length == T and np.array_equal(second, video[6:14])
    with torch.no_grad():  # the window's features are what the encoder gives the window's own frames
        clip, _ = clips.load("SYN-C0001_w001")
        from lusv.data.model_input import to_model_input

        direct = model.encoder.encode_clips(to_model_input(torch.from_numpy(np.array(clip))[None], "cpu"))[0]
    np.testing.assert_allclose(second.astype(np.float32), direct.numpy(), rtol=2e-3, atol=2e-3)


# ------------------------------------------------------------------ whole videos in the caches
def test_whole_video_cache_keeps_every_frame_or_resamples_them(tmp_path):
    from lusv.data.cache import ClipCache
    from videos import tiny_clip_table

    table = tiny_clip_table(tmp_path / "src", {"long.mp4": 20, "short.mp4": 5})  # written at 10 fps
    videos = ClipCache(tmp_path / "cache", None, 16)
    videos.build(table, progress=False)
    assert videos.dir.name == "all_S16"
    long, length = videos.load("long")
    assert long.shape == (20, 16, 16, 1) and length == 20 and not long.flags.writeable  # memory-mapped
    assert videos.manifest.set_index("clip_id").loc["long", "fps"] == 10.0
    # brightness encodes the frame index (tests/videos.py): the frames keep their order
    means = long.reshape(20, -1).mean(axis=1)
    assert (np.diff(means) > 0).all()
    halved = ClipCache(tmp_path / "cache", None, 16, target_fps=5)
    halved.build(table, progress=False)
    resampled, length = halved.load("long")  # 20 frames at 10 fps -> 10 at 5 fps: source frames 0, 2, ..., 18
    assert halved.dir.name == "fps5_S16" and length == 10
    np.testing.assert_allclose(resampled.reshape(10, -1).mean(axis=1), means[::2], atol=1.0)
    with pytest.raises(ConfigError, match="target_fps"):
        ClipCache(tmp_path / "cache", 8, 16, target_fps=5)


def test_windowed_features_equal_the_encoder_on_each_window_padding_included(tmp_path):
    import torch

    from lusv.data.cache import ClipCache
    from lusv.data.model_input import to_model_input
    from lusv.data.features import FeatureCache
    from lusv.models.encoders import build_encoder
    from lusv.data.windows import WindowedFeatures, windows_of_cache
    from videos import tiny_clip_table

    table = tiny_clip_table(tmp_path / "src", {"long.mp4": 20, "short.mp4": 5})
    videos = ClipCache(tmp_path / "cache", None, 16)
    videos.build(table, progress=False)
    labelled = table.assign(patient_id=["P1", "P2"], **{pattern: 0.0 for pattern in PATTERNS})
    windows = windows_of_cache(videos, labelled, 8, 2)  # long: 0..7, 6..13, 12..19 (stride 6); short: 0..4, padded
    assert windows["clip_id"].tolist() == ["long_w000", "long_w001", "long_w002", "short_w000"]
    assert windows["start"].tolist() == [0, 6, 12, 0] and windows["length"].tolist() == [8, 8, 8, 5]
    clips = WindowedClips(videos, windows, 8)
    torch.manual_seed(0)
    encoder = build_encoder("tiny", "random").eval()
    # frames_per_call=4: the 20-frame video is encoded in 5 pieces along time
    features = WindowedFeatures(FeatureCache(videos, encoder, dtype="float32", frames_per_call=4,
                                             root=tmp_path / "features"), clips)
    report = features.build(windows["clip_id"], progress=False)
    assert sorted(report.table["clip_id"]) == ["long", "short"]  # once per video, not per window
    for window in windows["clip_id"]:
        rows, length = features.load(window)
        clip, clip_length = clips.load(window)
        with torch.no_grad():
            direct = encoder.encode_clips(to_model_input(torch.from_numpy(np.array(clip))[None], "cpu"))[0]
        assert length == clip_length and rows.shape == (8, encoder.feature_dim)
        np.testing.assert_allclose(rows, direct.numpy(), rtol=1e-5, atol=1e-5, err_msg=window)


def test_window_summary_counts_videos_and_windows(caplog):
    from lusv.data.windows import window_summary

    videos = _label_rows(("V", [1, 1, 1, NAN]), ("W", [1, 0, NAN, 0]))
    windows = window_table(videos, {"V": 30, "W": 10}, 16, 4, pd.DataFrame(
        [("V", 0, 3, "a_lines")], columns=["clip_id", "first_frame", "last_frame", "pattern"]))
    summary = window_summary(windows, videos).set_index("unit")
    # windows: V_w000 (A-lines), V_w001, V_w002 (none), W_w000 (its video's labels: A-lines)
    assert summary.loc["windows", "count"] == 4 and summary.loc["videos", "count"] == 2
    assert summary.loc["windows", "per_video"] == 2.0 and summary.loc["windows", "patients"] == 2
    assert summary.loc["windows", "a_lines"] == 0.5 and summary.loc["videos", "a_lines"] == 1.0
    assert summary.loc["windows", "consolidation"] == 0.0  # V's 3 windows only: W leaves it unlabelled
    # V is labelled with B-lines and consolidation, but its frame labels carry A-lines only
    assert "2 video label(s) disagree" in caplog.text and "V/b_lines, V/consolidation" in caplog.text


def test_study_truth_of_windows_is_the_slice_of_their_video(windowed_study):
    from lusv.infra.io import read_table
    from lusv.study import frame_truth, region_truth

    windows = read_table(windowed_study.windows_csv)
    effusion = windows.loc[windows["pleural_effusion"] == 1, "video_id"].iloc[0]
    videos = [effusion, *[v for v in windows["video_id"].unique() if v != effusion][:2]]
    windows = windows[windows["video_id"].isin(videos)]  # three videos, two windows each, one with effusion
    ids = windows["clip_id"].tolist()
    truth = frame_truth(windowed_study, ids)
    assert truth.shape == (6, T, 4)
    generated = pd.read_csv(windowed_study.data_path + "/frame_truth.csv", dtype={"clip_id": str})
    for i, row in enumerate(windows.itertuples(index=False)):
        frames = generated[generated.clip_id == row.video_id].sort_values("frame")[list(PATTERNS)].to_numpy()
        np.testing.assert_array_equal(truth[i], frames[row.start:row.start + T], err_msg=row.clip_id)
    masks = region_truth(windowed_study)(ids)
    assert masks.shape == (6, T, 4, 32, 32)
    # a region is drawn exactly in the window's frames where the truth says the pattern is present
    np.testing.assert_array_equal(masks.any(axis=(3, 4)), truth > 0)
    # and where the window's cached pixels show it: effusion is anechoic (dark)
    clips, _ = windowed_study.cache().load_many(ids)
    inside = masks[:, :, PATTERNS.index("pleural_effusion")]
    assert inside.any() and clips[..., 0][inside].mean() < clips[..., 0][~inside].mean()
