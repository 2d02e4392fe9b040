"""A user's own dataset: a labels CSV (the contract of ``lusv.data.labels``) next to the clips.

An optional ``frame_labels.csv`` beside the labels CSV (clip_id, first_frame, last_frame, pattern;
frames of the video files, from 0, inclusive) gives each window its own labels under the windows
clip policy (``lusv.data.windows``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from lusv.data.labels import read_labels

log = logging.getLogger(__name__)

DEFAULT_CSV_NAME = "labels.csv"
FRAME_LABELS_NAME = "frame_labels.csv"


def load_folder(csv_path: str | os.PathLike, *, dayfirst: bool = False) -> pd.DataFrame:
    """Read and validate the labels CSV at ``csv_path`` (or ``csv_path/labels.csv`` for a folder).

    Relative clip paths are resolved against the CSV's folder. Missing clip files are only
    logged here: building the clip cache skips them and counts them in its report.
    """
    csv_path = Path(csv_path)
    if csv_path.is_dir():
        csv_path = csv_path / DEFAULT_CSV_NAME
    labels = read_labels(csv_path, dayfirst=dayfirst)
    missing = [path for path in labels["path"] if not Path(path).is_file()]
    if missing:
        log.warning("%s: %d of %d clip file(s) do not exist (e.g. %s); they will be skipped",
                    csv_path, len(missing), len(labels), missing[0])
    return labels


def frame_labels(csv_path: str | os.PathLike) -> pd.DataFrame | None:
    """The frame-level label table beside the labels CSV (``FRAME_LABELS_NAME``), or None; checked
    as the labels are (``lusv.data.frame_labels``: one line naming file, line and column), every
    clip_id against the labels CSV."""
    from lusv.data.frame_labels import check_against_videos, read_frame_labels

    csv_path = Path(csv_path)
    folder = csv_path if csv_path.is_dir() else csv_path.parent
    path = folder / FRAME_LABELS_NAME
    if not path.is_file():
        return None
    table = read_frame_labels(path)
    labels_csv = csv_path / DEFAULT_CSV_NAME if csv_path.is_dir() else csv_path
    check_against_videos(table, {}, known_ids=read_labels(labels_csv)["clip_id"])
    return table
