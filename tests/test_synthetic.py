"""The synthetic generator: determinism, files in the labels contract, truth, visible patterns."""

import json

import av
import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from lusv.data.sources import synthetic  # noqa: E402
from lusv.errors import ConfigError, LabelsError, VideoError  # noqa: E402
from lusv.data.labels import read_labels  # noqa: E402
from lusv.data.patterns import OPTIONAL_COLUMNS, PATTERNS, REQUIRED_COLUMNS  # noqa: E402
from lusv.data.sources.synthetic import load_synthetic  # noqa: E402
from lusv.data.video_writer import write_video  # noqa: E402

SMALL = dict(n_clips=8, n_patients=4, num_frames=8, frame_size=32, seed=3)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    labels = load_synthetic(root, progress=False, **SMALL)
    return root, labels


# ----------------------------------------------------------------------------- clips


def test_same_seed_same_clip_and_other_seed_other_clip():
    first = synthetic.synthesize_clip(seed=5, num_frames=6, frame_size=32)
    again = synthetic.synthesize_clip(seed=5, num_frames=6, frame_size=32)
    other = synthetic.synthesize_clip(seed=6, num_frames=6, frame_size=32)
    np.testing.assert_array_equal(first.frames, again.frames)
    np.testing.assert_array_equal(first.presence, again.presence)
    assert not np.array_equal(first.frames, other.frames)


@pytest.mark.parametrize("probe", ["convex", "linear"])
def test_clip_shapes_dtypes_and_black_outside_the_field_of_view(probe):
    clip = synthetic.synthesize_clip(seed=1, num_frames=5, frame_size=40, probe=probe, patterns={"b_lines": True})
    assert clip.frames.shape == (5, 40, 40) and clip.frames.dtype == np.uint8
    assert clip.presence.shape == (5, 4) and clip.presence.dtype == bool
    assert clip.probe == probe
    assert set(clip.regions) == set(PATTERNS)
    assert all(mask.shape == (5, 40, 40) and mask.dtype == bool for mask in clip.regions.values())
    outside = ~clip.field_of_view
    assert outside.any() and (clip.frames[:, outside] == 0).all()
    assert clip.frames[:, clip.field_of_view].mean() > 20
    if probe == "convex":  # a fan: the top corners are outside, the bottom centre inside
        assert outside[0, 0] and outside[0, -1] and clip.field_of_view[30, 20]


def test_patterns_argument_is_validated():
    with pytest.raises(ConfigError, match="unknown pattern"):
        synthetic.synthesize_clip(patterns={"b_line": True})
    with pytest.raises(ConfigError, match="shape"):
        synthetic.synthesize_clip(num_frames=4, patterns={"b_lines": [1, 0]})
    with pytest.raises(ConfigError, match="probe"):
        synthetic.synthesize_clip(probe="phased")


# ----------------------------------------------------------------------------- image statistics


def _lung(clip, frame):
    """Field-of-view pixels below the pleural line (the lung) in one frame."""
    rows = np.arange(clip.frames.shape[1])[:, None]
    pleura_rows = np.nonzero(clip.pleura_mask)[0]
    below = rows > pleura_rows.max() + 1
    return clip.field_of_view & below


@pytest.mark.parametrize("probe", ["convex", "linear"])
def test_b_lines_are_brighter_than_the_lung_beside_them_and_only_when_present(probe):
    on = np.array([0, 0, 1, 1, 1, 0, 0, 1], dtype=bool)
    clip = synthetic.synthesize_clip(seed=2, num_frames=8, frame_size=64, probe=probe, patterns={"b_lines": on})
    mask = clip.regions["b_lines"]
    assert mask[on].any(axis=(1, 2)).all() and not mask[~on].any()
    for t in np.flatnonzero(on):
        frame = clip.frames[t].astype(float)
        beside = _lung(clip, t) & ~mask[t]
        assert frame[mask[t]].mean() > 1.8 * frame[beside].mean()
    # the same columns are dark in frames without B-lines: the lines really come and go
    column = mask[on].any(axis=0)
    assert clip.frames[on][:, column].mean() > 1.5 * clip.frames[~on][:, column].mean()


def test_a_lines_sit_at_multiples_of_the_pleural_depth():
    clip = synthetic.synthesize_clip(seed=4, num_frames=4, frame_size=64, probe="linear",
                                     patterns={"a_lines": True})
    columns = clip.field_of_view[0]
    profile = clip.frames[:, :, columns].mean(axis=(0, 2))  # mean brightness per row
    pleura_row = clip.pleural_depth * 64
    a_line_row = int(2 * pleura_row)
    between_row = int(1.5 * pleura_row)
    assert profile[a_line_row - 1:a_line_row + 2].max() > 2 * profile[between_row]
    rows_with_band = np.nonzero(clip.regions["a_lines"][0].any(axis=1))[0]
    multiple = np.round(rows_with_band / pleura_row)
    assert multiple.min() == 2  # the first reverberation is at twice the pleural depth
    assert (np.abs(rows_with_band - multiple * pleura_row) <= 2).all()  # every band at a multiple
    # and no A-lines without the pattern
    plain = synthetic.synthesize_clip(seed=4, num_frames=4, frame_size=64, probe="linear", patterns={})
    plain_profile = plain.frames[:, :, columns].mean(axis=(0, 2))
    assert profile[a_line_row - 1:a_line_row + 2].max() > 2 * plain_profile[a_line_row - 1:a_line_row + 2].max()


@pytest.mark.parametrize("probe", ["convex", "linear"])
def test_effusion_is_darker_and_consolidation_brighter_than_aerated_lung(probe):
    clip = synthetic.synthesize_clip(seed=7, num_frames=4, frame_size=64, probe=probe,
                                     patterns={"pleural_effusion": True})
    fluid = clip.regions["pleural_effusion"]
    assert fluid.all(axis=0).sum() > 20  # a sizeable region in every frame
    frames = clip.frames.astype(float)
    lung = np.stack([_lung(clip, t) for t in range(4)]) & ~fluid
    chest_wall = clip.field_of_view & ~np.stack([_lung(clip, t) for t in range(4)])[0]
    assert frames[fluid].mean() < 0.35 * frames[lung].mean()
    assert frames[fluid].mean() < 0.25 * frames[:, chest_wall].mean()

    clip = synthetic.synthesize_clip(seed=7, num_frames=4, frame_size=64, probe=probe,
                                     patterns={"consolidation": True})
    solid = clip.regions["consolidation"]
    lung = np.stack([_lung(clip, t) for t in range(4)]) & ~solid
    assert solid.all(axis=0).sum() > 20
    assert clip.frames[solid].mean() > 1.8 * clip.frames[lung].mean()


def test_pleural_line_is_brighter_than_the_chest_wall():
    clip = synthetic.synthesize_clip(seed=8, num_frames=4, frame_size=64, probe="linear", patterns={})
    rows = np.arange(64)[:, None]
    above = clip.field_of_view & (rows < np.nonzero(clip.pleura_mask)[0].min() - 2)
    assert clip.frames[:, clip.pleura_mask].mean() > 1.5 * clip.frames[:, above].mean()


# ----------------------------------------------------------------------------- labels and truth


def test_plans_truth_prevalence_and_patients():
    plans = synthetic.plan_dataset(n_clips=120, n_patients=40, num_frames=16, seed=0)
    presence = np.stack([plan.presence for plan in plans])  # (N, T, 4)
    labels = np.stack([plan.labels for plan in plans])
    np.testing.assert_array_equal(labels, presence.any(axis=1))  # clip label == any frame
    prevalence = labels.mean(axis=0)
    assert ((prevalence >= 0.2) & (prevalence <= 0.6)).all(), prevalence
    fraction = presence[:, :, 1].mean(axis=1)
    assert ((fraction > 0) & (fraction < 1)).sum() >= 10  # B-lines come and go in many clips
    # co-occurrence: A-lines are rarer with B-lines than without
    a, b = labels[:, 0], labels[:, 1]
    assert a[b].mean() < a[~b].mean()
    patients = pd.Series([plan.patient_id for plan in plans])
    assert patients.nunique() == 40 and patients.str.fullmatch(r"SYN-P\d{4}").all()
    for _, group in pd.DataFrame({"p": patients, "probe": [p.look.probe for p in plans]}).groupby("p"):
        assert group.probe.nunique() == 1  # one probe per patient
    dates = pd.to_datetime([plan.acquired_on for plan in plans])
    assert (dates.max() - dates.min()).days > 365  # room for a temporal split


def test_plan_rejects_fewer_clips_than_patients():
    with pytest.raises(ConfigError, match="n_clips >= n_patients"):
        synthetic.plan_dataset(n_clips=3, n_patients=5)


def test_dataset_files_follow_the_labels_contract(small_root):
    root, labels = small_root
    raw = pd.read_csv(root / "labels.csv")
    assert list(raw.columns) == [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]
    assert (raw.source == "synthetic").all() and set(raw.probe) <= {"convex", "linear"}
    assert raw.path.str.startswith("videos/").all()  # relative to the CSV folder
    pd.to_datetime(raw.acquired_on, format="%Y-%m-%d")  # ISO dates
    assert len(labels) == 8 and labels.clip_id.is_unique
    assert labels.equals(read_labels(root / "labels.csv"))
    assert json.loads((root / "params.json").read_text())["n_clips"] == 8


def test_videos_decode_with_the_right_frames(small_root):
    root, labels = small_root
    plans = synthetic.plan_dataset(SMALL["n_clips"], SMALL["n_patients"], SMALL["num_frames"], SMALL["seed"])
    for plan, path in list(zip(plans, labels.path))[:3]:
        with av.open(path) as container:
            decoded = np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])
        assert decoded.shape == (8, 32, 32)
        rendered = synthetic.render_clip(plan.look, plan.presence, 32, seed=plan.render_seed,
                                         confluent_b_lines=plan.confluent_b_lines).frames
        assert np.abs(decoded.astype(float) - rendered).mean() < 6  # lossy, but the same picture


def test_frame_truth_matches_clip_labels(small_root):
    root, labels = small_root
    truth = synthetic.read_frame_truth(root)
    assert list(truth.columns) == ["clip_id", "frame", *PATTERNS]
    assert truth.groupby("clip_id").size().eq(8).all()
    any_frame = truth.groupby("clip_id")[list(PATTERNS)].max().loc[labels.clip_id]
    np.testing.assert_array_equal(any_frame.to_numpy(), labels[list(PATTERNS)].to_numpy())
    stacked, lengths = synthetic.frame_truth_array(truth, list(labels.clip_id))
    assert stacked.shape == (8, 8, 4) and (lengths == 8).all()
    # resampled like the clip cache: 8 source frames -> 3 at linspace indices 0, 4, 7 (rounded 3.5 -> 4)
    fewer, _ = synthetic.frame_truth_array(truth, list(labels.clip_id), num_frames=3)
    np.testing.assert_array_equal(fewer, stacked[:, [0, 4, 7]])


def test_missing_truth_is_a_labels_error(tmp_path):
    with pytest.raises(LabelsError, match="frame_truth.csv"):
        synthetic.read_frame_truth(tmp_path)


def test_load_synthetic_reuses_and_regenerates(tmp_path):
    params = dict(n_clips=3, n_patients=2, num_frames=4, frame_size=32, seed=0, progress=False)
    first = load_synthetic(tmp_path, **params)
    video = tmp_path / "videos" / "SYN-C0001.mp4"
    stamp = video.stat().st_mtime_ns
    again = load_synthetic(tmp_path, **params)
    assert video.stat().st_mtime_ns == stamp and again.equals(first)  # reused, not rewritten
    other = load_synthetic(tmp_path, **{**params, "seed": 1})
    assert json.loads((tmp_path / "params.json").read_text())["seed"] == 1
    assert video.stat().st_mtime_ns != stamp and len(other) == 3
    (tmp_path / "videos" / "SYN-C0002.mp4").unlink()  # a damaged dataset is rebuilt
    load_synthetic(tmp_path, **{**params, "seed": 1})
    assert (tmp_path / "videos" / "SYN-C0002.mp4").is_file()
    (tmp_path / "labels.csv").write_text("")  # an emptied labels file: regenerated, not a pandas error
    assert len(load_synthetic(tmp_path, **{**params, "seed": 1})) == 3


def test_write_video_refuses_odd_sizes(tmp_path):
    with pytest.raises(VideoError, match="even"):
        write_video(tmp_path / "x.mp4", np.zeros((3, 31, 32), np.uint8))
    with pytest.raises(ConfigError, match="even"):
        synthetic.generate_dataset(tmp_path, n_clips=1, n_patients=1, frame_size=33, progress=False)


def test_example_figure_has_one_row_per_pattern(small_root):
    root, labels = small_root
    from lusv.report.tables import example_frames_figure

    fig = example_frames_figure(*synthetic.example_frames(root), n_frames=3)
    gridspec = fig.axes[0].get_subplotspec().get_gridspec()
    assert gridspec.nrows == 4 and gridspec.ncols == 3 and len(fig.axes) == 12
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert "present" in titles
    import matplotlib.pyplot as plt

    plt.close(fig)
