"""Tiny test videos written with PyAV, shared by the data tests (never a download)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd

# container suffix -> (codec, pixel format stored in the file)
CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".mpeg": ("mpeg2video", "yuv420p"),
    ".gif": ("gif", "rgb8"),  # 3-3-2 bit colour: coarse, fine for checks on structure
}
# Lossless codecs store the input's own pixel format (gray, rgb24, rgba): pass codec="png".
LOSSLESS = ("png",)


def write_test_video(
    path, frames: np.ndarray, fps: int = 10, input_format: str = "rgb24", codec: str | None = None
) -> Path:
    """Write uint8 frames ``(N, H, W, 3)`` (or ``(N, H, W)`` gray / ``(N, H, W, 4)`` RGBA with
    the matching ``input_format``) to ``path``.

    The codec follows the suffix (see ``CODECS``) unless ``codec`` names one; with a
    lossless codec (``codec="png"`` in .avi or .mov) the file keeps ``input_format``.
    """
    path = Path(path)
    if codec in LOSSLESS:
        pixel_format = None
    else:
        codec, pixel_format = CODECS[path.suffix.lower()]
    frames = np.asarray(frames, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pixel_format or input_format
        stream.time_base = Fraction(1, fps)
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}  # near-lossless keeps value checks tight
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format=input_format)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_frames(num_frames: int = 10, height: int = 32, width: int = 48, seed: int = 0) -> np.ndarray:
    """RGB frames: a gray 'sector' (rows 4..28, cols 8..40) whose texture changes per frame,
    inside a black border, so crops and frame order are both checkable."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    top, bottom, left, right = 4, height - 4, 8, width - 8
    for index in range(num_frames):
        level = 60 + (150 * index) // max(num_frames - 1, 1)  # brightness encodes the frame index
        texture = rng.integers(-10, 11, size=(bottom - top, right - left, 1))
        frames[index, top:bottom, left:right] = np.clip(level + texture, 0, 255)
    return frames


def tiny_clip_table(folder: Path, files: dict[str, int]) -> pd.DataFrame:
    """Write one small test video per ``{file name: frame count}`` under ``folder`` (seeds 1, 2, ...)
    and return their ``clip_id, path`` table, clip ids being the file names without extension."""
    paths = [write_test_video(Path(folder) / name, make_frames(frames, seed=seed))
             for seed, (name, frames) in enumerate(files.items(), start=1)]
    return pd.DataFrame({"clip_id": [p.stem for p in paths], "path": [str(p) for p in paths]})
