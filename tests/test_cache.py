"""lusv.data.cache: clips decoded once, valid entries reused, damaged or stale ones rebuilt."""

import logging
import os

import numpy as np
import pandas as pd
import pytest
from videos import make_frames, tiny_clip_table, write_test_video

from lusv.data.cache import ClipCache
from lusv.errors import CacheError, IngestError
from lusv.data.video import prepare_clip, read_frames

T, S = 4, 16


@pytest.fixture()
def clips(tmp_path):
    """Three tiny clips (one shorter than T) and their labels table."""
    return tiny_clip_table(tmp_path / "videos", {"long.mp4": 10, "gif clip+1.gif": 8, "short.avi": 3})


def test_build_decodes_stores_and_loads(tmp_path, clips):
    cache = ClipCache(tmp_path / "cache", T, S)
    report = cache.build(clips, progress=False)
    assert report.table["status"].tolist() == ["ingested"] * 3
    assert report.usable_ids == ["long", "gif clip+1", "short"]
    assert cache.dir == tmp_path / "cache" / f"T{T}_S{S}"
    assert len(list((cache.dir / "clips").glob("*.npy"))) == 3
    assert "long" in cache and "nope" not in cache

    array, length = cache.load("long")
    assert array.shape == (T, S, S, 1) and array.dtype == np.uint8 and length == T
    expected, _ = prepare_clip(read_frames(clips.loc[0, "path"]), T, S)
    np.testing.assert_array_equal(array, expected)  # the cache holds exactly what prepare_clip makes

    batch, lengths = cache.load_many(["short", "long"])
    assert batch.shape == (2, T, S, S, 1) and lengths.dtype == np.int64
    assert lengths.tolist() == [3, T]
    assert np.all(batch[0, 3:] == 0)  # padding after the short clip's 3 real frames

    manifest = pd.read_csv(cache.manifest_path, dtype={"clip_id": str})
    assert set(manifest["clip_id"]) == {"long", "gif clip+1", "short"}
    row = manifest.set_index("clip_id").loc["long"]
    assert row["source_frames"] == 10 and row["fps"] == pytest.approx(10.0) and row["length"] == T
    assert (row["height"], row["width"]) == (32, 48)
    assert row["source_size"] == os.path.getsize(clips.loc[0, "path"])
    assert len(row["checksum"]) == 64


def test_rerun_reuses_entries_and_other_sizes_get_their_own_folder(tmp_path, clips):
    ClipCache(tmp_path / "cache", T, S).build(clips, progress=False)
    again = ClipCache(tmp_path / "cache", T, S)  # a fresh object reads the manifest from disk
    assert again.build(clips, progress=False).table["status"].tolist() == ["cached"] * 3
    other = ClipCache(tmp_path / "cache", T, 8)
    assert other.dir != again.dir and "long" not in other
    assert other.build(clips, progress=False).table["status"].tolist() == ["ingested"] * 3
    assert other.load("long")[0].shape == (T, 8, 8, 1)


@pytest.mark.parametrize("damage", ["truncate", "edit", "delete"])
def test_damaged_entry_is_detected_and_rebuilt(tmp_path, clips, caplog, damage):
    cache = ClipCache(tmp_path / "cache", T, S)
    cache.build(clips, progress=False)
    original, _ = cache.load("long")
    entry = cache.dir / "clips" / cache.manifest.set_index("clip_id").loc["long", "entry"]
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "edit":
        edited = original.copy()
        edited[0, 0, 0, 0] ^= 0xFF  # same shape and dtype: only the checksum can tell
        np.save(entry, edited)
    else:
        entry.unlink()

    with caplog.at_level(logging.WARNING, logger="lusv.data.cache"):
        report = ClipCache(tmp_path / "cache", T, S).build(clips, progress=False)
    table = report.table.set_index("clip_id")
    assert table.loc["long", "status"] == "rebuilt" and table.loc["long", "reason"] == "entry damaged"
    assert table.loc["short", "status"] == "cached"
    assert "rebuilt cache entry of clip 'long'" in caplog.text
    np.testing.assert_array_equal(ClipCache(tmp_path / "cache", T, S).load("long")[0], original)


def test_changed_source_is_rebuilt(tmp_path, clips):
    cache = ClipCache(tmp_path / "cache", T, S)
    cache.build(clips, progress=False)
    before, _ = cache.load("long")
    write_test_video(clips.loc[0, "path"], make_frames(10, seed=1)[::-1].copy())  # same size, reversed
    report = cache.build(clips, progress=False)
    assert report.table.set_index("clip_id").loc["long", "reason"] == "source changed"
    after, _ = cache.load("long")
    assert after[0].mean() > before[0].mean()  # now starts with the brightest frame


def test_report_summary_and_save(tmp_path, clips):
    clips = pd.concat([clips, pd.DataFrame({"clip_id": ["gone"], "path": [str(tmp_path / "gone.mp4")]})])
    report = ClipCache(tmp_path / "cache", T, S).build(clips, progress=False)
    summary = report.summary()
    assert summary.to_dict("records") == [
        {"status": "ingested", "reason": "new entry", "clips": 3},
        {"status": "skipped", "reason": "missing file", "clips": 1},
    ]
    assert "3 of 4 clips usable" in str(report)
    saved = pd.read_csv(report.save(tmp_path / "report.csv"))
    assert list(saved.columns) == ["clip_id", "path", "status", "reason", "detail"]
    assert saved.set_index("clip_id").loc["gone", "detail"].count("gone.mp4") >= 1
    beside = pd.read_csv(tmp_path / "report_summary.csv")  # the counts, saved next to the per-clip table
    assert beside.to_dict("records") == summary.to_dict("records")


def test_nothing_usable_raises_with_the_report(tmp_path):
    labels = pd.DataFrame({"clip_id": ["a"], "path": [str(tmp_path / "a.mp4")]})
    with pytest.raises(IngestError, match="no usable clip") as error:
        ClipCache(tmp_path / "cache", T, S).build(labels, progress=False)
    assert error.value.report.table["status"].tolist() == ["skipped"]
    assert error.value.report.table["reason"].tolist() == ["missing file"]
    assert error.value.report_path is None  # the cache does not save the report; study.prepare does


def test_an_unexpected_failure_is_a_counted_skip_not_a_crash(tmp_path, clips, monkeypatch):
    import lusv.data.cache

    real_prepare = lusv.data.cache.prepare_clip

    def prepare_or_fail(frames, *args, source=None, **kwargs):
        if source is not None and source.endswith("short.avi"):
            raise AttributeError("'NoneType' object has no attribute 'shape'")  # a bug-like surprise
        return real_prepare(frames, *args, source=source, **kwargs)

    monkeypatch.setattr(lusv.data.cache, "prepare_clip", prepare_or_fail)
    report = ClipCache(tmp_path / "cache", T, S).build(clips, progress=False)
    table = report.table.set_index("clip_id")
    assert (table.loc["short", "status"], table.loc["short", "reason"]) == ("skipped", "unexpected error")
    assert "AttributeError" in table.loc["short", "detail"]
    assert report.usable_ids == ["long", "gif clip+1"]


def test_load_of_unknown_clip_names_it(tmp_path):
    with pytest.raises(CacheError, match="'x' is not in the clip cache"):
        ClipCache(tmp_path / "cache", T, S).load("x")


def test_worker_processes_give_the_same_entries(tmp_path, clips):
    serial = ClipCache(tmp_path / "serial", T, S)
    serial.build(clips, progress=False)
    parallel = ClipCache(tmp_path / "parallel", T, S)
    parallel.build(clips, progress=False, workers=2)
    np.testing.assert_array_equal(parallel.load_many(clips["clip_id"])[0], serial.load_many(clips["clip_id"])[0])
    assert parallel.manifest["checksum"].tolist() == serial.manifest["checksum"].tolist()
