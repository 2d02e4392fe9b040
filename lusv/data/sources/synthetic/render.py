"""Rendering one synthetic clip: a sequence of named drawing steps over probe-space arrays.

Layers, from the skin down: soft-tissue layers with fascia lines and muscle striation
(static), an optional rib with its acoustic shadow at one edge, the bright pleural line whose
texture slides laterally with breathing, and aerated lung (a flickering reverberation haze).
Patterns on top of that:

* A-lines: horizontal reverberations at integer multiples (2x, 3x, ...) of the pleural depth,
  fading with depth, carrying the pleural texture; erased where B-lines are.
* B-lines: bright laser-like vertical comet tails from the pleura to the bottom that move
  laterally with sliding; they come and go (each is visible on a subset of frames).
* Consolidation: a subpleural, tissue-like (hepatised, granular) region with an irregular
  "shred" deep border and bright branching air bronchograms that move slightly.
* Pleural effusion: an anechoic (black) wedge below the pleural line on the dependent side,
  bounded below by a bright lung surface that moves with breathing (sinusoid sign).

Depth attenuation, speckle and a per-patient gain complete the look; a final scan conversion
(``primitives.scan_geometry``) maps probe space onto the image. ``render_clip`` runs the steps
in a fixed order: each step draws from the clip's random generator, so the order of the steps
(and of the draws inside them) is part of what makes a clip reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from lusv.data.patterns import PATTERNS
from lusv.data.sources.synthetic.plan import (
    A_LINES,
    B_LINES,
    CONSOLIDATION,
    EFFUSION,
    frame_window,
    PatientLook,
    sample_patient_look,
    sample_presence,
)
from lusv.errors import ConfigError
from lusv.data.sources.synthetic.primitives import (
    Texture1D,
    band,
    lateral_intervals_free,
    rayleigh_speckle,
    sample_in_intervals,
    scan_geometry,
    segment_distance,
    smooth_noise,
    smoothstep,
    tissue_above_pleura,
)

_LINE_SIGMA = 0.012  # thickness (Gaussian sigma, fraction of depth) of pleura and A-lines


@dataclass
class SyntheticClip:
    """A rendered clip with its ground truth.

    ``frames`` (T, S, S) uint8 grayscale; ``presence`` (T, 4) bool in PATTERNS order;
    ``regions`` maps each pattern to a (T, S, S) bool mask of the pixels where it is drawn
    (A-line bands, B-line columns, consolidation, effusion) in image coordinates;
    ``field_of_view`` (S, S) bool marks the imaged sector/rectangle (outside is black);
    ``pleura_mask`` (S, S) bool marks the pleural line band.
    """

    frames: np.ndarray
    presence: np.ndarray
    probe: str
    regions: dict[str, np.ndarray]
    field_of_view: np.ndarray
    pleura_mask: np.ndarray
    pleural_depth: float

    @property
    def labels(self) -> np.ndarray:
        return self.presence.any(axis=0)


@dataclass
class _Scene:
    """What the drawing steps share: the probe-space grids, breathing, the random generators,
    the image being drawn (T, D, U) and the pattern masks drawn so far (probe space)."""

    look: PatientLook
    presence: np.ndarray  # (T, 4) bool
    rng: np.random.Generator  # this clip's draws
    look_rng: np.random.Generator  # patient-level textures shared by all clips
    d: np.ndarray  # (D, 1) depth
    u: np.ndarray  # (1, U) lateral position
    phase: np.ndarray  # (T, 1, 1) breathing phase
    shift: np.ndarray  # (T, 1, 1) lateral sliding
    image: np.ndarray | None = None
    slid: np.ndarray | None = None  # (T, 1, U) pleural texture moving with the lung
    regions: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.presence.shape[0], self.d.shape[0], self.u.shape[1]

    @property
    def pleural_depth(self) -> float:
        return self.look.pleural_depth

    @property
    def below(self) -> np.ndarray:
        """(D, 1): 0 above the pleura, 1 below."""
        pd0 = self.look.pleural_depth
        return smoothstep(self.d, pd0, pd0 + 0.01)


@dataclass
class _NotAerated:
    """Where the lung surface is not aerated in this clip: the effusion and consolidation."""

    fluid_depth: np.ndarray  # (T, 1, U) fluid thickness below the pleura (0 without effusion)
    blocked: list[tuple[float, float]]  # lateral intervals taken by effusion / consolidation
    consolidation: tuple[float, float, float] | None  # (lateral low, lateral high, width)


def _start_scene(look: PatientLook, presence: np.ndarray, frame_size: int, seed: int) -> _Scene:
    T, D, U = presence.shape[0], frame_size, frame_size
    rng = np.random.default_rng([look.look_seed, seed])
    t = np.arange(T)[:, None, None]  # (T, 1, 1)
    # Breathing drives sliding, bronchogram motion and the effusion's lung surface.
    phase = 2 * math.pi * t / look.breath_period + rng.uniform(0, 2 * math.pi)
    return _Scene(
        look=look, presence=presence, rng=rng, look_rng=np.random.default_rng(look.look_seed),
        d=((np.arange(D) + 0.5) / D)[:, None], u=((np.arange(U) + 0.5) / U)[None, :],
        phase=phase, shift=look.slide_amplitude * np.sin(phase),
    )


def _draw_chest_wall_and_lung(scene: _Scene) -> None:
    """Static chest wall above the pleura, reverberation haze below, the sliding pleural line."""
    look, d, u = scene.look, scene.d, scene.u
    T, D, U = scene.shape
    below = scene.below
    tissue = tissue_above_pleura(scene.look_rng, look, d, u)
    haze = look.haze_level * (1 + 0.15 * smooth_noise(scene.rng, (D, U), (3.0, 8.0)))
    scene.image = np.broadcast_to((1 - below) * tissue + below * haze, (T, D, U)).copy()
    pleura_texture = Texture1D(scene.look_rng, 0.015)
    scene.slid = pleura_texture(u - scene.shift)
    scene.image += 0.9 * band(d, look.pleural_depth, _LINE_SIGMA) * (0.72 + 0.28 * np.tanh(scene.slid))


def _place_effusion_and_consolidation(scene: _Scene) -> _NotAerated:
    """Where the effusion and the consolidation go, per clip (drawn later, after the lines)."""
    rng, u, presence = scene.rng, scene.u, scene.presence
    T, _, U = scene.shape
    blocked: list[tuple[float, float]] = []
    has_a, has_b, has_c, has_e = presence.any(axis=0)
    crowded = has_a or has_b  # keep room for aerated lung when A- or B-lines must show
    if has_e:
        side = int(rng.choice([-1, 1]))
        extent = float(rng.uniform(0.35, 0.6) if crowded else rng.uniform(0.5, 1.0))
        edge_distance = u if side < 0 else 1 - u
        thickness = rng.uniform(0.2, 0.32) * (1 - smoothstep(edge_distance, 0.55 * extent, extent))
        breathing = 1 + 0.12 * np.sin(scene.phase + rng.uniform(0, 2 * math.pi))
        visible = presence[:, :, None, None].astype(float)  # (T, 4, 1, 1)
        fluid_depth = thickness * breathing * visible[:, EFFUSION]  # (T, 1, U)
        blocked.append((0.0, extent) if side < 0 else (1 - extent, 1.0))
    else:
        fluid_depth = np.zeros((T, 1, U))
    consolidation = None
    if has_c:
        width = float(rng.uniform(0.25, 0.4) if crowded else rng.uniform(0.3, 0.55))
        if has_e and rng.random() < 0.7:  # compressive atelectasis under the fluid
            lo_e, hi_e = blocked[0]
            centre = float(np.clip((lo_e + hi_e) / 2, 0.1 + width / 2, 0.9 - width / 2))
        else:
            free = lateral_intervals_free(blocked, margin=0.08 + width / 2)
            centre = float(sample_in_intervals(rng, free, 1)[0]) if free else 0.5
        consolidation = (centre - width / 2, centre + width / 2, width)
        blocked.append(consolidation[:2])
    return _NotAerated(fluid_depth, blocked, consolidation)


def _lateral_blocked(scene: _Scene, taken: _NotAerated) -> np.ndarray:
    """(T, 1, U) bool: lateral positions where effusion or consolidation hides the A-lines."""
    T, _, U = scene.shape
    has_c, has_e = scene.presence.any(axis=0)[[CONSOLIDATION, EFFUSION]]
    blocked = np.zeros((T, 1, U), dtype=bool)
    if has_e:
        blocked |= taken.fluid_depth > 0.01
    if has_c:
        c_lo, c_hi, _ = taken.consolidation
        blocked |= (scene.u >= c_lo) & (scene.u <= c_hi) & scene.presence[:, CONSOLIDATION, None, None]
    return blocked


def _draw_b_lines(scene: _Scene, taken: _NotAerated, confluent: bool) -> np.ndarray:
    """Laser-like rays from the pleura to the bottom, moving with sliding; returns their
    brightness across the probe (T, 1, U), which erases the A-lines they cross."""
    rng, d, u, presence = scene.rng, scene.d, scene.u, scene.presence
    T, D, U = scene.shape
    b_profile = np.zeros((T, 1, U))  # brightness of the B-lines across the probe
    b_unit = np.zeros((T, 1, U))  # the same with every line at amplitude 1 (for the truth mask)
    if not presence[:, B_LINES].any():
        scene.regions["b_lines"] = np.zeros((T, D, U), dtype=bool)
        return b_profile
    if confluent:
        n_lines, sigmas, amps = int(rng.integers(1, 3)), rng.uniform(0.05, 0.08, 2), rng.uniform(0.5, 0.7, 2)
    else:
        n_lines, sigmas, amps = int(rng.integers(1, 5)), rng.uniform(0.014, 0.022, 4), rng.uniform(0.55, 0.85, 4)
    centres = sample_in_intervals(rng, lateral_intervals_free(taken.blocked), n_lines)
    on_b = presence[:, B_LINES]
    for i in range(n_lines):
        # line 0 shows in every B-line frame; the others in a sub-window, so lines come and go
        own = on_b if i == 0 else on_b & frame_window(rng, T, rng.random() < 0.5)
        wobble = 0.01 * np.sin(scene.phase * 1.7 + rng.uniform(0, 2 * math.pi))
        lateral = band(u, centres[i] + scene.shift + wobble, sigmas[i])
        b_profile = np.maximum(b_profile, amps[i] * lateral * own[:, None, None])
        b_unit = np.maximum(b_unit, lateral * own[:, None, None])
    striation = 1 + 0.1 * smooth_noise(rng, (D, 1), (4.0, 0.0))
    scene.image += scene.below * (1 - 0.15 * d) * striation * b_profile
    scene.regions["b_lines"] = (b_unit > 0.5) & (d > scene.pleural_depth + 0.02)
    return b_profile


def _draw_a_lines(scene: _Scene, b_profile: np.ndarray, lateral_blocked: np.ndarray) -> None:
    """Reverberations at 2x, 3x ... the pleural depth, fading with depth (drawn even when absent:
    their amplitudes are always drawn from the generator)."""
    rng, d, pd0 = scene.rng, scene.d, scene.pleural_depth
    multiples = np.arange(2, int(0.97 / pd0) + 1)
    a_amplitude = rng.uniform(0.45, 0.7) * rng.uniform(0.55, 0.75) ** (multiples - 2)
    a_rows = sum(a * band(d, k * pd0, _LINE_SIGMA * 1.2) for a, k in zip(a_amplitude, multiples))
    b_erase = np.clip(b_profile / 0.4, 0, 1)  # B-lines erase A-lines where they cross
    a_gate = scene.presence[:, A_LINES, None, None] * ~lateral_blocked * (1 - b_erase)
    scene.image += a_rows * (0.75 + 0.25 * np.tanh(scene.slid)) * a_gate
    a_band = sum(np.abs(d - k * pd0) < 1.5 * _LINE_SIGMA for k in multiples)
    scene.regions["a_lines"] = a_band.astype(bool) & (a_gate > 0.5)


def _draw_effusion(scene: _Scene, fluid_depth: np.ndarray) -> None:
    """Anechoic wedge under the pleura, bright moving lung surface below it."""
    d, pd0 = scene.d, scene.pleural_depth
    fluid_top = pd0 + 1.5 * _LINE_SIGMA
    fluid_bottom = pd0 + fluid_depth  # (T, 1, U)
    effusion = (d > fluid_top) & (d < fluid_bottom) & (fluid_depth > 0.01)
    scene.image = np.where(effusion, 0.02, scene.image)
    scene.image += 0.7 * band(d, fluid_bottom, _LINE_SIGMA) * (fluid_depth > 0.01)
    # truth mask: the fluid's interior, clear of the bright lines that bound it
    scene.regions["pleural_effusion"] = effusion & (d > pd0 + 3 * _LINE_SIGMA) & (d < fluid_bottom - 2 * _LINE_SIGMA)


def _draw_consolidation(scene: _Scene, taken: _NotAerated) -> None:
    """Hepatised tissue with a shred deep border and moving air bronchograms."""
    rng, d, u, presence, pd0 = scene.rng, scene.d, scene.u, scene.presence, scene.pleural_depth
    if taken.consolidation is None:
        scene.regions["consolidation"] = np.zeros(scene.shape, dtype=bool)
        return
    c_lo, c_hi, width = taken.consolidation
    D, U = scene.shape[1:]
    x = np.clip((u - (c_lo + c_hi) / 2) / ((c_hi - c_lo) / 2), -1, 1)
    envelope = np.sqrt(np.clip(1 - x ** 4, 0, 1))
    shred = 1 + 0.25 * Texture1D(rng, 0.02)(u)
    c_top = pd0 + 1.5 * _LINE_SIGMA + taken.fluid_depth  # under the fluid when both show
    c_bottom = np.minimum(c_top + rng.uniform(0.2, 0.32) * envelope * shred, 0.97)
    consolidation = (d > c_top) & (d < c_bottom) & (envelope > 0.05) & presence[:, CONSOLIDATION, None, None]
    granular = 1 + 0.3 * smooth_noise(rng, (D, U), (1.0, 1.5))
    tissue_c = rng.uniform(0.4, 0.55) * granular
    bronchi = _air_bronchograms(scene, c_lo, c_hi, width)
    scene.image = np.where(consolidation, np.maximum(tissue_c, bronchi), scene.image)
    border = band(d, c_bottom, _LINE_SIGMA) * (envelope > 0.05) * presence[:, CONSOLIDATION, None, None]
    scene.image += 0.6 * border
    scene.regions["consolidation"] = consolidation


def _air_bronchograms(scene: _Scene, c_lo: float, c_hi: float, width: float) -> np.ndarray:
    """Brightness (T, D, U) of branching bronchograms (trunk + two branches per tree, plus
    scattered dots) that move a little with breathing (dynamic air bronchograms)."""
    rng, pd0 = scene.rng, scene.pleural_depth
    segments = []
    for _ in range(int(rng.integers(1, 3))):
        root = np.array([pd0 + 0.04, rng.uniform(c_lo + 0.2 * width, c_hi - 0.2 * width)])
        angle, length = rng.uniform(-0.4, 0.4), rng.uniform(0.05, 0.09)
        fork = root + length * np.array([math.cos(angle), math.sin(angle)])
        segments.append((root, fork))
        for spread in (-0.5, 0.5):
            tip = fork + 0.7 * length * np.array([math.cos(angle + spread), math.sin(angle + spread)])
            segments.append((fork, tip))
    for _ in range(int(rng.integers(3, 8))):
        dot = np.array([rng.uniform(pd0 + 0.04, pd0 + 0.2), rng.uniform(c_lo, c_hi)])
        segments.append((dot, dot))
    ends = np.array(segments)[:, :, :, None, None, None]  # (n, start/end, depth/lateral, 1, 1, 1)
    moved_d = scene.d - 0.006 * np.sin(scene.phase)  # (T, D, 1)
    moved_u = scene.u - 0.012 * np.sin(scene.phase + 1.0)  # (T, 1, U)
    distance = segment_distance(moved_d, moved_u, ends[:, 0, 0], ends[:, 0, 1], ends[:, 1, 0], ends[:, 1, 1])
    return 0.85 * np.exp(-0.5 * (distance / 0.008) ** 2).max(axis=0)


def _draw_rib_shadow(scene: _Scene) -> np.ndarray:
    """A rib at one edge (if the patient has one in view) and its acoustic shadow; returns the
    shadowed lateral positions (1, U), where no pattern can be seen."""
    d, u, pd0 = scene.d, scene.u, scene.pleural_depth
    shadow = np.zeros((1, scene.shape[2]), dtype=bool)
    if scene.look.rib_side:
        rib_width = 0.1
        shadow = (u < rib_width) if scene.look.rib_side < 0 else (u > 1 - rib_width)
        rib_top = pd0 - 0.03
        scene.image = np.where(shadow & (d > rib_top), scene.image * 0.08, scene.image)
        scene.image += 0.8 * band(d, rib_top, 0.01) * shadow
    return shadow


def _apply_display(scene: _Scene) -> None:
    """Depth attenuation, speckle, gain, and clipping to the displayable range [0, 1]."""
    look, d = scene.look, scene.d
    scene.image *= look.gain * (1 - look.attenuation * d)
    static_weight = np.where(d < scene.pleural_depth, 0.9, 0.3)
    scene.image *= rayleigh_speckle(scene.rng, scene.shape, static_weight)
    scene.image = np.clip(scene.image, 0.0, 1.0)


def _scan_convert(scene: _Scene, frame_size: int, shadow: np.ndarray) -> SyntheticClip:
    """Map the probe-space image and masks onto 8-bit frames of the probe's geometry."""
    T, D, U = scene.shape
    d, pd0 = scene.d, scene.pleural_depth
    geometry = scan_geometry(scene.look, frame_size, D, U)
    frames = np.rint(geometry.image(scene.image.astype(np.float32)) * 255).astype(np.uint8)
    pattern_masks = {
        name: geometry.mask(np.broadcast_to(scene.regions[name], (T, D, U)) & ~shadow) for name in PATTERNS
    }
    pleura = np.broadcast_to(np.abs(d - pd0) < _LINE_SIGMA, (D, U)) & ~shadow
    return SyntheticClip(frames=frames, presence=scene.presence.copy(), probe=scene.look.probe,
                         regions=pattern_masks, field_of_view=geometry.inside.copy(),
                         pleura_mask=geometry.mask(pleura), pleural_depth=pd0)


def render_clip(look: PatientLook, presence: np.ndarray, frame_size: int = 96, seed: int = 0,
                confluent_b_lines: bool = False) -> SyntheticClip:
    """Render one clip whose patterns follow ``presence`` (T, 4) frame by frame.

    Vectorised over frames: each step is a numpy expression over (T, D, U) arrays. The steps
    run in this order because each one draws from the clip's generator.
    """
    presence = np.asarray(presence, dtype=bool)
    if presence.ndim != 2 or presence.shape[1] != len(PATTERNS):
        raise ConfigError(f"presence must have shape (T, {len(PATTERNS)}), got {presence.shape}")
    if frame_size < 16:
        raise ConfigError(f"frame_size must be >= 16 pixels (got {frame_size})")
    scene = _start_scene(look, presence, frame_size, seed)
    _draw_chest_wall_and_lung(scene)
    taken = _place_effusion_and_consolidation(scene)
    lateral_blocked = _lateral_blocked(scene, taken)
    b_profile = _draw_b_lines(scene, taken, confluent_b_lines)
    _draw_a_lines(scene, b_profile, lateral_blocked)
    _draw_effusion(scene, taken.fluid_depth)
    _draw_consolidation(scene, taken)
    shadow = _draw_rib_shadow(scene)
    _apply_display(scene)
    return _scan_convert(scene, frame_size, shadow)


def synthesize_clip(seed: int = 0, num_frames: int = 16, frame_size: int = 96, probe: str = "mixed",
                    patterns: Mapping[str, bool | Sequence[bool] | np.ndarray] | None = None
                    ) -> SyntheticClip:
    """One synthetic clip, fully determined by ``seed`` (for notebooks, demos and tests).

    ``patterns=None`` draws the patterns like the dataset does (from a random phenotype).
    Otherwise it maps pattern name -> True (present in every frame), False, or a (T,) bool
    sequence of per-frame presence; patterns not named are absent.
    """
    rng = np.random.default_rng([seed, 1])
    look = sample_patient_look(rng, probe)
    if patterns is None:
        presence, confluent = sample_presence(rng, look, num_frames)
    else:
        unknown = set(patterns) - set(PATTERNS)
        if unknown:
            raise ConfigError(f"unknown pattern(s) {sorted(unknown)}: use names from {PATTERNS}")
        presence = np.zeros((num_frames, len(PATTERNS)), dtype=bool)
        for name, value in patterns.items():
            value = np.asarray(value, dtype=bool)
            if value.ndim and value.shape != (num_frames,):
                raise ConfigError(f"presence of {name!r} must be a bool or have shape ({num_frames},)")
            presence[:, PATTERNS.index(name)] = value
        confluent = False
    return render_clip(look, presence, frame_size, seed=seed, confluent_b_lines=confluent)
