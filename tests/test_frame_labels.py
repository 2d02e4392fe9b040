"""Issue 25, part 3: frame-level labels are held to the labels contract and checked against the
videos; every defect is one line naming the file, the line and the column.

The videos are real files (two small clips of 10 and 6 frames) decoded into a real whole-video
clip cache; the expected lines are written out by hand.
"""

import re

import pandas as pd
import pytest

from lusv.data.cache import ClipCache
from lusv.data.frame_labels import read_frame_labels
from lusv.data.sources import folder
from lusv.data.windows import windows_of_cache, write_windows
from lusv.errors import LabelsError
from videos import tiny_clip_table

GOOD = "clip_id,first_frame,last_frame,pattern\nA,0,3,a_lines\nB,2,5,b_lines\n"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """labels.csv of videos A (10 frames) and B (6 frames), and their whole-video cache."""
    root = tmp_path_factory.mktemp("frame_labels")
    clips = tiny_clip_table(root / "videos", {"A.mp4": 10, "B.mp4": 6})
    labels = clips.assign(patient_id=["P1", "P2"], a_lines=[1, 0], b_lines=[0, 1], consolidation=[0, 0],
                          pleural_effusion=[0, 0])
    labels.to_csv(root / "labels.csv", index=False)
    cache = ClipCache(root / "cache", None, 16)
    cache.build(folder.load_folder(root / "labels.csv"), progress=False)
    return root, cache, folder.load_folder(root / "labels.csv")


def _frame_labels(root, text):
    path = root / "frame_labels.csv"
    path.write_text(text)
    return path


def _one_line(caught) -> str:
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("row, column, says", [
    ("A,0,3.5,a_lines", "last_frame", r"has '3\.5'; frames are whole numbers from 0"),
    ("A,x,3,a_lines", "first_frame", r"has 'x'; frames are whole numbers"),
    ("A,,3,a_lines", "first_frame", r"is empty; frames are whole numbers"),
    ("A,-1,3,a_lines", "first_frame", r"has '-1'"),
    ("A,5,2,a_lines", "last_frame", r"is 2, before first_frame 5"),
    ("A,0,3,b-lines", "pattern", r"has 'b-lines', an unknown pattern \(known: a_lines"),
    (",0,3,a_lines", "clip_id", r"is empty"),
    ("C,0,3,a_lines", "clip_id", r"names 'C', which the labels table does not have"),
])
def test_a_bad_cell_is_named_by_file_line_and_column(dataset, row, column, says):
    root, _, _ = dataset
    path = _frame_labels(root, GOOD + "\n" + row + "\n")  # a blank line 4: the bad row is line 5 of the file
    with pytest.raises(LabelsError) as caught:
        folder.frame_labels(root / "labels.csv")
    assert re.match(rf"{re.escape(str(path))} line 5: column '{column}' {says}", _one_line(caught)), caught.value


@pytest.mark.parametrize("row, column, value", [
    ("B,6,8,b_lines", "first_frame", 6),   # wholly past the end of a 6-frame video: the case of the issue
    ("A,8,10,a_lines", "last_frame", 10),  # the last frame of a 10-frame video is 9
])
def test_a_range_past_the_end_of_its_video_is_refused(dataset, row, column, value):
    root, cache, labels = dataset
    path = _frame_labels(root, GOOD + row + "\n")
    frame_labels = folder.frame_labels(root / "labels.csv")  # the values are fine; the videos decide
    video = row.split(",")[0]
    frames = {"A": 10, "B": 6}[video]
    with pytest.raises(LabelsError) as caught:
        windows_of_cache(cache, labels, 4, 0, frame_labels)
    assert _one_line(caught) == (f"{path} line 4: column '{column}' is {value}, past the end of video '{video}' "
                                 f"({frames} frames: 0..{frames - 1}): frames count from 0; fix the range")
    with pytest.raises(LabelsError, match="past the end"):  # preparing a study writes nothing first
        write_windows(root / "prepare", cache, labels, 4, 0, frame_labels)
    assert not (root / "prepare" / "windows.csv").exists()


def test_good_frame_labels_label_the_windows_and_are_prepared_without_the_line_column(dataset):
    root, cache, labels = dataset
    _frame_labels(root, GOOD)
    frame_labels = folder.frame_labels(root / "labels.csv")
    windows = windows_of_cache(cache, labels, 4, 0, frame_labels).set_index("clip_id")
    # A: windows 0..3, 4..7, tail 6..9; A-lines on frames 0..3. B: windows 0..3, tail 2..5; B-lines on 2..5.
    assert windows["a_lines"].to_dict() == {"A_w000": 1.0, "A_w001": 0.0, "A_w002": 0.0,
                                                "B_w000": 0.0, "B_w001": 0.0}
    assert windows.loc[["B_w000", "B_w001"], "b_lines"].tolist() == [1.0, 1.0]
    _, written = write_windows(root / "prepared", cache, labels, 4, 0, frame_labels)
    assert pd.read_csv(written).columns.tolist() == ["clip_id", "first_frame", "last_frame", "pattern"]
    assert read_frame_labels(written)[["first_frame", "last_frame"]].to_numpy().tolist() == [[0, 3], [2, 5]]


def test_a_missing_frame_label_file_or_column_is_one_line(tmp_path):
    with pytest.raises(LabelsError, match=r"frame-level label file .*nothing\.csv does not exist"):
        read_frame_labels(tmp_path / "nothing.csv")
    (tmp_path / "f.csv").write_text("clip_id,first,last_frame,pattern\nA,0,1,a_lines\n")
    with pytest.raises(LabelsError, match=r"f\.csv lacks column\(s\) \['first_frame'\]"):
        read_frame_labels(tmp_path / "f.csv")
