"""(a) Training data path: lusv's clip cache + batched augmentation vs decode-and-augment per frame.

Both paths turn the same MJPG .avi clips into the same kind of training batch, ImageNet-normalised
float (B, T, 3, S, S) with clip-coherent random flip, rotation, brightness/contrast/gamma, blur
and noise, on ``device``:

- **lusv**: ``ClipCache`` (decoded once, one-off cost reported separately) -> ``ClipDataset`` /
  ``DataLoader`` with ``collate_clips`` -> ``to_model_input`` with ``ClipAugment`` (whole batch
  at once, on the device).
- **baseline** (the authors' approach): every epoch decodes each clip from its .avi with PyAV,
  converts only the T kept frames to gray PIL images, and runs per-frame PIL/torchvision transforms
  in a Python loop on one gray channel (resize, flip, rotate, brightness, contrast,
  gamma, blur, to_tensor, noise), then repeats gray to 3 channels while normalising.

The baseline is given every benefit: it skips the ultrasound crop the cache does at ingestion,
PyAV decodes with frame threads, and one source size is S x S already (its resize is nearly
free). The other source size, 640 x 480, is what ultrasound machines export: the baseline has to
decode and resize those larger frames every epoch, the cache only once.

Run alone: ``python -m benchmarks.bench_data_path [--quick] [--device cpu|cuda|auto]``.
"""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from benchmarks.common import PeakMemory, Row, bench_main, measure, measure_interleaved
from lusv.data.patterns import IMAGENET_MEAN, IMAGENET_STD, PATTERNS


@dataclass(frozen=True)
class DataPathSize:
    n_clips: int = 30
    source_frames: int = 40  # frames in each .avi (> T, so both paths resample)
    num_frames: int = 30  # T
    image_size: int = 256  # S
    # (width, height) of the .avi frames. (S, S): the synthetic clip as rendered, the baseline's
    # best case (its resize is a no-op). (640, 480): the sector enlarged on a black screen the
    # size of a typical ultrasound export, which every epoch of the baseline decodes and resizes.
    source_sizes: tuple[tuple[int, int], ...] = ((256, 256), (640, 480))
    batch_size: int = 4  # the paper's
    warmup: int = 1  # epochs; peak memory is taken over these
    repeats: int = 2  # timed epochs of each path, taking turns


QUICK = DataPathSize(n_clips=8, source_frames=12, num_frames=8, image_size=64, source_sizes=((64, 64), (96, 80)),
                     batch_size=4, warmup=1, repeats=2)


def on_screen(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Gray frames (N, S, S) enlarged to fill the height (less a margin) and centred on a black
    ``height x width`` screen, as ultrasound machines export them; (N, height, width) uint8."""
    n, side = frames.shape[0], min(width, height) - 2 * (min(width, height) // 30)
    gray = torch.from_numpy(frames).float()[:, None]
    big = torch.nn.functional.interpolate(gray, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    screen = np.zeros((n, height, width), dtype=np.uint8)
    top, left = (height - side) // 2, (width - side) // 2
    screen[:, top:top + side, left:left + side] = big[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    return screen


def write_avi(path: Path, frames: np.ndarray, fps: int = 30) -> Path:
    """Gray frames (N, H, W) as an MJPG .avi of RGB frames (H, W even), near-lossless quality."""
    import av

    with av.open(str(path), mode="w", format="avi") as container:
        # qmin/qmax 2-4: the near-lossless MJPG of ultrasound exports, not FFmpeg's blocky default.
        stream = container.add_stream("mjpeg", rate=fps, options={"qmin": "2", "qmax": "4"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuvj420p"
        for gray in frames:
            rgb = np.repeat(gray[..., None], 3, axis=-1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def write_mjpg_clips(folder: Path, n_clips: int, num_frames: int, frame_size: int,
                     source_sizes: tuple[tuple[int, int], ...] = (), seed: int = 0) -> dict[tuple[int, int], pd.DataFrame]:
    """Render synthetic LUS clips (``frame_size`` square) once and write them as MJPG .avi files
    at every (width, height) of ``source_sizes`` (default: as rendered).

    Returns, per source size, a labels-like table (clip_id, path, one column per pattern) for
    ``ClipCache.build`` and ``ClipDataset``.
    """
    from lusv.data.sources.synthetic import synthesize_clip

    source_sizes = tuple(source_sizes) or ((frame_size, frame_size),)
    rows: dict[tuple[int, int], list[dict]] = {size: [] for size in source_sizes}
    for index in range(n_clips):
        clip = synthesize_clip(seed=seed + index, num_frames=num_frames, frame_size=frame_size)
        labels = dict(zip(PATTERNS, clip.labels.astype(float)))
        for width, height in source_sizes:
            frames = clip.frames if (width, height) == (frame_size, frame_size) else on_screen(clip.frames, width, height)
            sub = folder / f"{width}x{height}"
            sub.mkdir(parents=True, exist_ok=True)
            path = write_avi(sub / f"clip{index:03d}.avi", frames)
            rows[(width, height)].append({"clip_id": f"clip{index:03d}", "path": str(path), **labels})
    return {size: pd.DataFrame(table) for size, table in rows.items()}


# ----------------------------------------------------------------------------- lusv path


def lusv_epoch_fn(cache, table: pd.DataFrame, batch_size: int, device: torch.device, seed: int = 0):
    """A callable that runs one epoch of the lusv data path and returns the number of clips."""
    from lusv.data.datasets import ClipDataset, collate_clips
    from lusv.data.model_input import ClipAugment, to_model_input

    loader = DataLoader(
        ClipDataset(cache, table), batch_size=batch_size, shuffle=True, collate_fn=collate_clips,
        num_workers=0, pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed),
    )
    augment = ClipAugment()
    generator = torch.Generator().manual_seed(seed)

    def epoch() -> int:
        clips = 0
        for batch in loader:
            x = to_model_input(batch["clips"], device, augment=augment, generator=generator, lengths=batch["lengths"])
            clips += x.shape[0]
        return clips

    return epoch


# ----------------------------------------------------------------------------- baseline path


def _decode_avi(path: str, num_frames: int) -> list:
    """The T kept frames (uniform over the clip) as gray (mode "L") PIL images.

    Every frame is decoded (an MJPG decoder has to, and the clip's length is only known at the
    end), but only the kept ones are converted to PIL, and straight from the decoder's luma
    plane (``format="gray"``, BT.601 luma like ``to_grayscale``): 3-9x faster per frame than
    ``to_image()`` (RGB) followed by ``TF.to_grayscale(image, 1)``, with the same result.
    """
    import av
    from PIL import Image

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        decoded = list(container.decode(stream))
    keep = np.linspace(0, len(decoded) - 1, num_frames).round().astype(int)
    return [Image.fromarray(decoded[i].to_ndarray(format="gray")) for i in keep]


def baseline_clip(path: str, num_frames: int, image_size: int, rng: random.Random) -> torch.Tensor:
    """One clip the per-frame way: float (T, 3, S, S), parameters drawn per clip, applied per frame.

    Same augmentations, ranges and probabilities as ``lusv.data.model_input.ClipAugment`` (flip p 0.5,
    rotation +-10 deg, brightness +-0.1, contrast factor 1 +- 0.2, gamma log-uniform in
    [1/1.2, 1.2], blur p 0.25 with sigma 0.3-1.2 and a 9-tap kernel, noise p 0.25 with std up to
    0.03), in PIL's flavour: brightness is a factor, contrast pivots on the frame's own mean.
    Like lusv, it works on one gray channel and only the ImageNet normalisation writes the three
    output channels.
    """
    from torchvision.transforms import functional as TF

    flip = rng.random() < 0.5
    angle = rng.uniform(-10.0, 10.0)
    brightness = 1 + rng.uniform(-0.1, 0.1)
    contrast = 1 + rng.uniform(-0.2, 0.2)
    gamma = math.exp(rng.uniform(-1, 1) * math.log1p(0.2))
    sigma = rng.uniform(0.3, 1.2) if rng.random() < 0.25 else None
    noise_std = rng.uniform(0.0, 0.03) if rng.random() < 0.25 else 0.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    frames = []
    for image in _decode_avi(path, num_frames):  # already gray, one channel
        image = TF.resize(image, [image_size, image_size], antialias=True)
        if flip:
            image = TF.hflip(image)
        image = TF.rotate(image, angle, interpolation=TF.InterpolationMode.BILINEAR)
        image = TF.adjust_brightness(image, brightness)
        image = TF.adjust_contrast(image, contrast)
        image = TF.adjust_gamma(image, gamma)
        if sigma is not None:
            image = TF.gaussian_blur(image, kernel_size=2 * math.ceil(3 * 1.2) + 1, sigma=sigma)
        tensor = TF.to_tensor(image)  # (1, S, S) in [0, 1]
        if noise_std:
            tensor = (tensor + torch.randn_like(tensor) * noise_std).clamp_(0, 1)
        # Gray -> 3 channels and ImageNet normalisation in one broadcast (one 3-channel write).
        frames.append((tensor - mean) / std)
    return torch.stack(frames)


def baseline_epoch_fn(table: pd.DataFrame, num_frames: int, image_size: int, batch_size: int, device: torch.device,
                      seed: int = 0):
    """A callable that runs one epoch of the per-frame baseline and returns the number of clips."""
    rng = random.Random(seed)
    paths = table["path"].tolist()

    def epoch() -> int:
        order = rng.sample(paths, len(paths))
        clips = 0
        for start in range(0, len(order), batch_size):
            batch = torch.stack([baseline_clip(p, num_frames, image_size, rng) for p in order[start:start + batch_size]])
            x = batch.to(device, non_blocking=True)
            clips += x.shape[0]
        return clips

    return epoch


# ----------------------------------------------------------------------------- benchmark


def run(size: DataPathSize, device: torch.device) -> list[Row]:
    """Per source size: time both paths over the same clips in this process, in clips/s, with
    the ratio, plus the one-off cache build."""
    from lusv.data.cache import ClipCache

    name = "(a) data path"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="lusv-bench-") as tmp:
        root = Path(tmp)
        tables = write_mjpg_clips(root / "videos", size.n_clips, size.source_frames, size.image_size, size.source_sizes)
        for (width, height), table in tables.items():
            source = f"{width}x{height} MJPG"
            setting = (f"{size.n_clips} clips of {size.source_frames} {width}x{height} MJPG frames -> "
                       f"{size.num_frames}x{size.image_size}x{size.image_size}, batch {size.batch_size}")

            # The one-off cache build (decode, crop, resize, write), timed once on a fresh cache.
            cache = ClipCache(root / f"cache-{width}x{height}", size.num_frames, size.image_size)
            with PeakMemory(torch.device("cpu")) as build_mem:
                build_s = measure(lambda: cache.build(table, progress=False), torch.device("cpu"), 0, 1)[0]

            epochs = {
                "baseline": baseline_epoch_fn(table, size.num_frames, size.image_size, size.batch_size, device),
                "lusv": lusv_epoch_fn(cache, table, size.batch_size, device),
            }
            seconds, memory = measure_interleaved(epochs, device, size.warmup, size.repeats)
            base_rate, lusv_rate = size.n_clips / seconds["baseline"], size.n_clips / seconds["lusv"]
            base_label = f"baseline, {source}: decode + per-frame PIL aug"
            rows += [
                Row(name, base_label, base_rate, "clips/s", memory["baseline"].mib, memory["baseline"].kind,
                    1.0, "self", setting, memory["baseline"].rss_mib),
                Row(name, f"lusv, {source}: clip cache + batched ClipAugment", lusv_rate, "clips/s",
                    memory["lusv"].mib, memory["lusv"].kind, lusv_rate / base_rate, base_label, setting,
                    memory["lusv"].rss_mib),
                Row(name, f"lusv, {source}: one-off cache build", size.n_clips / build_s, "clips/s", build_mem.mib,
                    build_mem.kind, None, "", "decode once per dataset (not per epoch), 1 process", build_mem.rss_mib),
            ]
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main(__doc__, lambda quick, device: run(QUICK if quick else DataPathSize(), device), argv)


if __name__ == "__main__":
    main()
