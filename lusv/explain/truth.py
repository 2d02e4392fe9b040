"""What a prepared study knows beyond the labels: per-frame truth, drawn regions, example frames.

The study steps the notebooks call through ``lusv.study`` (re-exported there) for data whose
source has a per-frame truth (the synthetic generator). Every array is aligned with what the
models saw: the T frames of a clip under ``clip_policy="whole"``, or of a window under
``"windows"`` (the window's slice of its whole video, zero-padded after ``length``).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np

from lusv.data.sources import get_source
from lusv.data.video import resample_indices
from lusv.data.windows import pad_window, WindowedClips
from lusv.report.tables import example_frames_figure as figure


def frame_truth(prepared, clip_ids: list[str]):
    """Per-frame pattern presence (N, T, P) aligned with the cache, or None for data without it."""
    source = get_source(prepared.data)
    if not source.has_frame_truth:
        return None
    if prepared.clip_policy != "windows":
        return source.module.frame_truth(prepared.data_path, clip_ids, prepared.num_frames)
    clips = prepared.cache()
    source_index = _source_index(clips)

    def video_truth(video_id: str) -> np.ndarray:
        truth = source.module.frame_truth(prepared.data_path, [video_id], None)[0]
        return truth[source_index(video_id, len(truth))]

    return windowed(video_truth, clips, clip_ids)


def region_truth(prepared):
    """``clip_ids -> (N, T, 4, S, S)`` masks of where each pattern is drawn, in the cache's
    geometry (``lusv.data.sources.synthetic.regions``), or None for data without such a truth."""
    region_masks = getattr(get_source(prepared.data).module, "region_masks", None)
    if region_masks is None:
        return None
    if prepared.clip_policy != "windows":
        return partial(region_masks, prepared.data_path, num_frames=prepared.num_frames, image_size=prepared.image_size)
    clips = prepared.cache()
    frames = dict(zip(clips.videos.manifest["clip_id"].astype(str), clips.videos.manifest["length"].astype(int)))

    def video_masks(video_id: str) -> np.ndarray:
        # all cached frames of the video: the crop is then found on the same frames as the cache's
        return region_masks(prepared.data_path, [video_id], num_frames=frames[video_id],
                            image_size=prepared.image_size)[0]

    return partial(windowed, video_masks, clips)


def windowed(per_video: Callable[[str], np.ndarray], clips: WindowedClips, window_ids: list[str]) -> np.ndarray:
    """Stack (N, T, ...) of the windows ``window_ids`` from ``per_video(video_id)`` -> (frames of
    the cached video, ...); each video is computed once."""
    done: dict[str, np.ndarray] = {}
    out = []
    for window in window_ids:
        video_id, start, length = clips.locate(window)
        if video_id not in done:
            done[video_id] = per_video(video_id)
        out.append(pad_window(done[video_id][start:start + length], clips.num_frames))
    return np.stack(out)


def _source_index(clips: WindowedClips) -> Callable[[str, int], np.ndarray]:
    """(video id, source frames) -> the source frame of each cached frame (all of them unless the
    cache resampled the video to another frame rate)."""
    manifest = clips.videos.manifest.set_index("clip_id")

    def index(video_id: str, source_frames: int) -> np.ndarray:
        fps = manifest.loc[video_id, "fps"]
        return resample_indices(source_frames, None if fps != fps else float(fps), clips.videos.target_fps)

    return index


def example_frames_figure(prepared):
    """Example frames per pattern: for a source with per-frame truth, its own video frames with
    the frames where each pattern is present marked; otherwise prepared frames from the cache
    (under the windows policy, the first window of each video)."""
    source = get_source(prepared.data)
    if source.has_frame_truth:
        labels, load_frames, truth = source.module.example_frames(prepared.data_path)
        return figure(labels, load_frames, truth, title=source.module.EXAMPLE_FRAMES_TITLE)
    cache = prepared.cache()

    def load_frames(clip_id: str):
        if isinstance(cache, WindowedClips):
            clip, length = cache.videos.load(clip_id)
            return np.asarray(clip[..., 0]), length
        clip, length = cache.load(clip_id)
        return clip[..., 0], length

    return figure(prepared.labels(), load_frames)
