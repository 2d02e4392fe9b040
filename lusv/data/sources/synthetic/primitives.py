"""Building blocks of the synthetic renderer: smooth noise, bands, textures, speckle, scan conversion.

Everything is drawn in *probe space*: a rectangular grid whose rows are depth below the skin
(0 = probe surface, 1 = deepest) and whose columns are the lateral position across the probe
(0..1). ``scan_geometry`` maps probe space onto the image: identity into a rectangle for a
*linear* probe, polar into a fan/sector (black outside) for a *convex* probe, so A-lines
become arcs and B-lines radial rays as in real convex images.

Speckle is multiplicative and Rayleigh distributed (the magnitude of a spatially correlated
complex Gaussian field): static in the chest wall, mostly renewed each frame in the lung.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage, special

from lusv.data.sources.synthetic.plan import PatientLook


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: Sequence[float] | float,
                  wrap: bool = False) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap" if wrap else "reflect")
    return (noise - noise.mean()) / (noise.std() + 1e-8)


def band(x: np.ndarray, centre, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - centre) / sigma) ** 2)


def smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    s = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return s * s * (3 - 2 * s)


class Texture1D:
    """A periodic lateral texture that can be sampled at shifted positions (sliding)."""

    def __init__(self, rng: np.random.Generator, sigma_fraction: float, samples: int = 512):
        self.values = smooth_noise(rng, (samples,), sigma_fraction * samples, wrap=True)
        self.grid = (np.arange(samples) + 0.5) / samples

    def __call__(self, u: np.ndarray) -> np.ndarray:
        return np.interp(u, self.grid, self.values, period=1.0)


def lateral_intervals_free(blocked: list[tuple[float, float]], margin: float = 0.12
                            ) -> list[tuple[float, float]]:
    """Lateral intervals inside [margin, 1-margin] not covered by any blocked interval."""
    free = [(margin, 1.0 - margin)]
    for lo, hi in blocked:
        next_free = []
        for a, b in free:
            if hi <= a or lo >= b:
                next_free.append((a, b))
                continue
            if lo > a:
                next_free.append((a, lo))
            if hi < b:
                next_free.append((hi, b))
        free = next_free
    return [(a, b) for a, b in free if b - a > 0.02]


def sample_in_intervals(rng: np.random.Generator, intervals: list[tuple[float, float]], n: int
                         ) -> np.ndarray:
    if not intervals:
        return rng.uniform(0.2, 0.8, size=n)
    widths = np.array([b - a for a, b in intervals])
    which = rng.choice(len(intervals), size=n, p=widths / widths.sum())
    return np.array([rng.uniform(*intervals[i]) for i in which])


def segment_distance(point_d, point_u, start_d, start_u, end_d, end_u) -> np.ndarray:
    """Distance from points to line segments (all arguments broadcast together)."""
    vd, vu = end_d - start_d, end_u - start_u
    wd, wu = point_d - start_d, point_u - start_u
    t = np.clip((wd * vd + wu * vu) / (vd * vd + vu * vu + 1e-12), 0.0, 1.0)
    return np.hypot(wd - t * vd, wu - t * vu)


@dataclass
class Geometry:
    """Scan conversion from probe space (T, D, U) to image pixels (S, S)."""

    depth_index: np.ndarray  # (S, S) float probe-space row of each pixel
    lateral_index: np.ndarray  # (S, S) float probe-space column of each pixel
    inside: np.ndarray  # (S, S) bool field of view

    def image(self, volume: np.ndarray) -> np.ndarray:
        """Bilinear scan conversion of a (T, D, U) volume; 0 outside the field of view."""
        coords = np.empty((3, volume.shape[0], *self.inside.shape))
        coords[0] = np.arange(volume.shape[0])[:, None, None]
        coords[1] = self.depth_index
        coords[2] = self.lateral_index
        out = ndimage.map_coordinates(volume, coords, order=1, mode="nearest")
        return out * self.inside

    def mask(self, volume: np.ndarray) -> np.ndarray:
        """Nearest-neighbour scan conversion of a bool (T, D, U) or (D, U) mask."""
        d = np.clip(np.rint(self.depth_index).astype(int), 0, volume.shape[-2] - 1)
        u = np.clip(np.rint(self.lateral_index).astype(int), 0, volume.shape[-1] - 1)
        return volume[..., d, u] & self.inside


def scan_geometry(look: PatientLook, size: int, depth_samples: int, lateral_samples: int) -> Geometry:
    y, x = np.mgrid[0:size, 0:size].astype(float) + 0.5
    if look.probe == "linear":
        width = look.linear_width * size
        left = (size - width) / 2
        lateral = (x - left) / width
        depth = y / size
        inside = (lateral >= 0) & (lateral < 1)
    else:
        # Fan with its apex above the image; fit the sector's bounding box into the frame.
        theta_max, r_in = look.fan_half_angle, look.fan_inner_radius
        r_out = r_in + 1.0
        box_w = 2 * r_out * math.sin(theta_max)
        box_h = r_out - r_in * math.cos(theta_max)
        scale = 0.96 * size / max(box_w, box_h)
        apex_x = size / 2
        apex_y = (size - box_h * scale) / 2 - r_in * math.cos(theta_max) * scale
        radius = np.hypot(x - apex_x, y - apex_y) / scale
        angle = np.arctan2(x - apex_x, y - apex_y)
        depth = radius - r_in
        lateral = (angle + theta_max) / (2 * theta_max)
        inside = (depth >= 0) & (depth < 1) & (lateral >= 0) & (lateral < 1)
    return Geometry(depth_index=depth * depth_samples - 0.5, lateral_index=lateral * lateral_samples - 0.5,
                     inside=inside)



def tissue_above_pleura(rng: np.random.Generator, look: PatientLook, d: np.ndarray, u: np.ndarray
                         ) -> np.ndarray:
    """Static chest wall (D, U): skin, layers with wavy fascia lines, striated muscle."""
    shape = (d.shape[0], u.shape[1])
    boundaries = [depth + 0.01 * Texture1D(rng, 0.08)(u) for depth in look.layer_depths]
    layer = sum((d > b).astype(int) for b in boundaries) if boundaries else np.zeros(shape, int)
    levels = np.asarray(look.layer_levels)[np.broadcast_to(layer, shape)]
    striation = smooth_noise(rng, shape, (0.6, 6.0))
    tissue = levels * (1 + 0.25 * striation)
    for b in boundaries:
        tissue = tissue + 0.25 * band(d, b, 0.006)
    tissue = tissue + 0.4 * band(d, 0.0, 0.015)  # skin/probe interface
    return tissue


def rayleigh_speckle(rng: np.random.Generator, shape: tuple[int, int, int], static_weight: np.ndarray
                      ) -> np.ndarray:
    """Multiplicative speckle (T, D, U), Rayleigh distributed, mean ~1 after display compression.

    The magnitude of a complex Gaussian field is Rayleigh distributed; smoothing the field
    gives speckle grains (wider laterally, as the lateral resolution of a probe is worse).
    ``static_weight`` (D, 1) is the share of the field that stays the same in every frame.
    """
    sigma = (0.0, 0.7, 1.3)

    def field(n):
        re = ndimage.gaussian_filter(rng.standard_normal((n, *shape[1:])), sigma)
        im = ndimage.gaussian_filter(rng.standard_normal((n, *shape[1:])), sigma)
        c = re + 1j * im
        return c / np.sqrt(np.mean(np.abs(c) ** 2))

    complex_field = np.sqrt(static_weight) * field(1) + np.sqrt(1 - static_weight) * field(shape[0])
    exponent = 0.6  # log-like display compression lowers speckle contrast
    # E[R^a] = Gamma(1 + a/2) for a Rayleigh amplitude with E[R^2] = 1
    return np.abs(complex_field) ** exponent / special.gamma(1 + exponent / 2)
