"""lusv.data.video: decoding every container we meet, the short-clip policy, crop, pad and resize."""

import numpy as np
import pytest
from videos import make_frames, write_test_video

from lusv.errors import VideoError
from lusv.data.video import prepare_clip, read_clip, read_frames, sample_indices, ultrasound_box


@pytest.mark.parametrize("suffix, tolerance", [(".mp4", 3), (".mov", 3), (".avi", 8), (".mpeg", 8), (".gif", 25)])
def test_read_frames_decodes_each_container_to_rgb(tmp_path, suffix, tolerance):
    frames = make_frames(10)
    path = write_test_video(tmp_path / f"clip{suffix}", frames)
    decoded = read_frames(path)
    assert decoded.shape == (10, 32, 48, 3) and decoded.dtype == np.uint8
    # brightness encodes the frame index: order and content survive the codec
    centre = decoded[:, 8:24, 16:32].mean(axis=(1, 2, 3))
    assert np.all(np.diff(centre) > 0)
    assert np.abs(decoded.astype(int) - frames).mean() < tolerance


@pytest.mark.parametrize("input_format, suffix", [("gray", ".avi"), ("rgba", ".mov")])
def test_gray_and_rgba_sources_come_out_as_rgb(tmp_path, input_format, suffix):
    frames = make_frames(6)
    stored = frames[..., 0] if input_format == "gray" else np.concatenate(
        [frames, np.full(frames.shape[:3] + (1,), 255, np.uint8)], axis=-1)
    path = write_test_video(tmp_path / f"clip{suffix}", stored, input_format=input_format, codec="png")
    np.testing.assert_array_equal(read_frames(path), frames)  # png is lossless


def test_sample_indices_follow_the_short_clip_policy():
    np.testing.assert_array_equal(sample_indices(10, 4), [0, 3, 6, 9])  # spread over the whole clip
    np.testing.assert_array_equal(sample_indices(8, 8), np.arange(8))
    np.testing.assert_array_equal(sample_indices(3, 8), [0, 1, 2])  # short clips keep every frame


def test_read_clip_samples_the_same_frames_as_read_frames(tmp_path):
    path = write_test_video(tmp_path / "clip.mp4", make_frames(12))
    everything = read_frames(path)
    clip = read_clip(path, num_frames=5)
    assert clip.source_frames == 12 and clip.fps == pytest.approx(10.0)
    assert (clip.height, clip.width) == (32, 48)
    np.testing.assert_array_equal(clip.frames, everything[sample_indices(12, 5)])
    # the cache prepares from the sampled frames: the result must equal preparing from all frames
    full, full_length = prepare_clip(everything, 5, 16)
    sampled, sampled_length = prepare_clip(clip.frames, 5, 16)
    np.testing.assert_array_equal(full, sampled)
    assert full_length == sampled_length == 5


def test_wrong_packet_count_falls_back_to_the_true_frame_count(tmp_path, monkeypatch):
    import lusv.data.video

    path = write_test_video(tmp_path / "clip.mp4", make_frames(12))
    expected = read_frames(path)[sample_indices(12, 4)]
    for misleading in (5, 30):  # too few and too many planned frames
        monkeypatch.setattr(lusv.data.video, "_count_packets", lambda _path, n=misleading: n)
        clip = read_clip(path, num_frames=4)
        assert clip.source_frames == 12
        np.testing.assert_array_equal(clip.frames, expected)


def test_ultrasound_box_ignores_black_border_and_small_text():
    gray = np.zeros((100, 120), np.uint8)
    gray[30:70, 20:80] = 120  # the sector
    gray[45:50, 40:45] = 0  # a dark hole inside it does not matter
    gray[2:5, 110:116] = 255  # burnt-in text, far from the sector
    gray[90:100, :] = 8  # codec noise in the border, below the threshold
    assert ultrasound_box(gray) == (30, 70, 20, 80)
    assert ultrasound_box(np.zeros((10, 20), np.uint8)) == (0, 10, 0, 20)  # all dark: whole frame


def test_prepare_clip_crops_pads_to_square_and_resizes():
    frames = np.zeros((4, 60, 80, 3), np.uint8)
    frames[:, 10:30, 20:60] = 200  # a 20 x 40 region inside black borders
    clip, length = prepare_clip(frames, num_frames=4, image_size=40)
    assert clip.shape == (4, 40, 40, 1) and clip.dtype == np.uint8 and length == 4
    # cropped to 20 x 40, padded to 40 x 40 with 10 black rows above and below
    assert np.all(clip[:, 10:30, :, 0] == 200)
    assert np.all(clip[:, :10] == 0) and np.all(clip[:, 30:] == 0)
    smaller, _ = prepare_clip(frames, num_frames=4, image_size=20)
    assert smaller.shape == (4, 20, 20, 1)
    assert np.all(smaller[:, 6:14, :, 0] == 200) and np.all(smaller[:, :4] == 0)


def test_prepare_clip_converts_rgb_to_luma_gray():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    frames[..., 0] = 200  # pure red: ITU-R 601 luma = 0.299 * 200
    clip, _ = prepare_clip(frames, num_frames=2, image_size=8)
    assert np.all(np.abs(clip.astype(int) - round(0.299 * 200)) <= 1)


def test_short_clip_is_zero_padded_with_its_length():
    frames = make_frames(3)
    clip, length = prepare_clip(frames, num_frames=8, image_size=16)
    assert length == 3 and clip.shape == (8, 16, 16, 1)
    assert clip[:3].max() > 0 and np.all(clip[3:] == 0)
    # frames keep their order: the sector brightens over time
    assert clip[0].mean() < clip[1].mean() < clip[2].mean()


def test_prepare_clip_rejects_one_frame_and_wrong_arrays():
    with pytest.raises(VideoError, match=r"clip a\.mp4 has 1 frame"):
        prepare_clip(make_frames(1), 8, 16, source="a.mp4")
    with pytest.raises(VideoError, match="uint8 RGB"):
        prepare_clip(np.zeros((4, 8, 8), np.uint8), 8, 16)


def test_dicom_multiframe_ultrasound_from_pydicom_test_data():
    pytest.importorskip("pydicom")
    pytest.importorskip("PIL")  # pydicom decodes this JPEG-baseline file through Pillow
    from pydicom.data import get_testdata_file

    path = get_testdata_file("examples_ybr_color.dcm", download=False)  # 30-frame US, ships in the wheel
    if path is None:
        pytest.skip("pydicom's bundled ultrasound example is not installed")
    clip = read_clip(path)
    assert clip.frames.shape == (30, 240, 320, 3) and clip.frames.dtype == np.uint8
    assert clip.source_frames == 30 and clip.fps == pytest.approx(30.0, abs=0.01)  # FrameTime 33.333 ms
    assert clip.frames.std() > 10  # real image content, not a blank array
    prepared, length = prepare_clip(clip.frames, 8, 32, source=path)
    assert prepared.shape == (8, 32, 32, 1) and length == 8 and prepared.max() > 0


def test_dicom_palette_and_single_frame():
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("examples_palette.dcm", download=False)  # one-frame US, PALETTE COLOR
    if path is None:
        pytest.skip("pydicom's bundled palette example is not installed")
    with pytest.raises(VideoError, match="has 1 frame"):
        read_clip(path)  # a still image is not a video
    still = read_clip(path, min_frames=1).frames
    assert still.shape == (1, 350, 800, 3) and still.dtype == np.uint8
    assert still.max() >= 250 and still.std() > 5  # 16-bit palette entries mapped onto 0..255


def test_a_frame_count_that_changes_between_decodes_is_a_video_error(tmp_path, monkeypatch):
    import lusv.data.video

    path = write_test_video(tmp_path / "clip.mp4", make_frames(6))
    monkeypatch.setattr(lusv.data.video, "_count_packets", lambda _: 9)  # the container says 9 frames
    # It decodes to 7, and planning again on 7 still misses kept frames (a damaged stream).
    monkeypatch.setattr(lusv.data.video, "_decode", lambda _, keep: (None, 7, 10.0))
    with pytest.raises(VideoError, match="different number of frames each time") as error:
        read_clip(path, num_frames=4)
    assert error.value.reason == "corrupt or not a video"


def test_written_video_bytes_do_not_depend_on_what_the_process_freed_before(tmp_path):
    from lusv.data.datasets import keep_freed_cpu_buffers
    from lusv.data.video_writer import _encoder_frame, write_video

    from lusv.data.sources.synthetic import plan_dataset, render_clip

    # Synthetic clips as the study writes them, and odd-width noise whose rows are padded in memory.
    plans = plan_dataset(3, 2, 16, 0, "mixed")
    clips = [render_clip(p.look, p.presence, 96, seed=p.render_seed, confluent_b_lines=p.confluent_b_lines).frames
             for p in plans]
    rng = np.random.default_rng(0)
    clips += [rng.integers(0, 256, (6, 34, 38), dtype=np.uint8) for _ in range(2)]

    def encoded() -> list[bytes]:
        return [write_video(tmp_path / f"c{i}.mp4", clip).read_bytes() for i, clip in enumerate(clips)]

    first = encoded()
    keep_freed_cpu_buffers()  # freed buffers are handed out again, holding their old bytes
    for _ in range(20):
        junk = np.full(2_000_000, 0xAB, dtype=np.uint8)
        del junk
    assert encoded() == first
    frame = _encoder_frame(clips[0][0])
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        assert not rows[:, plane.width:].any()  # x264 reads the row padding: it must be set


def test_synthetic_clips_are_the_same_bytes_from_a_fresh_and_a_busy_process(tmp_path):
    """x264's crf rate control wrote other bytes for the same frames depending on what the process
    had done before (two study runs differed in a third of their clips); the writer must not."""
    import subprocess
    import sys

    code = (
        "import hashlib, sys, numpy as np\n"
        "if sys.argv[1] == 'busy':\n"
        "    import torch, sklearn, matplotlib.pyplot\n"
        "    from lusv.data.datasets import keep_freed_cpu_buffers; keep_freed_cpu_buffers()\n"
        "    junk = [np.random.rand(2_000_000) for _ in range(8)]; del junk\n"
        "from lusv.data.sources.synthetic import plan_dataset, render_clip\n"
        "from lusv.data.video_writer import write_video\n"
        "for p in plan_dataset(8, 4, 16, 0, 'mixed'):\n"
        "    clip = render_clip(p.look, p.presence, 96, seed=p.render_seed, confluent_b_lines=p.confluent_b_lines)\n"
        "    path = write_video(sys.argv[2] + '/' + p.clip_id + '.mp4', clip.frames)\n"
        "    print(hashlib.md5(path.read_bytes()).hexdigest())\n"
    )
    digests = []
    for state in ("fresh", "busy"):
        (tmp_path / state).mkdir()
        done = subprocess.run([sys.executable, "-c", code, state, str(tmp_path / state)], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        digests.append(done.stdout.split())
    assert len(digests[0]) == 8 and digests[0] == digests[1]
