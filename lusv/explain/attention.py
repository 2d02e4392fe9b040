"""Pattern attention over time: where in a clip does a model look for each pattern?

Models with attention pooling return weights of shape (N, P, H, T): per clip, per pattern
(P = 4 for LUV-Net; P = 1 for USVN's single shared pooling), per head, per frame. Weights
are 0 on padded frames and sum to 1 over the real frames of a clip.

With a per-frame ground truth (the synthetic dataset has one, ``lusv.data.sources.synthetic``) we can ask
whether a pattern's attention falls on the frames that show the pattern. Two scores, both
computed per clip and only over the clip's real frames (padding excluded):

* **attention AUC**: the ROC AUC of the frame attention as a score for "pattern present in
  this frame" - the probability that a random frame showing the pattern gets more attention
  than a random frame without it (ties count one half). 1 = every present frame outranks every
  absent one, 0.5 = chance (e.g. uniform attention), 0 = attention avoids the pattern.
* **pointing game**: does the most-attended frame show the pattern? A hit is 1 or 0; when
  several frames tie for the maximum, the hit is the fraction of tied frames that show the
  pattern (the expected hit under random tie-breaking). Its **chance rate** is the fraction of
  real frames that show the pattern: what a frame picked at random would score.

* **peak**: the largest frame weight times the number of real frames: 1 = uniform attention
  (nothing to read into the two scores above: tiny differences decide them), the number of
  frames = all attention on one frame.

A clip is scored for a pattern only when it is labelled positive for that pattern and its
real frames include some with and some without the pattern (otherwise neither score is
defined: there is nothing to rank).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from lusv.data.patterns import DISPLAY_NAMES, NUM_PATTERNS, PATTERNS
from lusv.errors import ConfigError

log = logging.getLogger(__name__)

REDUCTIONS = ("mean", "max")


def _as_numpy(array) -> np.ndarray:
    """numpy view of a numpy array, nested list or torch tensor (detached, on the CPU)."""
    if hasattr(array, "detach"):
        array = array.detach().float().cpu().numpy()
    return np.asarray(array, dtype=float)


def frame_attention(attention, reduce: str = "mean") -> np.ndarray:
    """Per-frame attention (N, P, T) from model attention (N, P, H, T), combining the heads.

    ``reduce="mean"`` averages the heads (the result still sums to 1 over real frames);
    ``"max"`` keeps each frame's largest head weight. An (N, P, T) input is returned as is.
    Accepts numpy arrays and torch tensors.
    """
    if reduce not in REDUCTIONS:
        raise ConfigError(f"unknown reduce={reduce!r}: use one of {REDUCTIONS}")
    weights = _as_numpy(attention)
    if weights.ndim == 3:
        return weights
    if weights.ndim != 4:
        raise ConfigError(f"attention must have shape (N, P, H, T) or (N, P, T), got {weights.shape}")
    return weights.mean(axis=2) if reduce == "mean" else weights.max(axis=2)


def _checked_inputs(attention, lengths, frame_truth, clip_labels, reduce):
    weights = frame_attention(attention, reduce)  # (N, P, T)
    n_clips, n_sets, n_frames = weights.shape
    if n_sets == 1:  # one attention shared by all patterns (USVN): score it against each
        weights = np.repeat(weights, NUM_PATTERNS, axis=1)
    elif n_sets != NUM_PATTERNS:
        raise ConfigError(f"attention has {n_sets} pattern sets; expected {NUM_PATTERNS} (or 1 shared)")
    truth = _as_numpy(frame_truth)
    if truth.shape != (n_clips, n_frames, NUM_PATTERNS):
        raise ConfigError(
            f"frame_truth must have shape (N, T, {NUM_PATTERNS}) = {(n_clips, n_frames, NUM_PATTERNS)} to match "
            f"the attention, got {truth.shape}: resample it like the clip cache "
            "(lusv.data.sources.synthetic.frame_truth_array(truth, clip_ids, num_frames))")
    labels = _as_numpy(clip_labels)
    if labels.shape != (n_clips, NUM_PATTERNS):
        raise ConfigError(f"clip_labels must have shape {(n_clips, NUM_PATTERNS)}, got {labels.shape}")
    if lengths is None:
        lengths = np.full(n_clips, n_frames)
    lengths = _as_numpy(lengths).astype(int)
    if lengths.shape != (n_clips,) or (lengths < 1).any() or (lengths > n_frames).any():
        raise ConfigError(f"lengths must be {n_clips} integers in 1..{n_frames}, got {lengths}")
    return weights, lengths, truth > 0.5, labels


def attention_scores_per_clip(attention, lengths, frame_truth, clip_labels,
                              clip_ids: Sequence[str] | None = None, reduce: str = "mean") -> pd.DataFrame:
    """One row per scored (clip, pattern): attention AUC, pointing-game hit and its chance rate.

    ``attention`` (N, P, H, T) or (N, P, T) with P = 4 (or 1: shared, scored against every
    pattern); ``lengths`` (N,) real frames per clip (None = all T); ``frame_truth`` (N, T, 4)
    0/1 presence per frame; ``clip_labels`` (N, 4) 0/1/NaN. See the module docstring for the
    definitions and which clips are scored. Columns: clip_id, pattern, n_frames, n_present,
    attention_auc, pointing_hit, pointing_chance, peak.
    """
    weights, lengths, truth, labels = _checked_inputs(attention, lengths, frame_truth, clip_labels, reduce)
    if clip_ids is None:
        clip_ids = [str(i) for i in range(len(weights))]
    elif len(clip_ids) != len(weights):
        raise ConfigError(f"{len(clip_ids)} clip_ids for {len(weights)} clips")
    rows = []
    for i, length in enumerate(lengths):
        for p, name in enumerate(PATTERNS):
            if labels[i, p] != 1:  # negative or missing label
                continue
            present = truth[i, :length, p]
            n_present = int(present.sum())
            if n_present in (0, length):  # nothing to rank
                continue
            scores = weights[i, p, :length]
            top = np.isclose(scores, scores.max())
            rows.append({
                "clip_id": clip_ids[i],
                "pattern": name,
                "n_frames": int(length),
                "n_present": n_present,
                "attention_auc": float(roc_auc_score(present, scores)),
                "pointing_hit": float(present[top].mean()),
                "pointing_chance": n_present / length,
                "peak": float(scores.max() * length),
            })
    columns = ["clip_id", "pattern", "n_frames", "n_present", "attention_auc", "pointing_hit", "pointing_chance",
               "peak"]
    return pd.DataFrame(rows, columns=columns)


def _wilcoxon_vs_half(aucs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of per-clip AUCs against 0.5 (NaN if undefined)."""
    differences = aucs - 0.5
    if len(differences) < 2 or np.allclose(differences, 0):
        return float("nan")
    return float(stats.wilcoxon(differences, zero_method="zsplit").pvalue)


def score_attention_against_truth(attention, lengths, frame_truth, clip_labels,
                                  reduce: str = "mean") -> pd.DataFrame:
    """Per pattern: does attention fall on the frames that show the pattern?

    Inputs as in :func:`attention_scores_per_clip`. One row per pattern (PATTERNS order):

    * ``n_positive``: clips labelled positive; ``n_scored``: of these, clips with frames both
      with and without the pattern (the only ones where the scores are defined);
    * ``attention_auc``: mean over scored clips of the per-clip attention AUC (0.5 = chance),
      with ``attention_auc_sd`` and ``auc_p_value`` (Wilcoxon signed-rank test of the per-clip
      AUCs against 0.5, two-sided);
    * ``pointing_game``: fraction of scored clips whose most-attended frame shows the pattern;
      ``pointing_chance``: mean fraction of real frames showing it (a random frame's score);
      ``pointing_lift`` = pointing_game - pointing_chance;
    * ``peak``: mean over scored clips of the largest frame weight x real frames (1 = uniform).

    Scores are NaN for a pattern with no scored clip.
    """
    per_clip = attention_scores_per_clip(attention, lengths, frame_truth, clip_labels, reduce=reduce)
    labels = _as_numpy(clip_labels)
    rows = []
    for p, name in enumerate(PATTERNS):
        scored = per_clip[per_clip.pattern == name]
        aucs = scored.attention_auc.to_numpy()
        game = scored.pointing_hit.mean() if len(scored) else float("nan")
        chance = scored.pointing_chance.mean() if len(scored) else float("nan")
        rows.append({
            "pattern": name,
            "display_name": DISPLAY_NAMES[name],
            "n_positive": int((labels[:, p] == 1).sum()),
            "n_scored": len(scored),
            "attention_auc": float(aucs.mean()) if len(aucs) else float("nan"),
            "attention_auc_sd": float(aucs.std(ddof=1)) if len(aucs) > 1 else float("nan"),
            "auc_p_value": _wilcoxon_vs_half(aucs),
            "pointing_game": float(game),
            "pointing_chance": float(chance),
            "pointing_lift": float(game - chance),
            "peak": float(scored.peak.mean()) if len(scored) else float("nan"),
        })
    table = pd.DataFrame(rows)
    if (table.n_scored == 0).any():
        log.info("no clip with frames both with and without %s: its attention scores are NaN",
                 ", ".join(table.display_name[table.n_scored == 0]))
    return table


# ----------------------------------------------------------------------------- figures


def _present_spans(present: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive True frames as (first, last) pairs."""
    edges = np.diff(np.concatenate([[0], present.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def plot_attention_over_time(attention, frames=None, frame_truth=None, probabilities=None,
                             length: int | None = None, title: str | None = None, max_thumbnails: int = 8):
    """Attention curves of one clip: one panel per pattern, frames on the x axis.

    ``attention`` (P, H, T) or (P, T), P = 4 (or 1 for a shared attention); thin lines are
    single heads, the thick line their mean, the dashed line uniform attention (1 / length).
    ``frame_truth`` (T, 4) 0/1 shades the frames where a pattern is present; ``probabilities``
    (4,) go into the panel titles; ``frames`` (T, H, W[, C]) uint8 adds a strip of up to
    ``max_thumbnails`` evenly spaced frames on top; ``length`` limits the plot to the real
    frames (default: all T). Returns the Figure (nothing is saved). Long because a figure is
    one sequence of layout and drawing calls on shared axes; split up it would only pass them around.
    """
    import matplotlib.pyplot as plt

    weights = _as_numpy(attention)
    if weights.ndim == 2:
        weights = weights[:, None, :]
    if weights.ndim != 3 or weights.shape[0] not in (1, NUM_PATTERNS):
        raise ConfigError(f"attention of one clip must be (P, H, T) or (P, T) with P in (1, 4), got {weights.shape}")
    n_sets, _, n_frames = weights.shape
    length = n_frames if length is None else int(length)
    if not 1 <= length <= n_frames:
        raise ConfigError(f"length must be in 1..{n_frames}, got {length}")
    truth = None if frame_truth is None else _as_numpy(frame_truth)[:length] > 0.5
    names = list(PATTERNS) if n_sets == NUM_PATTERNS else ["shared"]

    has_strip = frames is not None
    fig = plt.figure(figsize=(8, 1.5 * n_sets + (1.6 if has_strip else 0) + 0.5))
    grid = fig.add_gridspec(n_sets + has_strip, 1, height_ratios=[1.4] * has_strip + [1] * n_sets, hspace=0.6)
    if has_strip:
        frames = np.asarray(frames)[:length]
        shown = np.unique(np.linspace(0, length - 1, min(max_thumbnails, length)).round().astype(int))
        strip = grid[0].subgridspec(1, len(shown), wspace=0.05)
        for k, index in enumerate(shown):
            ax = fig.add_subplot(strip[0, k])
            image = frames[index]
            ax.imshow(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image,
                      cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{index}", fontsize=7)
    x = np.arange(length)
    first_curve = None
    for row, name in enumerate(names):
        ax = fig.add_subplot(grid[row + has_strip], sharex=first_curve)
        first_curve = first_curve or ax
        heads = weights[row, :, :length]
        ax.plot(x, heads.T, color="tab:blue", alpha=0.25, linewidth=0.8)
        ax.plot(x, heads.mean(axis=0), color="tab:blue", linewidth=2, label="mean of heads")
        ax.axhline(1 / length, color="0.4", linestyle="--", linewidth=0.8, label="uniform")
        if truth is not None:
            columns = range(NUM_PATTERNS) if name == "shared" else [PATTERNS.index(name)]
            for column in columns:
                for first, last in _present_spans(truth[:, column]):
                    ax.axvspan(first - 0.5, last + 0.5, color="tab:green", alpha=0.15 if name != "shared" else 0.06)
        label = "All patterns (shared attention)" if name == "shared" else DISPLAY_NAMES[name]
        if probabilities is not None and name != "shared":
            label += f"   p = {float(_as_numpy(probabilities)[PATTERNS.index(name)]):.2f}"
        ax.set_title(label, fontsize=9, loc="left")
        ax.set_ylabel("attention", fontsize=8)
        ax.set_xlim(-0.5, length - 0.5)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
    ax.set_xlabel("frame")
    handles, labels = ax.get_legend_handles_labels()
    if truth is not None:
        handles.append(plt.Rectangle((0, 0), 1, 1, color="tab:green", alpha=0.15))
        labels.append("pattern present (truth)")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_attention_summary(score_df: pd.DataFrame):
    """Two panels from :func:`score_attention_against_truth`: mean attention AUC per pattern
    (95% normal-approximation error bars, 0.5 = chance) and pointing game vs its chance rate."""
    import matplotlib.pyplot as plt

    missing = [c for c in ("pattern", "attention_auc", "pointing_game", "pointing_chance", "n_scored")
               if c not in score_df.columns]
    if missing:
        raise ConfigError(f"score table lacks column(s) {missing}: pass the output of score_attention_against_truth")
    names = [DISPLAY_NAMES.get(p, p) for p in score_df.pattern]
    x = np.arange(len(score_df))
    n = score_df.n_scored.to_numpy(dtype=float)
    sd = score_df.get("attention_auc_sd", pd.Series(np.nan, index=score_df.index)).to_numpy(dtype=float)
    half_width = np.where(n > 1, 1.96 * sd / np.sqrt(np.maximum(n, 1)), 0.0)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    auc = score_df.attention_auc.fillna(0).to_numpy(dtype=float)
    half_width = np.nan_to_num(half_width)  # an AUC lies in [0, 1]: so do its error bars
    left.bar(x, auc, yerr=[np.minimum(half_width, auc), np.minimum(half_width, 1 - auc)], capsize=3, color="tab:blue")
    left.axhline(0.5, color="0.3", linestyle="--", linewidth=1, label="chance (0.5)")
    left.set_ylim(0, 1.3)  # room above the bars for the legend
    left.set_title("Attention vs per-frame truth (mean AUC)", fontsize=10)
    left.set_ylabel("attention AUC")
    width = 0.38
    right.bar(x - width / 2, score_df.pointing_game.fillna(0), width, label="most-attended frame shows it",
              color="tab:blue")
    right.bar(x + width / 2, score_df.pointing_chance.fillna(0), width, label="chance (random frame)", color="0.7")
    right.set_ylim(0, 1.3)
    right.set_title("Pointing game", fontsize=10)
    right.set_ylabel("fraction of clips")
    for ax in (left, right):
        ax.set_xticks(x, [f"{name}\nn={int(k)}" for name, k in zip(names, n)], fontsize=8)
        ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    return fig


def appendix_b_curves(attention, length: int | None = None) -> np.ndarray:
    """The paper's Appendix B curves of one clip: attention summed over heads, min-max
    normalised over the clip's real frames -> (P, length) in [0, 1].

    ``attention`` is (P, H, T) (or (P, T)); a pattern whose attention is the same on every frame
    gets a flat 0 curve (there is no most-attended frame to show).
    """
    weights = _as_numpy(attention)
    if weights.ndim == 2:
        weights = weights[:, None, :]
    if weights.ndim != 3:
        raise ConfigError(f"attention of one clip must be (P, H, T) or (P, T), got {weights.shape}")
    length = weights.shape[-1] if length is None else int(length)
    if not 1 <= length <= weights.shape[-1]:
        raise ConfigError(f"length must be in 1..{weights.shape[-1]}, got {length}")
    summed = weights[:, :, :length].sum(axis=1)
    low, high = summed.min(axis=1, keepdims=True), summed.max(axis=1, keepdims=True)
    span = high - low
    return np.divide(summed - low, span, out=np.zeros_like(summed), where=span > 0)


def top_frames(curves: np.ndarray, k: int = 3) -> np.ndarray:
    """Indices (P, min(k, T)) of each curve's k highest frames, highest first; ties go to the
    earlier frame (a stable sort)."""
    curves = np.asarray(curves, dtype=float)
    order = np.argsort(-curves, axis=1, kind="stable")
    return order[:, : min(k, curves.shape[1])]


def plot_appendix_b(attention, frames, frame_truth=None, length: int | None = None, k: int = 3,
                    saliency=None, title: str | None = None):
    """The paper's attention figure for one clip (its Appendix B, Figure 3).

    One row per pattern: on the left the min-max normalised head-summed attention over time
    (``appendix_b_curves``), the ground truth as a dashed line when ``frame_truth`` (T, 4) is
    given, the top-``k`` frames marked and numbered by rank; on the right those frames, in rank
    order, large enough to see the pattern (titled "<rank>. frame <index>"). ``saliency`` maps a
    pattern index to (k, S, S) maps in [0, 1] (``lusv.explain.saliency.grad_cam``) drawn over the
    frames where they exceed 0.1 (an all-zero map leaves the frame as it is and says so). One legend under the rows, beside the frame axis, labelled once at the bottom. Returns the
    Figure. Long because a figure is one sequence of layout and drawing calls on shared axes.
    """
    import matplotlib.pyplot as plt

    curves = appendix_b_curves(attention, length)
    n_sets, length = curves.shape
    best = top_frames(curves, k)
    frames = np.asarray(frames)[:length]
    truth = None if frame_truth is None else _as_numpy(frame_truth)[:length] > 0.5
    names = list(PATTERNS) if n_sets == NUM_PATTERNS else ["shared"]
    k = best.shape[1]
    fig = plt.figure(figsize=(4.6 + 1.9 * k, 1.9 * n_sets + 0.7), layout="constrained")
    grid = fig.add_gridspec(n_sets, 1 + k, width_ratios=[4.2] + [1.6] * k)
    x = np.arange(length)
    first = None
    for row, name in enumerate(names):
        ax = fig.add_subplot(grid[row, 0], sharex=first)
        first = first or ax
        ax.plot(x, curves[row], color="tab:blue", linewidth=1.8, label="attention (summed over heads, min-max)")
        if truth is not None and name != "shared":
            ax.plot(x, truth[:, PATTERNS.index(name)].astype(float), color="black", linestyle="--",
                    linewidth=1, label="ground truth (pattern present)")
        ax.scatter(best[row], curves[row, best[row]], color="tab:red", zorder=3, label=f"top {k} frames (rank)")
        for rank, index in enumerate(best[row], start=1):
            ax.annotate(str(rank), (index, curves[row, index]), textcoords="offset points", xytext=(0, 5),
                        ha="center", fontsize=7, color="tab:red")
        ax.set_title("All patterns (shared attention)" if name == "shared" else DISPLAY_NAMES[name], fontsize=10,
                     loc="left")
        ax.set_xlim(-0.5, length - 0.5)
        ax.set_ylim(-0.05, 1.25)
        ax.tick_params(labelsize=7, labelbottom=row == n_sets - 1)
        for j, index in enumerate(best[row]):
            thumb = fig.add_subplot(grid[row, 1 + j])
            image = frames[index]
            thumb.imshow(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
            empty = ""
            if saliency is not None and row in saliency:  # the map where it is salient; the frame stays visible elsewhere
                heat = np.asarray(saliency[row])[j]
                thumb.imshow(np.ma.masked_less(heat, 0.1), cmap="jet", alpha=0.45, vmin=0, vmax=1)
                empty = "" if heat.max() > 0 else ", map all zero"
            thumb.set_xticks([]), thumb.set_yticks([])
            thumb.set_title(f"{j + 1}. frame {index}{empty}", fontsize=8)
    ax.set_xlabel("frame", fontsize=8)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower left", ncol=len(labels), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
