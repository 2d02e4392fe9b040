"""Write grayscale frames as an .mp4: the synthetic dataset's videos and the tests' clips.

H.264 (libx264) where the PyAV build has it, else MPEG-4 part 2; yuv420p, written atomically.
The bytes depend only on the frames: the encoder's input planes are fully initialised
(``_encoder_frame``), so the same frames give the same file in any process.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lusv.errors import VideoError
from lusv.infra.io import atomic_path


WRITE_FPS = 12  # frame rate of written clips unless told otherwise
# Constant quantiser, not crf: x264's crf rate control (macroblock tree over the lookahead) gave
# other bytes for the same frames depending on what the process had allocated before (49 of 150
# quick clips differed between two runs); at a fixed qp the bytes depend on the frames alone.
_CODEC_CHOICES = (("h264", {"qp": "18", "preset": "veryfast", "threads": "1"}), ("mpeg4", {"qscale": "2"}))


def _video_codec() -> tuple[str, dict[str, str]]:
    """The first encoder this PyAV build offers: H.264 (libx264) if present, else MPEG-4 part 2."""
    import av

    for name, options in _CODEC_CHOICES:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # PyAV raises different types across versions for a missing codec
            continue
        return name, options
    raise VideoError("this PyAV build has neither an H.264 nor an MPEG-4 encoder: reinstall the 'av' wheel")


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = WRITE_FPS) -> Path:
    """Write grayscale frames (T, H, W) uint8 as an .mp4 (yuv420p) atomically; H and W must be even."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise VideoError(f"cannot write {path}: expected uint8 frames (T, H, W), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise VideoError(f"cannot write {path}: yuv420p needs even frame sizes, got {frames.shape[1:]}")
    codec, options = _video_codec()
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=fps, options=options)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            for frame in frames:
                container.mux(stream.encode(_encoder_frame(frame)))
            container.mux(stream.encode(None))  # flush delayed frames
    return Path(path)


def _encoder_frame(gray: np.ndarray):
    """The yuv420p frame x264 encodes for a gray frame, with every byte of its planes set.

    libx264 reads the padding at the end of each plane row (the line size exceeds the width);
    left as allocated it holds whatever the memory held before, so the same frames gave other
    bytes in a process that had freed other buffers first (a test session, a notebook after
    training). Zero padding is what a fresh process's memory holds, so files stay as before.
    """
    import av

    frame = av.VideoFrame.from_ndarray(gray, format="gray").reformat(format="yuv420p")
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        padded = np.zeros_like(rows)
        padded[:, : plane.width] = rows[:, : plane.width]
        plane.update(padded)
    return frame
