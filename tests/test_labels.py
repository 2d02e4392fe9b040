"""lusv.data.labels.read_labels: the labels contract and errors that point at the row, column and fix."""

import numpy as np
import pandas as pd
import pytest

from lusv.errors import LabelsError
from lusv.data.labels import read_labels

HEADER = "clip_id,path,patient_id,a_lines,b_lines,consolidation,pleural_effusion"


def write_csv(tmp_path, lines, header=HEADER, name="labels.csv"):
    path = tmp_path / name
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def test_valid_csv_is_returned_in_contract_types(tmp_path):
    csv = write_csv(
        tmp_path,
        ["c1,videos/c1.mp4,p1,1,0.0,,True,2020-04-20,convex,site A,ok",
         "c2,/data/c2.avi,p2,0,1,NaN,false,,,,"],
        header=HEADER + ",acquired_on,probe,source,note",
    )
    labels = read_labels(csv)
    assert list(labels.columns) == ["clip_id", "path", "patient_id", "a_lines", "b_lines", "consolidation",
                                    "pleural_effusion", "acquired_on", "probe", "source", "note"]
    assert labels["clip_id"].tolist() == ["c1", "c2"]
    assert labels.loc[0, "path"] == str((tmp_path / "videos" / "c1.mp4").resolve())  # relative to the CSV
    assert labels.loc[1, "path"] == "/data/c2.avi"
    values = labels[["a_lines", "b_lines", "consolidation", "pleural_effusion"]].to_numpy()
    np.testing.assert_array_equal(values, [[1.0, 0.0, np.nan, 1.0], [0.0, 1.0, np.nan, 0.0]])
    assert labels[["a_lines", "b_lines"]].dtypes.eq(np.float64).all()
    assert pd.api.types.is_datetime64_any_dtype(labels["acquired_on"])
    assert labels.loc[0, "acquired_on"] == pd.Timestamp("2020-04-20") and pd.isna(labels.loc[1, "acquired_on"])
    assert labels["probe"].tolist() == ["convex", ""]
    assert labels["note"].tolist() == ["ok", ""]


def test_base_dir_overrides_the_csv_folder_and_dataframes_are_accepted(tmp_path):
    frame = pd.DataFrame({"clip_id": ["a"], "path": ["x.mp4"], "patient_id": [7], "a_lines": [1],
                          "b_lines": [0.0], "consolidation": [None], "pleural_effusion": [True]})
    labels = read_labels(frame, base_dir=tmp_path)
    assert labels.loc[0, "path"] == str(tmp_path.resolve() / "x.mp4")
    assert labels.loc[0, "patient_id"] == "7"
    assert labels.loc[0, "pleural_effusion"] == 1.0 and np.isnan(labels.loc[0, "consolidation"])


def test_missing_column_lists_missing_and_present(tmp_path):
    header = "clip_id,path,patient_id,a_lines,consolidation,pleural_effusion"  # no b_lines
    csv = write_csv(tmp_path, ["c1,c1.mp4,p1,1,0,0"], header=header)
    with pytest.raises(LabelsError) as error:
        read_labels(csv)
    message = str(error.value)
    assert "['b_lines']" in message and "'consolidation'" in message and str(csv) in message


def test_duplicate_clip_id_names_both_lines(tmp_path):
    csv = write_csv(tmp_path, ["c1,a.mp4,p1,1,0,0,0", "c2,b.mp4,p1,1,0,0,0", "c1,c.mp4,p2,0,0,0,0"])
    with pytest.raises(LabelsError, match=r"'c1'.*line 2 and .*line 4"):
        read_labels(csv)


@pytest.mark.parametrize("value", ["yes", "2", "https://example.org/clip.zip", "0.5"])
def test_bad_label_value_names_line_column_and_value(tmp_path, value):
    csv = write_csv(tmp_path, ["c1,a.mp4,p1,1,0,0,0", f"c2,b.mp4,p2,0,{value},0,0"])
    with pytest.raises(LabelsError) as error:
        read_labels(csv)
    message = str(error.value)
    assert "line 3" in message and "'b_lines'" in message and repr(value) in message


def test_empty_patient_id_is_an_error(tmp_path):
    csv = write_csv(tmp_path, ["c1,a.mp4,,1,0,0,0"])
    with pytest.raises(LabelsError, match=r"line 2: column 'patient_id' is empty"):
        read_labels(csv)


def test_dates_are_iso_by_default_and_dayfirst_on_request(tmp_path):
    csv = write_csv(tmp_path, ["c1,a.mp4,p1,1,0,0,0,20.04.20"], header=HEADER + ",acquired_on")
    with pytest.raises(LabelsError, match=r"line 2: column 'acquired_on' has '20\.04\.20'.*dayfirst=True"):
        read_labels(csv)
    labels = read_labels(csv, dayfirst=True)
    assert labels.loc[0, "acquired_on"] == pd.Timestamp("2020-04-20")


def test_line_numbers_count_blank_lines(tmp_path):
    csv = write_csv(tmp_path, ["c1,a.mp4,p1,1,0,0,0", "", "c2,b.mp4,p2,0,2,0,0"])
    with pytest.raises(LabelsError, match=r"line 4: column 'b_lines' has value '2'"):
        read_labels(csv)
    assert read_labels(write_csv(tmp_path, ["c1,a.mp4,p1,1,0,0,0", "", "c2,b.mp4,p2,0,1,0,0"], name="ok.csv"))[
        "clip_id"].tolist() == ["c1", "c2"]


def test_rows_ending_in_a_comma_keep_their_columns(tmp_path):
    # pandas would take such a file's first column as its index and shift every value left.
    labels = read_labels(write_csv(tmp_path, ["c1,a.mp4,p1,1,0,0,1,", "c2,b.mp4,p2,0,1,0,0,"]))
    assert labels["clip_id"].tolist() == ["c1", "c2"] and labels["patient_id"].tolist() == ["p1", "p2"]
    assert labels["pleural_effusion"].tolist() == [1.0, 0.0]


def test_extra_values_beyond_the_header_name_the_line(tmp_path):
    csv = write_csv(tmp_path, ["c1,a.mp4,p1,1,0,0,0", "c2,b.mp4,p2,0,1,0,0,left lower,zone 3"])
    with pytest.raises(LabelsError, match=r"line 3: 9 fields but the header has 7 columns"):
        read_labels(csv)


def test_a_row_ending_in_one_comma_is_read_and_a_quoted_line_break_keeps_line_numbers(tmp_path):
    csv = write_csv(tmp_path, ["c1,a.mp4,p1,1,0,0,0", 'c2,"b\nc.mp4",p2,0,1,0,0,', "c3,d.mp4,p3,0,7,0,0"])
    with pytest.raises(LabelsError, match=r"line 5: column 'b_lines' has value '7'"):
        read_labels(csv)


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\xff\xfeclip_id,path\n", "not a readable CSV.*UTF-8"),
    (HEADER.replace("probe", "x").encode() + b",path\nc1,a.mp4,p1,1,0,0,0,b.mp4\n", r"column\(s\) \['path'\] more than once"),
])
def test_unreadable_or_ambiguous_files_are_named(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    with pytest.raises(LabelsError, match=message):
        read_labels(path)


def test_header_without_rows_is_an_error(tmp_path):
    with pytest.raises(LabelsError, match="no clip rows"):
        read_labels(write_csv(tmp_path, []))


def test_missing_csv_file_is_a_labels_error(tmp_path):
    with pytest.raises(LabelsError, match="does not exist"):
        read_labels(tmp_path / "nope.csv")


def test_folder_source_reads_the_csv_in_a_folder_and_unknown_sources_are_named(tmp_path, caplog):
    from lusv.errors import ConfigError
    from lusv.data.sources import load_source

    write_csv(tmp_path, ["c1,videos/c1.mp4,p1,1,0,0,0"])
    labels = load_source("folder", csv_path=tmp_path)  # a folder means folder/labels.csv
    assert labels["clip_id"].tolist() == ["c1"]
    assert "1 of 1 clip file(s) do not exist" in caplog.text  # only logged: the cache counts the skip
    with pytest.raises(ConfigError, match=r"unknown data source 'nope'.*'folder', 'pocus', 'synthetic'"):
        load_source("nope")
