"""Where in the image: Grad-CAM maps of one pattern's logit on the frame encoder's last feature map.

The paper shows, beside its attention-over-time figure, the image regions the model attends to
on the most-attended frames. Attention pooling only says *which frames*; this room answers
*where in those frames*, with Grad-CAM (Selvaraju et al. 2017): the encoder's last spatial
feature map A (per frame, C x h x w), the gradient of the pattern's logit with respect to it,
channel weights = the gradient averaged over the map, map = ReLU(sum_c weight_c A_c), upsampled
to the frame and scaled to [0, 1] per frame (a frame whose map is all zero stays zero).

The whole clip goes through the model (the pattern's logit depends on every frame through
attention and the temporal branch); the maps of the chosen frames are returned.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lusv.data.model_input import to_model_input
from lusv.data.patterns import DISPLAY_NAMES, PATTERNS
from lusv.errors import ConfigError
from lusv.explain.attention import appendix_b_curves, plot_appendix_b, top_frames
from lusv.inference import load_trained


def _last_spatial_activation(encoder: nn.Module):
    """Forward hooks that keep the output of the last module (in execution order) giving a
    4-D map larger than 1 x 1: the encoder's last feature map, whatever the backbone."""
    kept: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1:
            kept["map"] = output

    leaves = [m for m in encoder.modules() if not list(m.children())]
    return kept, [m.register_forward_hook(keep) for m in leaves]


def grad_cam(model: nn.Module, clip: torch.Tensor, pattern: int, frames: Sequence[int],
             length: int | None = None) -> np.ndarray:
    """Grad-CAM maps (len(frames), S, S) in [0, 1] of logit ``pattern`` for one clip.

    ``clip`` is the model input of one clip, float (T, 3, S, S) (``lusv.data.model_input.to_model_input``
    of the cached uint8 clip); ``length`` its real frames. Models without a 2-D frame encoder
    (C3D, R(2+1)D, the video transformers) have no per-frame map: ``ConfigError``.
    """
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise ConfigError(f"{type(model).__name__} has no 2-D frame encoder: Grad-CAM maps are made for frame-encoder models")
    model.eval()
    kept, hooks = _last_spatial_activation(encoder)
    try:
        with torch.enable_grad():
            x = clip[None].detach().requires_grad_(False)
            lengths = None if length is None else torch.tensor([int(length)], device=clip.device)
            logit = model(x, lengths=lengths)["logits"][0, pattern]
            if "map" not in kept:
                raise ConfigError("the frame encoder has no spatial feature map larger than 1 x 1")
            activation = kept["map"]  # (T, C, h, w)
            (gradient,) = torch.autograd.grad(logit, activation)
    finally:
        for hook in hooks:
            hook.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activation).sum(dim=1, keepdim=True)).detach()  # (T, 1, h, w)
    cam = F.interpolate(cam[list(frames)], size=clip.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp(min=torch.finfo(cam.dtype).tiny)
    return (cam / peak[:, None, None]).cpu().numpy()


# ----------------------------------------------------------------------------- scoring against where the pattern is


def region_scores(saliency, mask) -> dict[str, float]:
    """How much of one map falls where the pattern is drawn.

    ``saliency`` (S, S) >= 0, ``mask`` (S, S) bool (non-empty). ``share_inside``: the map's mass
    inside the mask over its total mass; ``area_fraction``: the mask's share of the image, which
    is the expected ``share_inside`` of a random map with independent, identically distributed
    pixels (the random-map baseline) and the chance rate of the pointing game; ``pointing_hit``:
    does the map's maximum fall inside (ties: the fraction of tied pixels inside). An all-zero
    map shares nothing and points nowhere: both are 0, and ``empty_map`` says so (Grad-CAM is
    all zero where no part of the frame raises the logit).
    """
    saliency, mask = np.asarray(saliency, dtype=float), np.asarray(mask, dtype=bool)
    if saliency.shape != mask.shape:
        raise ConfigError(f"saliency {saliency.shape} and mask {mask.shape} must have the same shape")
    if not mask.any():
        raise ConfigError("the region mask is empty: nothing to score the map against")
    total = saliency.sum()
    peak = np.isclose(saliency, saliency.max()) if total > 0 else np.zeros_like(mask)
    return {
        "share_inside": float(saliency[mask].sum() / total) if total > 0 else 0.0,
        "area_fraction": float(mask.mean()),
        "pointing_hit": float(mask[peak].mean()) if peak.any() else 0.0,
        "empty_map": bool(total <= 0),
    }


def summarize_region_scores(per_frame):
    """Per pattern over the scored frames with a non-empty map (``n_frames``; all-zero maps are
    counted in ``empty_maps`` and left out, as they place no mass anywhere): mean share inside
    vs the random-map baseline (mean area fraction), their difference with a two-sided Wilcoxon
    signed-rank p-value, and the pointing game vs its chance rate. ``per_frame`` has
    columns clip_id, pattern, share_inside, area_fraction, pointing_hit (optionally empty_map;
    ``out_of_fold_saliency``)."""
    import pandas as pd
    from scipy import stats


    rows = []
    for name in PATTERNS:
        scored = per_frame[per_frame["pattern"] == name]
        empty = scored["empty_map"].astype(bool) if "empty_map" in scored else pd.Series(False, index=scored.index)
        part = scored[~empty]  # an all-zero map has no mass to place: counted, not scored as "outside"
        lift = (part["share_inside"] - part["area_fraction"]).to_numpy()
        p_value = float(stats.wilcoxon(lift, zero_method="zsplit").pvalue) if len(lift) > 1 and np.any(lift) else np.nan
        rows.append({
            "pattern": DISPLAY_NAMES[name], "n_frames": len(part), "n_clips": part["clip_id"].nunique() if len(part) else 0,
            "empty_maps": int(empty.sum()),
            "share_inside": part["share_inside"].mean(), "random_map_share": part["area_fraction"].mean(),
            "lift": lift.mean() if len(lift) else np.nan, "p_value": p_value,
            "pointing_game": part["pointing_hit"].mean(), "pointing_chance": part["area_fraction"].mean(),
        })
    return pd.DataFrame(rows)


def top_frame_maps(model: nn.Module, clip, attention, length: int, patterns: Sequence[int] = (0, 1, 2, 3),
                   k: int = 3) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The Appendix B top-``k`` frames of one clip (P, k) (``lusv.explain.attention.top_frames``) and, for
    each pattern index in ``patterns``, Grad-CAM maps (k, S, S) of those frames: what
    ``lusv.explain.attention.plot_appendix_b`` takes as ``saliency``. ``clip`` is the cached uint8 clip
    (T, S, S, 1); ``attention`` the clip's (P, H, T) (P = 1: one shared attention)."""
    frames = top_frames(appendix_b_curves(attention, length), k)
    # a copy: a window is a read-only view of the cached video, which torch will not wrap
    x = to_model_input(torch.tensor(np.asarray(clip))[None], "cpu")[0]
    maps = {p: grad_cam(model, x, p, frames[min(p, len(frames) - 1)], length) for p in patterns}
    return frames if len(frames) > 1 else np.repeat(frames, 4, axis=0), maps


def out_of_fold_saliency(prepared, key: str, attention, masks, k: int = 3, max_clips: int = 12):
    """Grad-CAM of each pattern on its top-``k`` attended frames, scored against the pattern's
    region (``region_scores``), for up to ``max_clips`` clips labelled positive per pattern.

    ``attention`` is ``lusv.evaluation.out_of_fold.out_of_fold_attention(prepared, key)``; ``masks(clip_ids)``
    returns (N, T, 4, S, S) region masks in the cache's geometry (on synthetic data
    ``lusv.data.sources.synthetic.regions.region_masks``). Each clip is explained by the fold model
    that never saw it. A top frame where the pattern is not drawn has no region and is not
    scored (``frames_without_region`` counts them). Returns (per-frame table, summary table,
    ``frames_without_region``).
    """
    import pandas as pd


    chosen = {p: [i for i in range(len(attention.clip_ids)) if attention.labels[i, p] == 1][:max_clips]
              for p in range(len(PATTERNS))}
    wanted = sorted({i for picks in chosen.values() for i in picks})
    region = dict(zip(wanted, masks([attention.clip_ids[i] for i in wanted]))) if wanted else {}
    model_of = _FoldModels(prepared, key, attention)
    cache, rows, missing = prepared.cache(), [], 0
    for p, picks in chosen.items():
        for i in picks:
            clip_id, length = attention.clip_ids[i], int(attention.lengths[i])
            frames, maps = top_frame_maps(model_of(clip_id), cache.load(clip_id)[0], attention.attention[i], length, [p], k)
            for rank, (frame, saliency_map) in enumerate(zip(frames[p], maps[p]), start=1):
                mask = region[i][frame, p]
                if not mask.any():
                    missing += 1
                    continue
                rows.append({"clip_id": clip_id, "pattern": PATTERNS[p], "frame": int(frame), "rank": rank,
                             **region_scores(saliency_map, mask)})
    per_frame = pd.DataFrame(rows, columns=["clip_id", "pattern", "frame", "rank", "share_inside", "area_fraction",
                                            "pointing_hit", "empty_map"])
    return per_frame, summarize_region_scores(per_frame), missing


class _FoldModels:
    """The fold model that never saw a clip (the one that predicted it out of fold: its test
    fold's model; a window's is its video's), loaded once per fold."""

    def __init__(self, prepared, key: str, attention):
        self.prepared, self.key, self.models = prepared, key, {}
        self.folds = dict(zip(attention.clip_ids, attention.model_folds))

    def __call__(self, clip_id: str) -> nn.Module:
        fold = int(self.folds[clip_id])
        if fold not in self.models:
            self.models[fold] = load_trained(self.prepared.run_dir / "runs" / f"{self.key}-fold{fold}")
        return self.models[fold]


def example_clips(labels: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` clips to show: those labelled with the most patterns first (ties in
    order), so that the figures have curves to show for several patterns."""
    positives = np.nan_to_num(np.asarray(labels, dtype=float)).sum(axis=1)
    return [int(i) for i in np.argsort(-positives, kind="stable")[:n]]


def appendix_b_figure(prepared, key: str, attention, index: int, frame_truth=None, k: int = 3):
    """The paper's Appendix B figure of clip ``index`` of ``attention`` (``out_of_fold_attention``)
    with each pattern's Grad-CAM maps on its top-``k`` frames, explained by the fold model that
    never saw the clip; ``frame_truth`` (N, T, 4) adds the dashed ground truth."""
    clip_id, length = attention.clip_ids[index], int(attention.lengths[index])
    clip, _ = prepared.cache().load(clip_id)
    weights = attention.attention[index]
    _, maps = top_frame_maps(_FoldModels(prepared, key, attention)(clip_id), clip, weights, length, range(len(weights)), k)
    return plot_appendix_b(weights, clip[..., 0], None if frame_truth is None else frame_truth[index], length, k,
                           saliency=maps, title=f"{clip_id} (fold model {key} that never saw it)")
