"""Torch datasets over the clip cache, the uint8 -> model-input conversion, and augmentations.

Data path of a batch (the expensive steps happen once, on the device):

1. ``ClipDataset`` reads uint8 clips (T, S, S, 1) from ``lusv.cache.ClipCache``; a whole batch
   is read with one ``load_many`` call (``__getitems__``), which suits a memory-mapped cache.
2. ``collate_clips`` stacks them: ``clips`` uint8 (B, T, S, S, 1), ``lengths`` int64 (B,),
   ``labels`` float32 (B, 4) with NaN for missing labels, ``clip_ids`` list of str.
3. ``to_model_input`` moves the uint8 batch to the device (4x less to transfer than float32),
   converts to [0, 1] floats there, optionally augments, and returns ImageNet-normalised
   float (B, T, 3, S, S) with the gray channel repeated to RGB.

Augmentations (``ClipAugment``) are batched tensor ops on the device: every random parameter
is drawn per clip from a seeded ``torch.Generator`` and applied identically to all frames of
that clip, so motion (B-line movement, lung sliding) stays coherent. Horizontal flip and
rotation (+-10 deg) are one ``affine_grid``/``grid_sample`` call for the whole batch;
brightness/contrast/gamma, Gaussian blur and Gaussian noise follow the authors' code.
``clip_augment(name)`` gives the named sets of ``RunParams.augmentations``: ``"paper"`` = flip
and rotation only (the paper's text), ``"extended"`` = all of them.

Deviation from the paper: CLAHE is not applied. It is a per-image histogram operation with no
batched tensor implementation in torch/torchvision, and running OpenCV per frame on the CPU
would undo the point of device-side augmentation; contrast/gamma jitter covers part of its
effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lusv.config import AUGMENTATION_SETS
from lusv.errors import ConfigError, LabelsError
from lusv.patterns import IMAGENET_MEAN, IMAGENET_STD, PATTERNS

if TYPE_CHECKING:  # annotation only: lusv.features builds on this module
    from lusv.features import FeatureCache

Batch = dict[str, Any]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def keep_freed_cpu_buffers(threshold_bytes: int = 1 << 30) -> bool:
    """Let glibc reuse freed CPU buffers of up to ``threshold_bytes`` instead of unmapping them.

    glibc serves every allocation over 32 MB with a fresh ``mmap`` and returns it to the OS on
    free, so each CPU batch (B x T x 3 x S x S floats: 94 MB at the paper size) and each large
    activation page-faults all of its memory anew: measured here, that was a third of the time
    of the CPU data path. Kept buffers are reused by the next batch, so the process keeps its
    peak memory instead of giving it back between batches. Process-wide; a no-op (False)
    where the C library is not glibc. CUDA memory has its own caching allocator and is unaffected.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    value = ctypes.c_int(int(threshold_bytes))
    return bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    # Memory-mapped cache entries are read-only; torch warns on (and must not write to) those.
    if not array.flags.writeable:
        array = np.array(array, copy=True)
    return torch.from_numpy(np.ascontiguousarray(array))


class _CachedSplit(Dataset):
    """The clips of one split read from a cache: their ids and labels, and items and whole
    batches shaped alike for clips and features (``item_key`` / ``batch_key`` name the data)."""

    item_key, batch_key = "", ""

    def __init__(self, cache: Any, table: pd.DataFrame):
        self.cache = cache
        self.clip_ids, self.labels = _ids_and_labels(table, type(self).__name__)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def _read_one(self, index: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _read_many(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Batch:
        data, length = self._read_one(index)
        return {
            self.item_key: self._tensor(data),
            "length": int(length),
            "labels": torch.from_numpy(self.labels[index].copy()),
            "clip_id": self.clip_ids[index],
        }

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """A whole batch in one read (DataLoader uses this when it exists)."""
        indices = list(indices)
        data, lengths = self._read_many(indices)
        return {
            self.batch_key: self._tensor(np.asarray(data)),
            "lengths": torch.as_tensor(np.asarray(lengths), dtype=torch.int64),
            "labels": torch.from_numpy(self.labels[indices].copy()),
            "clip_ids": [self.clip_ids[i] for i in indices],
        }


class ClipDataset(_CachedSplit):
    """Clips of one split, read from a clip cache.

    ``cache`` is a ``lusv.cache.ClipCache`` (anything with ``load(clip_id)`` and
    ``load_many(clip_ids)``); ``table`` has a ``clip_id`` column and one column per pattern
    (float 0/1, NaN = missing). An item is a dict: clip uint8 (T, S, S, 1), length int,
    labels float32 (4,), clip_id str; a batch (one ``load_many`` call, which suits a
    memory-mapped cache): clips, lengths, labels, clip_ids.
    """

    item_key, batch_key = "clip", "clips"

    def _read_one(self, index: int) -> tuple[np.ndarray, int]:
        return self.cache.load(self.clip_ids[index])

    def _read_many(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.cache.load_many([self.clip_ids[i] for i in indices])

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return _as_tensor(array)


def _ids_and_labels(table: pd.DataFrame, what: str) -> tuple[list[str], np.ndarray]:
    """A split's clip ids (as strings) and labels float32 (N, 4), NaN = missing."""
    missing = [c for c in ("clip_id", *PATTERNS) if c not in table.columns]
    if missing:
        raise LabelsError(f"{what} table lacks column(s) {missing} (needed: clip_id, {', '.join(PATTERNS)})")
    return table["clip_id"].astype(str).tolist(), table[list(PATTERNS)].to_numpy(dtype=np.float32)


def _stack(samples: Sequence[Batch] | Batch, item: str, batch: str) -> Batch:
    """Stack dataset items into a batch (``item`` tensors -> ``batch``); a batch already made by
    ``__getitems__`` passes through."""
    if isinstance(samples, Mapping):
        return dict(samples)
    return {
        batch: torch.stack([s[item] for s in samples]),
        "lengths": torch.tensor([s["length"] for s in samples], dtype=torch.int64),
        "labels": torch.stack([s["labels"] for s in samples]),
        "clip_ids": [s["clip_id"] for s in samples],
    }


def collate_clips(samples: Sequence[Batch] | Batch) -> Batch:
    """``ClipDataset`` items -> a batch with ``clips`` uint8 (B, T, S, S, 1)."""
    return _stack(samples, "clip", "clips")


def collate_features(samples: Sequence[Batch] | Batch) -> Batch:
    """``FeatureDataset`` items -> a batch with ``features`` float32 (B, T, F)."""
    return _stack(samples, "features", "features")


class FeatureDataset(_CachedSplit):
    """Cached features of the clips of one split, shaped like ``lusv.datasets.ClipDataset``.

    An item is a dict: features float32 (T, F), length int, labels float32 (4,), clip_id str; a
    batch (``__getitems__`` or ``collate_features``): features float32 (B, T, F), lengths int64
    (B,), labels float32 (B, 4) with NaN for missing labels, clip_ids list of str.

    With ``views = 0`` every item is the plain view. With ``views = N > 0`` (training with
    augmentation) each clip shows one of its N augmented views per epoch, drawn uniformly from
    a generator seeded by (``seed``, epoch): call ``set_epoch(epoch)`` before each epoch's pass
    (a DataLoader copies the dataset to its workers when its iterator starts, so do not use
    ``persistent_workers`` with views).
    """

    def __init__(self, cache: "FeatureCache", table: pd.DataFrame, views: int = 0, seed: int = 0):
        super().__init__(cache, table)
        # view_names(N) = the plain view, then the N augmented ones; training draws among those
        self.view_names = cache.view_names(views)[1:] if views > 0 else cache.view_names(0)
        self.seed = int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the view each clip shows in ``epoch`` (the same draws for the same seed and epoch)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        picks = rng.integers(0, len(self.view_names), size=len(self.clip_ids))
        self.views = [self.view_names[i] for i in picks]

    item_key = batch_key = "features"

    def _read_one(self, index: int) -> tuple[np.ndarray, int]:
        return self.cache.load(self.clip_ids[index], self.views[index])

    def _read_many(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.cache.load_many([self.clip_ids[i] for i in indices], [self.views[i] for i in indices])

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array.astype(np.float32))


def frame_mask(lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Bool (B, T): True on real frames, False on zero padding after ``length``."""
    steps = torch.arange(num_frames, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


def to_unit_float(clips: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 (B, T, S, S, 1) -> float (B, T, 1, S, S) in [0, 1], converted after the transfer."""
    if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 1:
        raise ValueError(f"expected uint8 clips (B, T, S, S, 1), got {tuple(clips.shape)} {clips.dtype}")
    on_device = clips.to(device, non_blocking=True)
    return on_device.permute(0, 1, 4, 2, 3).float().div_(255.0)


def normalize(gray: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """float (B, T, 1, S, S) in [0, 1] -> ImageNet-normalised RGB float (B, T, 3, S, S).

    With ``channels_last`` the result has (S, S, 3) memory order per frame, so the model's
    (B*T, 3, S, S) view is already channels-last and needs no conversion copy.
    """
    b, t, _, s, s2 = gray.shape
    view = (1, 1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=gray.device, dtype=gray.dtype).view(view)
    std = torch.tensor(IMAGENET_STD, device=gray.device, dtype=gray.dtype).view(view)
    # The 3-channel result is written once, straight into its final memory order (sub broadcasts
    # 1 -> 3 channels into ``out``, then an in-place divide): no 3-channel temporaries and no
    # conversion copy, which made this the slowest step of the CPU data path.
    if channels_last:
        out = torch.empty((b, t, s, s2, 3), device=gray.device, dtype=gray.dtype).permute(0, 1, 4, 2, 3)
    else:
        out = torch.empty((b, t, 3, s, s2), device=gray.device, dtype=gray.dtype)
    torch.sub(gray, mean, out=out)
    return out.div_(std)


def to_model_input(
    clips: torch.Tensor,
    device: torch.device | str,
    augment: Optional["ClipAugment"] = None,
    generator: Optional[torch.Generator] = None,
    lengths: Optional[torch.Tensor] = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 batch (B, T, S, S, 1) -> ImageNet-normalised float (B, T, 3, S, S) on ``device``.

    The transfer is uint8; conversion, augmentation (when ``augment`` is given, drawing its
    random parameters from ``generator``) and normalisation run on the device.
    """
    x = to_unit_float(clips, device)
    if augment is not None:
        if generator is None:
            raise ValueError("augmentation needs a seeded torch.Generator for reproducibility")
        x = augment(x, generator, lengths=lengths)
    return normalize(x, channels_last=channels_last)


@dataclass(frozen=True)
class ClipAugment:
    """Batched, clip-coherent augmentations of [0, 1] gray clips (B, T, 1, S, S).

    Each clip draws its own flip, angle, brightness, contrast, gamma, blur and noise once and
    applies them to all of its frames. Every call consumes the same number of draws from the
    generator, so the augmentation stream is reproducible from the generator's seed.
    """

    flip_p: float = 0.5
    max_rotation_deg: float = 10.0
    brightness: float = 0.1  # additive shift in [-b, b] of unit intensity
    contrast: float = 0.2  # factor in [1 - c, 1 + c] around the clip mean
    gamma: float = 0.2  # exponent log-uniform in [1 / (1 + g), 1 + g]
    blur_p: float = 0.25
    blur_sigma: tuple[float, float] = (0.3, 1.2)  # pixels
    noise_p: float = 0.25
    noise_std: float = 0.03

    _NUM_DRAWS = 9

    def __call__(self, x: torch.Tensor, generator: torch.Generator, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, t, c, s, s2 = x.shape
        if c != 1 or s != s2:
            raise ValueError(f"ClipAugment expects gray square clips (B, T, 1, S, S), got {tuple(x.shape)}")
        # Parameters are drawn on the CPU (cheap, device independent, state saveable) and moved.
        u = torch.rand((b, self._NUM_DRAWS), generator=generator, dtype=torch.float64)
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        u = u.to(device=x.device, dtype=x.dtype)

        given = x
        x = self._flip_rotate(x, flip=u[:, 0] < self.flip_p, turn=u[:, 1] * 2 - 1)
        if self.brightness or self.contrast or self.gamma:  # the paper's set has no intensity jitter
            x = self._intensity(x, u[:, 2], u[:, 3], u[:, 4], lengths)
        if x is given:  # the steps below work in place: never on the caller's tensor
            x = x.clone()
        x = self._blur(x, apply=u[:, 5] < self.blur_p, pick=u[:, 6])
        x = self._noise(x, apply=u[:, 7] < self.noise_p, pick=u[:, 8], seed=noise_seed)
        if lengths is not None:  # keep padding frames exactly zero
            x = x.mul_(frame_mask(lengths.to(x.device), t).to(x.dtype)[:, :, None, None, None])
        return x

    def _flip_rotate(self, x: torch.Tensor, flip: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
        if self.flip_p <= 0 and self.max_rotation_deg <= 0:
            return x
        b, t, _, s, _ = x.shape
        angle = turn * math.radians(self.max_rotation_deg)
        sign = 1.0 - 2.0 * flip.to(x.dtype)  # -1 mirrors x
        cos, sin = torch.cos(angle), torch.sin(angle)
        zero = torch.zeros_like(cos)
        # sampling matrix = rotation @ diag(sign, 1): output pixel -> input location
        theta = torch.stack(
            [torch.stack([cos * sign, -sin, zero], dim=1), torch.stack([sin * sign, cos, zero], dim=1)], dim=1
        )
        # Frames act as channels: one grid per clip moves all its frames the same way.
        frames = x.reshape(b, t, s, s)
        grid = F.affine_grid(theta, size=(b, t, s, s), align_corners=False)
        moved = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return moved.reshape(b, t, 1, s, s)

    def _intensity(self, x, u_bright, u_contrast, u_gamma, lengths) -> torch.Tensor:
        b, t = x.shape[:2]
        shift = (u_bright * 2 - 1) * self.brightness
        factor = 1 + (u_contrast * 2 - 1) * self.contrast
        gamma = torch.exp((u_gamma * 2 - 1) * math.log1p(self.gamma))
        if lengths is None:
            mean = x.mean(dim=(1, 2, 3, 4))
        else:  # padding frames must not drag the clip mean towards black
            real = lengths.to(x.device).clamp(min=1).to(x.dtype)
            mean = x.sum(dim=(1, 2, 3, 4)) / (real * x[0, 0].numel())
        view = (b, 1, 1, 1, 1)
        # (x - mean) * factor + mean + shift as one pass: x * factor + offset.
        offset = mean * (1 - factor) + shift
        x = torch.addcmul(offset.view(view), x, factor.view(view))
        return x.clamp_(0.0, 1.0).pow_(gamma.view(view))

    def _blur(self, x: torch.Tensor, apply: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
        if self.blur_p <= 0 or not bool(apply.any()):
            return x
        _, t, _, s, _ = x.shape
        low, high = self.blur_sigma
        chosen = apply.nonzero().flatten()
        n = len(chosen)
        sigma = low + pick[chosen] * (high - low)
        radius = max(1, math.ceil(3 * high))
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-(offsets[None, :] ** 2) / (2 * sigma[:, None] ** 2))
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        # Only the clips drawn for blurring are convolved (an identity kernel would return the
        # others unchanged, bit for bit, at the cost of two convolutions over the whole batch).
        # Separable Gaussian as grouped convolutions: one kernel per clip, shared by its frames.
        weight = kernel.repeat_interleave(t, dim=0)  # (n*T, k)
        frames = F.pad(x[chosen].reshape(1, n * t, s, s), (radius, radius, radius, radius), mode="reflect")
        frames = F.conv2d(frames, weight[:, None, :, None], groups=n * t)
        frames = F.conv2d(frames, weight[:, None, None, :], groups=n * t)
        # In place: ``__call__`` hands in a tensor of its own (the output of ``_intensity``).
        return x.index_copy_(0, chosen, frames.reshape(n, t, 1, s, s))

    def _noise(self, x: torch.Tensor, apply: torch.Tensor, pick: torch.Tensor, seed: int) -> torch.Tensor:
        if self.noise_p <= 0 or not bool(apply.any()):
            return x
        # Noise is drawn on the device (no big CPU->device copy) from a generator seeded by
        # the CPU generator, so it is as reproducible as the other parameters. Only the clips
        # drawn for noise get it: drawing normals is as costly as the rest of this step.
        chosen = apply.nonzero().flatten()
        device_generator = torch.Generator(device=x.device).manual_seed(seed)
        noise = torch.randn((len(chosen), *x.shape[1:]), generator=device_generator, device=x.device, dtype=x.dtype)
        std = (pick[chosen] * self.noise_std).view(-1, 1, 1, 1, 1)
        noisy = noise.mul_(std).add_(x[chosen]).clamp_(0.0, 1.0)  # = (x + noise * std).clamp(0, 1)
        # In place: ``__call__`` hands in a tensor of its own.
        return x.index_copy_(0, chosen, noisy)


def clip_augment(augmentations: str) -> ClipAugment:
    """The named augmentation set (``lusv.config.AUGMENTATION_SETS``): ``"paper"`` = horizontal
    flip and rotation up to +-10 degrees, nothing else; ``"extended"`` = ``ClipAugment()``."""
    if augmentations == "paper":
        return ClipAugment(brightness=0.0, contrast=0.0, gamma=0.0, blur_p=0.0, noise_p=0.0)
    if augmentations == "extended":
        return ClipAugment()
    raise ConfigError(f"unknown augmentations {augmentations!r}; choose one of {', '.join(AUGMENTATION_SETS)}")
