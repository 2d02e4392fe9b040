"""Decode lung-ultrasound clips to frames and prepare them for the clip cache.

Decoding goes through PyAV (mp4, avi, mov, mpeg, gif and whatever else FFmpeg reads);
DICOM files (multi-frame ultrasound) go through pydicom when it is installed. Every
frame is converted with ``frame.to_ndarray(format="rgb24")`` so grayscale, RGBA (GIF)
and palette sources all come out as uint8 RGB. Each file is decoded once; ``read_clip``
with ``num_frames`` converts and holds only the frames the short-clip policy keeps. A clip
that cannot be used raises ``VideoError`` naming the file, with a short ``reason`` ("missing
file", "too few frames", ...) that the clip cache's ingest report counts.

Preparing a clip for the model (``prepare_clip``) follows the team contract:

1. Resample to ``T`` frames: clips with ``N >= T`` frames keep the ``T`` frames at
   ``np.linspace(0, N - 1, T)`` (rounded); clips with ``2 <= N < T`` keep all ``N`` frames
   and are zero-padded to ``T`` (``length = N``); clips with fewer than 2 frames are refused.
2. Convert to grayscale (ITU-R 601 luma, torchvision's ``rgb_to_grayscale``).
3. Crop to the ultrasound region (``ultrasound_box``): threshold the per-pixel maximum
   over the kept frames at ``CROP_THRESHOLD`` (so black borders go), keep the connected
   blobs of that mask that are at least ``CROP_MIN_BLOB_FRACTION`` of the largest blob
   (so burnt-in text, depth markers and logos next to the sector go), and take the
   bounding box of what remains. An all-dark clip keeps its whole frame.
4. Pad the crop with black to a centred square (the sector's aspect ratio is kept) and
   resize it to ``S x S`` with ``torch.nn.functional.interpolate`` (bilinear, antialias),
   all frames in one call.

Writing videos (the synthetic dataset, the tests' clips) is ``lusv.data.video_writer``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lusv.errors import VideoError
from lusv.infra.io import atomic_path

log = logging.getLogger(__name__)

# A clip needs motion to be a video: one frame is a still image (contract: skip it).
MIN_FRAMES = 2

# Gray level (0-255) above which a pixel counts as ultrasound content for the crop.
# Low enough to keep the dim far field of the sector, high enough to drop the
# compression noise that lossy codecs leave in "black" borders.
CROP_THRESHOLD = 16

# Blobs of the content mask smaller than this fraction of the largest blob are treated
# as annotations (text, depth scale, logos) and do not widen the crop.
CROP_MIN_BLOB_FRACTION = 0.1

# Bumped whenever the preparation changes its output, so the cache rebuilds stale entries.
PREPARATION_VERSION = 1

DICOM_SUFFIXES = (".dcm", ".dicom")
# The file names a folder search (``lusv predict FOLDER``) takes for videos: what PyAV decodes in
# practice, and DICOM (which may also come without a suffix: ``is_dicom`` reads its magic bytes).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".avi", ".mov", ".mpeg", ".mpg", ".gif", ".mkv", ".webm", ".wmv", ".ogv",
                  *DICOM_SUFFIXES)


@dataclass(frozen=True)
class DecodedClip:
    """Frames of one clip plus what the cache manifest records about its source.

    ``frames`` holds either all decoded frames or, when ``read_clip`` was given
    ``num_frames``, only the frames the short-clip policy keeps (in order).
    """

    frames: np.ndarray  # (n, H, W, 3) uint8 RGB
    source_frames: int  # frames in the source file
    fps: float | None  # None when the container does not say
    height: int
    width: int


def sample_indices(num_source_frames: int, num_frames: int) -> np.ndarray:
    """Indices of the source frames that the short-clip policy keeps (see module doc)."""
    if num_source_frames >= num_frames:
        return np.linspace(0, num_source_frames - 1, num_frames).round().astype(np.int64)
    return np.arange(num_source_frames, dtype=np.int64)


def resample_indices(num_source_frames: int, fps: float | None, target_fps: float | None) -> np.ndarray:
    """Source frames kept when a video of ``fps`` is resampled to ``target_fps``: for output frame
    k (at time k / target_fps) the last source frame shown at that time, floor(k * fps / target_fps).
    Every frame when either rate is unknown (None) or the rates are equal."""
    if not fps or not target_fps or abs(fps - target_fps) < 1e-9:
        return np.arange(num_source_frames, dtype=np.int64)
    count = max(1, int(np.floor(num_source_frames * target_fps / fps + 1e-9)))
    picks = np.floor(np.arange(count) * (fps / target_fps) + 1e-9).astype(np.int64)
    return np.minimum(picks, num_source_frames - 1)


def read_frames(path: str | os.PathLike, min_frames: int = MIN_FRAMES) -> np.ndarray:
    """Decode every frame of a clip to uint8 RGB ``(N, H, W, 3)``.

    Raises ``VideoError`` naming the file when it is missing, empty, not a video,
    corrupt, or has fewer than ``min_frames`` frames.
    """
    return read_clip(path, num_frames=None, min_frames=min_frames).frames


def read_clip(
    path: str | os.PathLike, num_frames: int | None = None, min_frames: int = MIN_FRAMES
) -> DecodedClip:
    """Decode a clip; with ``num_frames`` keep only the frames the short-clip policy samples.

    Every packet still has to be decoded (inter-coded video), but with ``num_frames`` the
    frames stream through: only the kept ones are converted to RGB and held, so memory
    stays at ``num_frames`` frames however long the clip. Which frames to keep is planned
    from a packet count (a demux pass, no decoding); should the decoder output a different
    number of frames, the clip is decoded once more with the true count.
    """
    path = Path(path)
    if num_frames is not None and num_frames < 1:
        raise VideoError(f"clip {path}: num_frames must be at least 1 (got {num_frames})")
    if not path.exists():
        raise VideoError(f"clip {path} does not exist: check the path in the labels table", reason="missing file")
    if not path.is_file():
        raise VideoError(
            f"clip {path} is not a file (a folder?): point the labels table at a video file",
            reason="not a file",
        )
    if path.stat().st_size == 0:
        raise VideoError(f"clip {path} is an empty (zero-byte) file: re-export or re-copy it", reason="empty file")
    try:
        is_dicom = _is_dicom(path)
    except OSError as exc:
        raise VideoError(
            f"clip {path} cannot be read ({exc}): check its permissions", reason="unreadable file"
        ) from None
    clip = _read_dicom(path, num_frames) if is_dicom else _read_with_pyav(path, num_frames)
    if clip.source_frames < min_frames:
        raise VideoError(
            f"clip {path} has {clip.source_frames} frame(s); a video needs at least {min_frames}: "
            "it is a still image, remove it from the labels table",
            reason="too few frames",
        )
    return clip


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether a file is DICOM: by its suffix, or the "DICM" magic of a Part 10 file (OSError when unreadable)."""
    return _is_dicom(Path(path))


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    # DICOM files often have no suffix; Part 10 files carry "DICM" after a 128-byte preamble.
    with open(path, "rb") as handle:
        head = handle.read(132)
    return head[128:132] == b"DICM"


def _read_with_pyav(path: Path, num_frames: int | None) -> DecodedClip:
    import av

    try:
        if num_frames is None:
            frames, count, fps = _decode(path, keep=None)
        else:
            # Plan the kept frames from the packet count (a cheap demux, no decoding) so that
            # frames stream through the decoder and only the kept ones are held and converted.
            planned = _count_packets(path)
            frames, count, fps = _decode(path, keep=sample_indices(planned, num_frames))
            if count != planned:  # the container misled the count: plan again on the true count
                frames, count, fps = _decode(path, keep=sample_indices(count, num_frames))
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError, MemoryError) as exc:
        raise VideoError(
            f"clip {path} cannot be decoded ({type(exc).__name__}: {exc}): the file is corrupt, "
            "truncated or not a video; re-export it or remove it from the labels table",
            reason="corrupt or not a video",
        ) from None
    if count == 0:
        raise VideoError(f"clip {path} decodes to 0 frames: the file is empty or corrupt", reason="too few frames")
    if frames is None:  # a second decode gave yet another frame count: the stream is not stable
        raise VideoError(
            f"clip {path} decodes to a different number of frames each time: the file is damaged; "
            "re-export it or remove it from the labels table",
            reason="corrupt or not a video",
        )
    return DecodedClip(frames, count, fps, frames.shape[1], frames.shape[2])


def _open_video(path: Path):
    import av

    container = av.open(str(path))
    if not container.streams.video:
        container.close()
        raise VideoError(
            f"clip {path} has no video stream (audio or data only?): not a video", reason="no video stream"
        )
    return container, container.streams.video[0]


def _count_packets(path: Path) -> int:
    """Frames the decoder will output, from packets alone: an edit list's leading packets are
    flagged "discard" (decoded as references, never output), so they do not count."""
    container, stream = _open_video(path)
    with container:
        return sum(1 for packet in container.demux(stream) if packet.size > 0 and not packet.is_discard)


def _decode(path: Path, keep: np.ndarray | None) -> tuple[np.ndarray | None, int, float | None]:
    """Decode every frame; convert to RGB the frames at ``keep`` (all when None), in ``keep``'s order."""
    container, stream = _open_video(path)
    with container:
        stream.thread_type = "AUTO"  # frame+slice threads: decoding dominates ingestion time
        fps = float(stream.average_rate) if stream.average_rate else None
        wanted = None if keep is None else set(keep.tolist())
        converted: dict[int, np.ndarray] = {}
        count = 0
        for count, frame in enumerate(container.decode(stream), start=1):
            if wanted is None or count - 1 in wanted:
                converted[count - 1] = frame.to_ndarray(format="rgb24")
    order = range(count) if keep is None else keep
    if count == 0 or any(index not in converted for index in order):
        return None, count, fps  # the caller plans again (or reports an empty clip)
    return np.stack([converted[index] for index in order]), count, fps


def _read_dicom(path: Path, num_frames: int | None) -> DecodedClip:
    try:
        import pydicom
        from pydicom.pixels import apply_color_lut, apply_voi_lut
    except ImportError:
        raise VideoError(
            f"clip {path} is DICOM but pydicom is not installed: pip install pydicom",
            reason="pydicom not installed",
        ) from None
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array  # pydicom >= 3 converts YBR to RGB here
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        samples = int(ds.get("SamplesPerPixel", 1))
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        if photometric == "PALETTE COLOR":
            pixels = apply_color_lut(pixels, ds)
            samples = 3
            if pixels.dtype == np.uint16:  # 16-bit palette entries: a fixed rescale keeps the palette's colours
                pixels = np.rint(pixels / 257.0).astype(np.uint8)
        elif samples == 1:
            pixels = apply_voi_lut(pixels, ds)
    except Exception as exc:  # pydicom raises many types (missing codec, bad tags, truncation)
        raise VideoError(
            f"DICOM clip {path} cannot be read ({type(exc).__name__}: {exc}): it is corrupt or needs "
            "a pixel-data codec (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg)",
            reason="corrupt DICOM",
        ) from None
    # Give every layout the same (frames, rows, cols, channels) shape.
    if n_frames == 1:
        pixels = pixels[None]
    if samples == 1:
        pixels = pixels[..., None]
    pixels = _to_uint8(pixels, invert=photometric == "MONOCHROME1")
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    keep = sample_indices(len(pixels), num_frames) if num_frames else slice(None)
    frames = np.ascontiguousarray(pixels[keep])
    return DecodedClip(frames, len(pixels), _dicom_fps(ds), frames.shape[1], frames.shape[2])


def _to_uint8(pixels: np.ndarray, invert: bool) -> np.ndarray:
    """Map monochrome samples wider than 8 bit to 0..255 (min-max over the whole clip, not per
    frame, so brightness changes over time survive); MONOCHROME1 (white = 0) is inverted."""
    if pixels.dtype != np.uint8:
        pixels = pixels.astype(np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        pixels = (pixels - low) * (255.0 / max(high - low, 1e-6))
        pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return 255 - pixels if invert else pixels


def _dicom_fps(ds) -> float | None:
    for keyword, to_fps in (
        ("RecommendedDisplayFrameRate", float),
        ("CineRate", float),
        ("FrameTime", lambda ms: 1000.0 / float(ms)),  # milliseconds per frame
    ):
        value = ds.get(keyword)
        try:
            if value not in (None, "") and float(value) > 0:
                return to_fps(value)
        except (TypeError, ValueError):
            continue
    return None


def ultrasound_box(gray_max: np.ndarray, threshold: int = CROP_THRESHOLD) -> tuple[int, int, int, int]:
    """Bounding box ``(top, bottom, left, right)`` (exclusive ends) of the ultrasound region.

    ``gray_max`` is the per-pixel maximum over frames, uint8 ``(H, W)``. See the module
    docstring for the rule; the whole frame is returned when nothing exceeds ``threshold``.
    """
    from scipy import ndimage

    height, width = gray_max.shape
    mask = gray_max > threshold
    blobs, count = ndimage.label(mask)
    if count == 0:
        return 0, height, 0, width
    sizes = np.bincount(blobs.ravel())[1:]
    keep = np.flatnonzero(sizes >= CROP_MIN_BLOB_FRACTION * sizes.max()) + 1
    rows, cols = np.nonzero(np.isin(blobs, keep))
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def prepare_clip(
    frames: np.ndarray, num_frames: int, image_size: int, *, source: str | os.PathLike | None = None
) -> tuple[np.ndarray, int]:
    """Turn decoded RGB frames into a cache entry: uint8 ``(T, S, S, 1)`` gray and its length.

    ``length`` is the number of real frames (``<= T``); frames after it are zeros.
    ``source`` only names the clip in error messages. Raises ``VideoError`` for clips
    with fewer than ``MIN_FRAMES`` frames or frames that are not uint8 ``(N, H, W, 3)``.
    """
    import torch

    name = f"clip {source}" if source is not None else "clip"
    if num_frames < 1 or image_size < 1:
        raise VideoError(f"{name}: num_frames and image_size must be positive (got {num_frames}, {image_size})")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise VideoError(
            f"{name}: expected uint8 RGB frames (N, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    if len(frames) < MIN_FRAMES:
        raise VideoError(
            f"{name} has {len(frames)} frame(s); a video needs at least {MIN_FRAMES}: "
            "it is a still image, remove it from the labels table",
            reason="too few frames",
        )
    kept = frames[sample_indices(len(frames), num_frames)]
    length = len(kept)
    gray = gray_frames(kept)
    resized = to_square(gray, crop_box(gray), image_size)

    out = np.zeros((num_frames, image_size, image_size, 1), dtype=np.uint8)
    out[:length] = resized.round().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out, length


def gray_frames(rgb_frames: np.ndarray):
    """uint8 RGB (n, H, W, 3) -> float luma tensor (n, 1, H, W); float, as uint8 luma would
    truncate 200 to 199."""
    import torch
    from torchvision.transforms.v2.functional import rgb_to_grayscale

    return rgb_to_grayscale(torch.from_numpy(np.ascontiguousarray(rgb_frames)).permute(0, 3, 1, 2).float())


def crop_box(gray) -> tuple[int, int, int, int]:
    """The crop of ``prepare_clip`` (step 3) for kept frames as a float gray tensor (n, 1, H, W)."""
    import torch

    return ultrasound_box(gray.amax(dim=0)[0].round().to(torch.uint8).numpy())


def to_square(images, box: tuple[int, int, int, int], image_size: int):
    """Steps 3-4 of ``prepare_clip`` on float images (n, C, H, W): crop to ``box``, pad with
    zeros to a centred square, resize to ``image_size`` (bilinear, antialias). Anything drawn
    on the decoded frames (e.g. the synthetic truth masks) lands where the cached pixels do."""
    import torch.nn.functional as F

    top, bottom, left, right = box
    images = images[:, :, top:bottom, left:right]
    height, width = images.shape[-2:]
    side = max(height, width)
    pad_h, pad_w = side - height, side - width
    images = F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
