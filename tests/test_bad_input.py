"""Broken inputs give a clear LusvError (or a counted skip), never a traceback from PyAV or torch."""

import pickle

import numpy as np
import pandas as pd
import pytest
from videos import make_frames, write_test_video

from lusv.data.cache import ClipCache
from lusv.errors import LabelsError, VideoError
from lusv.data.labels import read_labels
from lusv.data.video import read_frames

HEADER = "clip_id,path,patient_id,a_lines,b_lines,consolidation,pleural_effusion"


def make_truncated(folder):
    good = write_test_video(folder / "whole.mp4", make_frames(10))
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return truncated


def make_zero_byte(folder):
    path = folder / "empty.mp4"
    path.write_bytes(b"")
    return path


def make_text(folder):
    path = folder / "notes.mp4"
    path.write_text("this is a text file renamed to .mp4\n" * 50)
    return path


def make_one_frame(folder):
    return write_test_video(folder / "still.mp4", make_frames(1))


def make_missing(folder):
    return folder / "never_written.mp4"


BROKEN = {
    "truncated mp4": (make_truncated, "corrupt or not a video", "cannot be decoded"),
    "zero-byte file": (make_zero_byte, "empty file", "zero-byte"),
    "text renamed .mp4": (make_text, "corrupt or not a video", "cannot be decoded"),
    "one frame": (make_one_frame, "too few frames", "has 1 frame"),
    "missing file": (make_missing, "missing file", "does not exist"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_clip_raises_video_error_naming_the_file(tmp_path, case):
    make, reason, words = BROKEN[case]
    path = make(tmp_path)
    with pytest.raises(VideoError) as error:
        read_frames(path)
    assert str(path) in str(error.value) and words in str(error.value)
    assert error.value.reason == reason
    copy = pickle.loads(pickle.dumps(error.value))  # as it would come back from a worker process
    assert (str(copy), copy.reason) == (str(error.value), reason)
    assert error.value.__cause__ is None  # the PyAV exception is summarised, not chained into the trace


def test_ingesting_a_folder_with_broken_files_counts_each_skip(tmp_path):
    good = [write_test_video(tmp_path / f"good{i}.mp4", make_frames(8, seed=i)) for i in range(2)]
    broken = {case: make(tmp_path) for case, (make, _, _) in BROKEN.items()}
    labels = pd.DataFrame({
        "clip_id": ["good0", "good1", *broken],
        "path": [str(p) for p in [*good, *broken.values()]],
    })
    report = ClipCache(tmp_path / "cache", 4, 16).build(labels, progress=False)

    table = report.table.set_index("clip_id")
    assert report.usable_ids == ["good0", "good1"]
    for case, (_, reason, _) in BROKEN.items():
        assert table.loc[case, "status"] == "skipped"
        assert table.loc[case, "reason"] == reason
        assert str(broken[case]) in table.loc[case, "detail"]
    counts = report.summary().set_index(["status", "reason"])["clips"]
    assert counts[("ingested", "new entry")] == 2
    assert counts[("skipped", "corrupt or not a video")] == 2
    assert counts[("skipped", "empty file")] == counts[("skipped", "too few frames")] == 1
    assert counts[("skipped", "missing file")] == 1


def test_labels_missing_column(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("clip_id,path,patient_id,a_lines,b_lines,consolidation\nc1,a.mp4,p1,0,1,0\n")
    with pytest.raises(LabelsError, match=r"lacks column\(s\) \['pleural_effusion'\]"):
        read_labels(csv)


def test_labels_url_is_an_error_but_nan_is_a_missing_label(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text(f"{HEADER}\nc1,a.mp4,p1,0,1,0,NaN\nc2,b.mp4,p2,0,1,0,https://www.dropbox.com/x.zip\n")
    with pytest.raises(LabelsError) as error:
        read_labels(csv)
    assert "line 3" in str(error.value) and "'pleural_effusion'" in str(error.value)
    assert "https://www.dropbox.com/x.zip" in str(error.value)

    csv.write_text(f"{HEADER}\nc1,a.mp4,p1,0,1,0,NaN\nc2,b.mp4,p2,0,1,0,\n")
    assert np.isnan(read_labels(csv)["pleural_effusion"]).all()


def test_labels_duplicate_clip_id(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text(f"{HEADER}\nc1,a.mp4,p1,0,1,0,0\nc1,b.mp4,p2,0,1,0,0\n")
    with pytest.raises(LabelsError, match=r"clip_id 'c1' appears more than once .*line 2 and .*line 3"):
        read_labels(csv)


def test_cache_build_rejects_duplicate_ids_from_an_unvalidated_table(tmp_path):
    labels = pd.DataFrame({"clip_id": ["a", "a"], "path": ["x.mp4", "y.mp4"]})
    with pytest.raises(LabelsError, match=r"duplicated clip_id\(s\) \['a'\]"):
        ClipCache(tmp_path / "cache", 4, 16).build(labels, progress=False)
