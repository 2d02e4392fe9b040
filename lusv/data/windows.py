"""The paper's clip policy: every video cut into windows of T consecutive frames.

Lee et al. (MIDL 2025) cut each video into 1-second windows of 30 frames that overlap by 6
(stride 24); training, thresholds and AUCs are per window. Under ``clip_policy="windows"`` the
clip cache holds each video once, all its frames (or resampled to ``target_fps``) at S x S, and a
window is a slice of that array (a view of the loaded entry, never a copy on disk).

Rules (one place, used by training, ``lusv.study.prepare`` and the tests):

* **Starts** (``window_starts``): windows start at 0, stride, 2 * stride, ... (stride = T -
  overlap) while a whole window fits. **Tail**: when frames remain after the last such window,
  one more window is aligned to the video's end (start = N - T); it shares more than ``overlap``
  frames with its predecessor. Why: every frame, and so every annotated pattern near the end of a
  video, is in some window, and every window of a video at least T frames long is a real T-frame
  clip (no padding). The extra window only adds a correlated window of the same video, which
  always stays in that video's fold.
* **Short videos**: a video of N < T frames gives one window (start 0, ``length`` N), zero-padded
  to T as under ``whole``; models mask the padding by ``length``.
* **Ids**: window ``i`` (from 0) of video ``v`` is ``f"{v}_w{i:03d}"``; ``video_id`` keeps ``v``.
* **Labels** (``window_table``): with a frame-level label table (clip_id, first_frame,
  last_frame, pattern; frames of the cached video, inclusive ranges), a pattern is present in a
  window (1) when any of the window's frames carries it, else absent (0); a pattern the video
  leaves unlabelled (NaN) stays NaN. Videos without rows in that table (or no table) give every
  window the video's labels. The table is checked first (``lusv.data.frame_labels``): a range past
  its video's end is refused in one line naming file, line and column, never read as "absent".
* **Folds**: windows inherit the fold of their video, folds are made per patient, so the windows
  of one video and of one patient are always in the same fold.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from lusv.data.cache import ClipCache
from lusv.data.frame_labels import (  # noqa: F401 - FRAME_LABEL_COLUMNS, frame_labels_from_truth: named here too
    check_against_videos,
    check_frame_labels,
    FRAME_LABEL_COLUMNS,
    frame_labels_from_truth,
)
from lusv.data.patterns import PATTERNS
from lusv.data.video import resample_indices
from lusv.errors import CacheError, ConfigError
from lusv.infra.io import write_csv

log = logging.getLogger(__name__)

WINDOW_COLUMNS = ("clip_id", "video_id", "patient_id", "start", "length", *PATTERNS)


def clip_cache_for(p: Any, root: str | Path) -> Any:
    """The clip cache under ``root`` for ``RunParams`` ``p``: clips of T frames (``whole``), or whole
    videos, resampled to ``p.target_fps`` when set (``windows``)."""
    if p.clip_policy == "windows":
        return ClipCache(root, None, p.image_size, target_fps=p.target_fps)
    return ClipCache(root, p.num_frames, p.image_size)


def window_id(video_id: str, index: int) -> str:
    """The clip id of window ``index`` (from 0) of ``video_id``."""
    return f"{video_id}_w{index:03d}"


def window_starts(video_frames: int, window: int, overlap: int) -> list[int]:
    """First frames of the windows of a video of ``video_frames`` frames (see the module rules)."""
    if window < 1 or not 0 <= overlap < window:
        raise ConfigError(f"windows need T >= 1 and 0 <= overlap < T (got T={window}, overlap={overlap})")
    if video_frames < 1:
        raise ConfigError(f"a video needs at least one frame to be cut into windows (got {video_frames})")
    if video_frames <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, video_frames - window + 1, stride))
    if starts[-1] + window < video_frames:  # the tail: one more window aligned to the end
        starts.append(video_frames - window)
    return starts


def window_table(videos: pd.DataFrame, video_frames: dict[str, int], window: int, overlap: int,
                 frame_labels: pd.DataFrame | None = None,
                 source_index: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per window (``WINDOW_COLUMNS``, plus the video's other columns such as fold).

    ``videos``: one row per video (clip_id, patient_id, the pattern columns, ...);
    ``video_frames``: cached frames per video id (videos not in it are left out: not cached).
    ``source_index``: for videos resampled to another frame rate, the source frame of each
    cached frame (``lusv.data.video.resample_indices``); the frame labels name source frames, so a
    window then covers the source frames from its first to its last kept one.
    """
    source_index = source_index or {}
    spans = _frame_spans(frame_labels)
    _warn_on_disagreement(videos, spans)
    rows = []
    extra = [c for c in videos.columns if c not in WINDOW_COLUMNS]
    for video in videos.to_dict("records"):
        video_id = str(video["clip_id"])
        if video_id not in video_frames:
            continue
        frames = int(video_frames[video_id])
        for index, start in enumerate(window_starts(frames, window, overlap)):
            length = min(window, frames - start)
            first, last = start, start + length - 1
            if video_id in source_index:
                first, last = int(source_index[video_id][first]), int(source_index[video_id][last])
            labels = _window_labels(video, spans.get(video_id), first, last)
            rows.append({"clip_id": window_id(video_id, index), "video_id": video_id,
                         "patient_id": str(video["patient_id"]), "start": start, "length": length, **labels,
                         **{c: video[c] for c in extra}})
    return pd.DataFrame(rows, columns=[*WINDOW_COLUMNS, *extra])


def _frame_spans(frame_labels: pd.DataFrame | None) -> dict[str, list[tuple[int, int, str]]]:
    if frame_labels is None:
        return {}
    spans: dict[str, list[tuple[int, int, str]]] = {}
    for row in check_frame_labels(frame_labels).itertuples(index=False):
        spans.setdefault(row.clip_id, []).append((row.first_frame, row.last_frame, row.pattern))
    return spans


def _warn_on_disagreement(videos: pd.DataFrame, spans: dict[str, list[tuple[int, int, str]]]) -> None:
    """Log videos whose label and frame-level labels disagree on a pattern (labelled present with no
    frame carrying it, or absent with frames carrying it): their windows follow the frame labels."""
    disagree = []
    for video in videos.to_dict("records"):
        if str(video["clip_id"]) not in spans:
            continue
        carried = {pattern for _, _, pattern in spans[str(video["clip_id"])]}
        disagree += [f"{video['clip_id']}/{p}" for p in PATTERNS
                     if not pd.isna(video[p]) and bool(video[p]) != (p in carried)]
    if disagree:
        log.warning("%d video label(s) disagree with the frame-level labels (windows follow the frame labels): %s",
                    len(disagree), ", ".join(disagree[:5]) + (" ..." if len(disagree) > 5 else ""))


def _window_labels(video: dict, spans: list[tuple[int, int, str]] | None, start: int, last: int) -> dict:
    """The rule of the module docstring: any frame of ``start..last`` carrying a pattern marks it."""
    if spans is None:
        return {pattern: video[pattern] for pattern in PATTERNS}
    present = {pattern for first, final, pattern in spans if first <= last and final >= start}
    return {pattern: (np.nan if pd.isna(video[pattern]) else float(pattern in present)) for pattern in PATTERNS}


def windows_of_cache(videos_cache: Any, videos: pd.DataFrame, window: int, overlap: int,
                     frame_labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """``window_table`` of the videos in a whole-video ``ClipCache`` (its manifest gives each
    video's cached frames and, when it resampled them, their source frames)."""
    manifest = videos_cache.manifest
    frames = dict(zip(manifest["clip_id"].astype(str), manifest["length"].astype(int)))
    if frame_labels is not None:  # a range past its video's end would mark no window: refuse it, naming the row
        source_frames = dict(zip(manifest["clip_id"].astype(str), manifest["source_frames"].astype(int)))
        check_against_videos(frame_labels, source_frames)
    source_index = {}
    if getattr(videos_cache, "target_fps", None) is not None:
        for row in manifest.itertuples(index=False):
            fps = None if pd.isna(row.fps) else float(row.fps)
            source_index[str(row.clip_id)] = resample_indices(int(row.source_frames), fps, videos_cache.target_fps)
    return window_table(videos, frames, window, overlap, frame_labels, source_index)


def window_summary(windows: pd.DataFrame, videos: pd.DataFrame) -> pd.DataFrame:
    """Videos vs their windows: how many, how many patients, windows per video and each
    pattern's share of positives (labelled rows only), one row each."""
    rows = []
    for unit, table in (("videos", videos), ("windows", windows)):
        row = {"unit": unit, "count": len(table), "patients": table["patient_id"].nunique(),
               "per_video": len(table) / max(len(videos), 1)}
        row.update({pattern: float(table[pattern].mean()) for pattern in PATTERNS})
        rows.append(row)
    return pd.DataFrame(rows)


def expand_to_windows(table: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    """The windows of the videos of a role table (rows of videos, with fold), in video order."""
    keep = windows[windows["video_id"].isin(set(table["clip_id"].astype(str)))]
    order = {video_id: position for position, video_id in enumerate(table["clip_id"].astype(str))}
    keep = keep.assign(_order=keep["video_id"].map(order)).sort_values(["_order", "start"], kind="stable")
    fold_of = table.set_index(table["clip_id"].astype(str))["fold"] if "fold" in table else None
    out = keep.drop(columns="_order").reset_index(drop=True)
    if fold_of is not None:
        out["fold"] = out["video_id"].map(fold_of).to_numpy()
    return out


class WindowedClips:
    """Windows of a whole-video clip cache, shaped like ``lusv.data.cache.ClipCache`` for the datasets.

    ``videos`` is a ``ClipCache`` in whole-video mode (``num_frames=None``); ``windows`` a table
    with clip_id (window id), video_id, start and length. ``load(window_id)`` returns uint8
    (T, S, S, 1) and the window's real frames: a slice of the loaded video (zero-padded only for
    a video shorter than T).
    """

    def __init__(self, videos: Any, windows: pd.DataFrame, num_frames: int):
        self.videos = videos
        self.num_frames = int(num_frames)
        self.image_size = videos.image_size
        self.dir = videos.dir
        self.windows = windows.reset_index(drop=True)
        self._where = {str(r.clip_id): (str(r.video_id), int(r.start), int(r.length))
                       for r in self.windows.itertuples(index=False)}

    def __contains__(self, window: object) -> bool:
        where = self._where.get(str(window))
        return where is not None and where[0] in self.videos

    def __len__(self) -> int:
        return len(self._where)

    def locate(self, window: str) -> tuple[str, int, int]:
        """(video id, first frame, real frames) of a window; CacheError for an unknown id."""
        try:
            return self._where[str(window)]
        except KeyError:
            raise CacheError(f"window '{window}' is not in the windows table of {self.dir}") from None

    def load(self, window: str) -> tuple[np.ndarray, int]:
        video_id, start, length = self.locate(window)
        video, _ = self.videos.load(video_id)
        return pad_window(video[start:start + length], self.num_frames), length

    def load_many(self, windows: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """Stacked windows uint8 (N, T, S, S, 1) and lengths (N,), in the order given."""
        windows = list(windows)
        out = np.empty((len(windows), self.num_frames, self.image_size, self.image_size, 1), dtype=np.uint8)
        lengths = np.empty(len(windows), dtype=np.int64)
        for position, window in enumerate(windows):
            out[position], lengths[position] = self.load(window)
        return out, lengths


class WindowedFeatures:
    """Windows of a whole-video ``lusv.data.features.FeatureCache``: per-frame features of each video
    computed once, a window's (T, F) rows sliced from them; padding rows (short videos) are the
    encoder's features of a black frame, as the full model sees them."""

    def __init__(self, features: Any, clips: WindowedClips):
        self.features = features
        self.clips = clips
        self.num_frames = clips.num_frames
        self.feature_dim = features.feature_dim
        self.dtype = features.dtype
        self.dir = features.dir

    def view_names(self, views: int = 0) -> list[str]:
        return self.features.view_names(views)

    def build(self, windows: Iterable[str], views: int = 0, progress: bool = True):
        """Features of the videos of ``windows`` (``FeatureCache.build``; its report has one row per video)."""
        videos = list(dict.fromkeys(self.clips.locate(window)[0] for window in windows))
        return self.features.build(videos, views=views, progress=progress)

    def load(self, window: str, view: str = "plain") -> tuple[np.ndarray, int]:
        video_id, start, length = self.clips.locate(window)
        rows, _ = self.features.load(video_id, view)
        rows = rows[start:start + length]
        if length < self.num_frames:
            padding = np.broadcast_to(self.features.padding_features(), (self.num_frames - length, self.feature_dim))
            rows = np.concatenate([rows, padding.astype(rows.dtype)])
        return rows, length

    def load_many(self, windows: Sequence[str], views: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        views = list(views) if views is not None else ["plain"] * len(windows)
        out = np.empty((len(windows), self.num_frames, self.feature_dim), dtype=self.dtype)
        lengths = np.empty(len(windows), dtype=np.int64)
        for position, (window, view) in enumerate(zip(windows, views)):
            out[position], lengths[position] = self.load(window, view)
        return out, lengths


def pad_window(frames: np.ndarray, num_frames: int) -> np.ndarray:
    """``frames`` (n <= T, ...) as T frames: itself when n == T (a view), else zero-padded (a copy)."""
    if len(frames) == num_frames:
        return frames
    out = np.zeros((num_frames, *frames.shape[1:]), dtype=frames.dtype)
    out[:len(frames)] = frames
    return out


def write_windows(prepare_dir: Path, videos_cache: Any, videos: pd.DataFrame, window: int, overlap: int,
                  frame_labels: pd.DataFrame | None) -> tuple[Path, Path | None]:
    """Write a prepared study's ``windows.csv`` (``WINDOW_COLUMNS``, every usable video) and, when
    the dataset has one, its ``frame_labels.csv``; returns their paths (the second may be None)."""
    frame_labels_csv = None
    table = windows_of_cache(videos_cache, videos, window, overlap, frame_labels)  # checks them against the videos
    if frame_labels is not None:
        frame_labels_csv = write_csv(Path(prepare_dir) / "frame_labels.csv",
                                     check_frame_labels(frame_labels)[list(FRAME_LABEL_COLUMNS)])
    return write_csv(Path(prepare_dir) / "windows.csv", table[list(WINDOW_COLUMNS)]), frame_labels_csv
