"""Frame-level labels: which frames of a video carry each pattern, held to the labels contract.

A frame-level label table (``frame_labels.csv`` beside a folder dataset's labels CSV, the
synthetic generator's per-frame truth, a prepared study's ``prepare/frame_labels.csv``) has the
columns ``FRAME_LABEL_COLUMNS``: ``clip_id`` (a video of the labels table), ``first_frame`` and
``last_frame`` (frames of the video file, counted from 0, inclusive) and ``pattern`` (one of
``lusv.data.patterns.PATTERNS``). The windows clip policy (``lusv.data.windows``) labels each
window from it.

As in the labels contract (``lusv.data.labels``), every defect raises ``LabelsError`` in one line
naming the file, the line (header = line 1; a DataFrame: its row) and the column: a missing
column, an empty ``clip_id``, a frame that is not a whole number >= 0 (``3.5``, ``x``, an empty
cell), ``last_frame`` before ``first_frame``, an unknown pattern (``check_frame_labels``), a video
the labels table does not have, and a range past the end of its video (``check_against_videos``):
such a range would otherwise make the pattern absent in every window without a word.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from lusv.data.patterns import PATTERNS
from lusv.errors import LabelsError

FRAME_LABEL_COLUMNS = ("clip_id", "first_frame", "last_frame", "pattern")
LINE = "line"  # the file line of each row, kept beside the columns while the table is checked
_SOURCE = "source"  # DataFrame.attrs key: the file the table was read from


def read_frame_labels(path: str | Path) -> pd.DataFrame:
    """A frame-level label CSV, checked (``check_frame_labels``); every value is read as text
    first, so that the check, not a parser's guess, says what a cell means."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"frame-level label file {path} does not exist: check the path")
    rows, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            start = reader.line_num + 1
            for fields in reader:
                if any(value.strip() for value in fields):
                    rows.append((fields + [""] * len(header))[: len(header)])
                    lines.append(start)
                start = reader.line_num + 1
    except (csv.Error, UnicodeDecodeError) as exc:
        raise LabelsError(f"frame-level label file {path} is not a readable CSV ({exc}): save it as UTF-8 CSV") from None
    table = pd.DataFrame(rows, columns=header)
    table[LINE] = lines
    table.attrs[_SOURCE] = str(path)
    return check_frame_labels(table)


def _row_namer(table: pd.DataFrame, where: str):
    lines = table[LINE].tolist() if LINE in table else None
    if lines is None:
        return lambda position: f"{where} row {position}"
    return lambda position: f"{where} line {lines[position]}"


def check_frame_labels(table: pd.DataFrame, where: str | None = None) -> pd.DataFrame:
    """The table with clip_id and pattern as str and frame ranges as int (plus ``LINE`` when it
    was read from a file); ``LabelsError`` naming the file, line and column of the first defect."""
    where = where or table.attrs.get(_SOURCE) or "frame-level label table"
    missing = [c for c in FRAME_LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise LabelsError(f"{where} lacks column(s) {missing} (needed: {', '.join(FRAME_LABEL_COLUMNS)})")
    row = _row_namer(table, where)
    out = table.reset_index(drop=True).copy()
    clip_ids = []
    for position, value in enumerate(out["clip_id"]):
        if pd.isna(value) or not str(value).strip():
            raise LabelsError(f"{row(position)}: column 'clip_id' is empty; every row names the video it labels")
        clip_ids.append(str(value).strip())
    out["clip_id"] = clip_ids
    for column in ("first_frame", "last_frame"):
        out[column] = [_frame_number(value, column, row(position)) for position, value in enumerate(out[column])]
    patterns = []
    for position, value in enumerate(out["pattern"]):
        name = "" if pd.isna(value) else str(value).strip().lower()
        if name not in PATTERNS:
            raise LabelsError(f"{row(position)}: column 'pattern' has {str(value)!r}, an unknown pattern "
                              f"(known: {', '.join(PATTERNS)})")
        patterns.append(name)
    out["pattern"] = patterns
    backwards = np.flatnonzero(out["last_frame"].to_numpy() < out["first_frame"].to_numpy())
    if len(backwards):
        first = int(backwards[0])
        raise LabelsError(f"{row(first)}: column 'last_frame' is {out.at[first, 'last_frame']}, before first_frame "
                          f"{out.at[first, 'first_frame']}: a range runs from its first to its last frame")
    out = out.astype({"first_frame": np.int64, "last_frame": np.int64})
    out.attrs[_SOURCE] = where
    return out


def _frame_number(value, column: str, row: str) -> int:
    """A frame index: a whole number >= 0 (``12``, ``12.0``); anything else names its cell."""
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not np.isfinite(number) or number != int(number) or number < 0:
        what = "is empty" if not text else f"has {text!r}"
        raise LabelsError(f"{row}: column '{column}' {what}; frames are whole numbers from 0 (the video's first frame)")
    return int(number)


def check_against_videos(table: pd.DataFrame, video_frames: Mapping[str, int], known_ids: Iterable[str] | None = None,
                         ) -> None:
    """``LabelsError`` for the first row naming a video the labels table lacks (``known_ids``, when
    given) or a range past the end of its video (``video_frames``: frames of each video file; videos
    not in it, e.g. skipped as unreadable, are not checked)."""
    table = check_frame_labels(table)
    where = table.attrs.get(_SOURCE, "frame-level label table")
    row = _row_namer(table, where)
    known = None if known_ids is None else {str(clip_id) for clip_id in known_ids}
    for position, entry in enumerate(table.itertuples(index=False)):
        if known is not None and entry.clip_id not in known:
            raise LabelsError(f"{row(position)}: column 'clip_id' names {entry.clip_id!r}, which the labels table does "
                              "not have: fix the id or remove the row")
        frames = video_frames.get(entry.clip_id)
        if frames is None:
            continue
        for column in ("first_frame", "last_frame"):
            if getattr(entry, column) >= int(frames):
                raise LabelsError(f"{row(position)}: column '{column}' is {getattr(entry, column)}, past the end of "
                                  f"video {entry.clip_id!r} ({int(frames)} frames: 0..{int(frames) - 1}): frames "
                                  "count from 0; fix the range")


def frame_labels_from_truth(truth: pd.DataFrame) -> pd.DataFrame:
    """A long per-frame 0/1 table (clip_id, frame, one column per pattern) as a frame-level label
    table: one row (clip_id, first_frame, last_frame, pattern) per run of frames carrying a pattern."""
    rows = []
    for clip_id, frames in truth.sort_values(["clip_id", "frame"]).groupby("clip_id", sort=True):
        index = frames["frame"].to_numpy()
        for pattern in PATTERNS:
            on = frames[pattern].to_numpy() > 0
            edges = np.flatnonzero(np.diff(np.concatenate([[False], on, [False]]).astype(np.int8)))
            for first, after in zip(edges[::2], edges[1::2]):
                rows.append((str(clip_id), int(index[first]), int(index[after - 1]), pattern))
    return pd.DataFrame(rows, columns=list(FRAME_LABEL_COLUMNS))
