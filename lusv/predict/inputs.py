"""What ``lusv predict`` is asked to score: video files, folders searched recursively, labels CSVs.

``collect_videos(inputs)`` turns the command line's inputs into one ``VideoItem`` per file, in
order, each path once:

* a **file** with a video suffix (``lusv.data.video.VIDEO_SUFFIXES``: mp4, avi, mov, mpeg, gif,
  mkv, ..., DICOM) or DICOM magic bytes is a video; a ``.csv`` file is a labels CSV;
* a **folder** is searched recursively, in sorted order: every video file as above; any other
  file becomes an item with ``skip`` set ("not a video format lusv reads (.txt)"), so it is a
  row of the output with its reason, never silently dropped. Hidden files (``.name``) are not
  data and are left out;
* a **labels CSV** (a ``path`` column, paths relative to the CSV's folder; optional ``clip_id``,
  ``patient_id`` and the four pattern columns, which the output keeps) names its videos;
* a path that does not exist is an item whose reading will fail with its reason (a row too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lusv.data.labels import FALSE_TOKENS, MISSING_TOKENS, TRUE_TOKENS
from lusv.data.patterns import PATTERNS
from lusv.data.video import is_dicom, VIDEO_SUFFIXES
from lusv.errors import LabelsError


@dataclass
class VideoItem:
    clip_id: str  # the name in the output: the CSV's clip_id, else the path below the folder given, else the file name
    path: str  # absolute
    patient_id: str = ""
    labels: dict[str, float] = field(default_factory=dict)  # from a labels CSV
    skip: str = ""  # why this file is not read at all (not a video format)


def collect_videos(inputs: list[str | os.PathLike]) -> list[VideoItem]:
    """One item per video file named by ``inputs`` (see the module docstring), each path once."""
    items, seen = [], set()
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            found = _search(path)
        elif path.suffix.lower() == ".csv" and path.is_file():
            found = _from_labels_csv(path)
        else:
            found = [VideoItem(path.name, str(path.resolve()))]
        for item in found:
            if item.path not in seen:
                seen.add(item.path)
                items.append(item)
    return items


def _search(folder: Path) -> list[VideoItem]:
    items = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            item = VideoItem(path.relative_to(folder).as_posix(), str(path.resolve()))
            item.skip = _not_a_video(path)
            items.append(item)
    return items


def _not_a_video(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return ""
    try:
        if is_dicom(path):
            return ""
    except OSError:
        return ""  # unreadable: reading it will say why
    return f"not a video format lusv reads ({suffix or 'no suffix, not DICOM'})"


def _from_labels_csv(path: Path) -> list[VideoItem]:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise LabelsError(f"labels CSV {path} cannot be read ({exc})") from None
    if "path" not in table.columns:
        raise LabelsError(f"labels CSV {path} has no 'path' column (columns: {', '.join(table.columns)}): "
                          "give each video's path, relative to the CSV's folder")
    items = []
    for line, row in enumerate(table.to_dict("records"), start=2):
        if not row["path"].strip():
            raise LabelsError(f"labels CSV {path}, line {line}: empty path")
        video = Path(row["path"]).expanduser()
        video = video if video.is_absolute() else path.parent / video
        labels = {p: _label(row[p], path, line, p) for p in PATTERNS if p in row}
        items.append(VideoItem(row.get("clip_id") or Path(row["path"]).name, str(video.resolve()),
                               row.get("patient_id", ""), labels))
    return items


def _label(value: str, path: Path, line: int, pattern: str) -> float:
    text = value.strip().lower()
    if text in MISSING_TOKENS:
        return float("nan")
    if text in TRUE_TOKENS:
        return 1.0
    if text in FALSE_TOKENS:
        return 0.0
    raise LabelsError(f"labels CSV {path}, line {line}, column {pattern}: {value!r} is not 0/1 (empty = not labelled)")
