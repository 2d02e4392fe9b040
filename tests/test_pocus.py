"""lusv.data.sources.pocus: the POCUS metadata table mapped onto the labels contract, and ingestion."""

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pocus_data import POCUS_ROOT, requires_pocus
from videos import make_frames, write_test_video

from lusv.data.cache import ClipCache
from lusv.errors import LabelsError
from lusv.data.patterns import PATTERNS
from lusv.data.sources import load_source
from lusv.data.sources.pocus import load_pocus

METADATA_HEADER = ("Date added,Filename,Probe,Source ID,Patient ID / Name,Label,"
                   "Effusion,Consolidations,B-lines,A-lines")


@pytest.fixture()
def mini_pocus(tmp_path):
    """A POCUS-shaped folder: dirty labels, a row without a file, a file without a row."""
    for folder, name in [("convex", "Cov-a"), ("convex", "Reg_b"), ("linear", "Pneu-c"), ("convex", "orphan")]:
        write_test_video(tmp_path / "pocus_videos" / folder / f"{name}.mp4", make_frames(4))
    rows = [
        "20.04.20,Cov-a,convex,2,36,COVID-19,0,1,1,0",
        "21.05.20,Reg_b,,16,,regular,https://www.dropbox.com/s/x.zip,0,n/A,1",  # URL and n/A labels
        "0,Pneu-c,linear,,,pneumonia,,1,0,0",  # bad date, empty label, no patient and no source
        "22.06.20,Not-here,convex,3,50,COVID-19,0,0,1,0",  # no file in this copy
    ]
    (tmp_path / "dataset_metadata.csv").write_text("\n".join([METADATA_HEADER, *rows]) + "\n")
    return tmp_path


def test_mini_pocus_maps_columns_and_dirty_values(mini_pocus, caplog):
    with caplog.at_level(logging.WARNING, logger="lusv.data.sources.pocus"):
        labels = load_pocus(mini_pocus)
    labels = labels.set_index("clip_id")
    assert labels.index.tolist() == ["Cov-a", "Reg_b", "Pneu-c"]
    assert labels.loc["Cov-a", "path"] == str((mini_pocus / "pocus_videos" / "convex" / "Cov-a.mp4").resolve())
    np.testing.assert_array_equal(labels.loc["Cov-a", list(PATTERNS)].to_numpy(float), [0, 1, 1, 0])
    np.testing.assert_array_equal(labels.loc["Reg_b", list(PATTERNS)].to_numpy(float), [1, np.nan, 0, np.nan])
    assert np.isnan(labels.loc["Pneu-c", "pleural_effusion"])
    assert labels["patient_id"].tolist() == ["pocus-36", "pocus-src16-unknown", "pocus-clip-Pneu-c"]
    assert labels.loc["Cov-a", "acquired_on"] == pd.Timestamp("2020-04-20")
    assert pd.isna(labels.loc["Pneu-c", "acquired_on"])
    assert labels["probe"].tolist() == ["convex", "convex", "linear"]  # empty Probe: the folder says convex
    assert labels["source"].tolist() == ["pocus-src2", "pocus-src16", "pocus"]
    assert "skipped 1 metadata row(s)" in caplog.text
    assert "1 clip file(s) without a metadata row" in caplog.text and "orphan" in caplog.text
    assert "2 clip(s) have no usable 'Effusion' label" in caplog.text
    assert "2 clip(s) have no Patient ID" in caplog.text


def test_relative_root_gives_existing_paths(mini_pocus, monkeypatch):
    # run_all.sh passes ../shared/data/pocus: a relative root was once joined to itself.
    monkeypatch.chdir(mini_pocus / "pocus_videos")
    labels = load_pocus(Path("..") / ".." / mini_pocus.name)
    assert labels["path"].map(lambda p: Path(p).is_file()).all()
    assert labels.set_index("clip_id").loc["Cov-a", "path"] == str((mini_pocus / "pocus_videos" / "convex" / "Cov-a.mp4").resolve())


def test_missing_metadata_is_a_labels_error(tmp_path):
    with pytest.raises(LabelsError, match="dataset_metadata.csv does not exist"):
        load_pocus(tmp_path)


@requires_pocus
def test_real_pocus_table(caplog):
    with caplog.at_level(logging.WARNING, logger="lusv.data.sources.pocus"):
        labels = load_source("pocus", root=POCUS_ROOT)
    assert len(labels) == 100 and labels["clip_id"].is_unique
    assert all(Path(path).is_file() for path in labels["path"])
    # the URL and the empty Effusion cells become missing labels; every other label is 0/1
    missing = labels.set_index("clip_id")[list(PATTERNS)].isna()
    assert missing.sum().to_dict() == {"a_lines": 0, "b_lines": 0, "consolidation": 0, "pleural_effusion": 2}
    assert set(missing.index[missing["pleural_effusion"]]) == {"Reg_liftl_pneucase3_clip1", "Reg_liftl_case3_clip2"}
    assert labels["patient_id"].str.startswith("pocus-").all() and labels["patient_id"].nunique() == 49
    assert labels["acquired_on"].notna().all() and labels["acquired_on"].dt.year.isin([2020]).all()
    assert labels["probe"].value_counts().to_dict() == {"convex": 91, "linear": 9}
    assert "skipped 273 metadata row(s)" in caplog.text


@requires_pocus
def test_all_pocus_clips_ingest(tmp_path):
    labels = load_pocus(POCUS_ROOT)
    started = time.perf_counter()
    report = ClipCache(tmp_path / "cache", 8, 32).build(labels, progress=False, workers=min(2, os.cpu_count() or 1))
    seconds = time.perf_counter() - started
    print(f"POCUS: ingested {len(report.usable_ids)} clips at T=8, S=32 in {seconds:.1f} s")
    assert report.table["status"].tolist() == ["ingested"] * 100, report.summary()
    clips, lengths = ClipCache(tmp_path / "cache", 8, 32).load_many(labels["clip_id"])
    assert clips.shape == (100, 8, 32, 32, 1) and (lengths == 8).all()  # every POCUS clip has >= 8 frames
    assert (clips.reshape(100, -1).max(axis=1) > 50).all()  # real image content in every entry
