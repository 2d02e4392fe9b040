"""From a uint8 batch to the model's input on the device: conversion, augmentation, normalisation.

Data path of a batch (the expensive steps happen once, on the device):

1. ``lusv.data.datasets`` reads and collates uint8 clips (B, T, S, S, 1) from the clip cache.
2. ``to_model_input`` moves the uint8 batch to the device (4x less to transfer than float32),
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
from typing import Optional

import torch
import torch.nn.functional as F

from lusv.config import AUGMENTATION_SETS
from lusv.data.patterns import IMAGENET_MEAN, IMAGENET_STD
from lusv.errors import ConfigError


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
