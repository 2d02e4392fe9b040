"""One video file judged by a trained run: ``lusv predict``.

``predict_clip(video, checkpoint)`` sends the video through exactly the preparation the training
data went through (``lusv.data.video.read_clip`` + ``prepare_clip`` at the run's T and S; under
the windows policy every window of it), so a user's own video is judged the way the
cross-validated model was, and writes the paper's Appendix B attention figure of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lusv.data.patterns import DISPLAY_NAMES, PATTERNS
from lusv.data.video import prepare_clip, read_clip, resample_indices
from lusv.data.windows import pad_window, window_starts
from lusv.errors import CheckpointError, ConfigError
from lusv.explain.attention import plot_appendix_b
from lusv.explain.saliency import top_frame_maps
from lusv.inference import load_trained, predict
from lusv.infra.io import atomic_path


@dataclass
class ClipPrediction:
    probabilities: dict[str, float]
    attention: object | None  # (4 or 1, H, T) numpy array, None for models without attention
    length: int
    plot_path: Path | None
    plot_note: str = ""  # why there is no plot, for a model without attention
    plot_error: str = ""  # why the plot could not be written (the probabilities still stand)
    window_probabilities: object | None = None  # clip_policy=windows: (W, 4) numpy array, one row per window
    plotted_window: int = 0  # the window the attention plot shows (the one with the highest summed probability)


def predict_clip(
    clip_path: str | os.PathLike, checkpoint: str | os.PathLike, plot_path: str | os.PathLike | None = None
) -> ClipPrediction:
    """Probabilities per pattern for one video file; writes an attention plot when the model has attention.

    The plot is the paper's Appendix B figure (``lusv.explain.attention.plot_appendix_b``) with the
    Grad-CAM maps of each pattern's top frames, written to ``plot_path`` or, by default,
    ``./<clip file name>.attention.png`` in the current folder.

    ``checkpoint`` is a run's ``best.pt`` or the run folder. Raises ``VideoError`` for a clip that
    cannot be read and ``CheckpointError`` for a missing or unsafe checkpoint. A plot that cannot
    be written does not raise: the result carries ``plot_error`` beside the probabilities.

    A model trained on windows (``lusv.data.windows``) predicts every window of the video: the result
    is their mean (``window_probabilities``: each), the plot the window of highest summed probability.
    """
    model = load_trained(checkpoint)  # checked first: a wrong checkpoint should not cost a decode
    params = model.run_params
    inputs = model_inputs(clip_path, params)
    clips, lengths = inputs.clips, inputs.lengths
    every, attention = predict(model, clips, lengths, return_attention=True)
    if not np.isfinite(every).all():  # a NaN must never be printed as a probability
        raise CheckpointError(f"checkpoint {checkpoint} gives non-finite probabilities for {clip_path}: "
                              "its weights are damaged or training diverged; use another run")
    named = {pattern: float(p) for pattern, p in zip(PATTERNS, every.mean(axis=0))}
    shown = int(np.argmax(every.sum(axis=1)))
    clip, length = clips[shown], int(lengths[shown])
    per_window = {"window_probabilities": every, "plotted_window": shown} if params.clip_policy == "windows" else {}

    if attention is None:
        note = f"no attention plot: model '{params.model}' has no attention over frames"
        return ClipPrediction(named, None, length, None, note, **per_window)
    attention = attention[shown:shown + 1]
    # The current folder, not the clip's: a dataset folder is often read-only or shared.
    written = Path(plot_path) if plot_path else Path.cwd() / f"{Path(clip_path).name}.attention.png"
    probability_text = ", ".join(f"{DISPLAY_NAMES[p]} {v:.2f}" for p, v in named.items())
    error = write_attention_figure(model, clip, length, attention[0], f"{Path(clip_path).name}: {probability_text}",
                                   written)
    if error:  # e.g. a read-only folder beside the clip: the probabilities still stand
        return ClipPrediction(named, attention[0], length, None, **per_window,
                              plot_error=f"{error}; choose another path with --plot")
    return ClipPrediction(named, attention[0], length, written, **per_window)


def write_attention_figure(model, clip: np.ndarray, length: int, attention: np.ndarray, title: str,
                           path: str | os.PathLike) -> str:
    """Write the Appendix B figure of one clip (uint8 (T, S, S, 1), its real ``length``, its
    attention (P, H, T)) with the Grad-CAM maps of ``model`` over the top frames, as a PNG at
    ``path``; returns "" or, when the file cannot be written, why (never raises for that)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        _, saliency = top_frame_maps(model, clip, attention, length)
    except ConfigError:  # no 2-D frame encoder: the curves and frames without the maps
        saliency = None
    figure = plot_appendix_b(attention, clip[..., 0], length=length, saliency=saliency, title=title)
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    except OSError as exc:
        return f"attention plot {path} not written: {exc}"
    finally:
        plt.close(figure)
    return ""


@dataclass
class VideoInputs:
    """One video file as a model sees it: uint8 clips (N, T, S, S, 1), their real frames (N,), the
    first frame of each (N,) in the prepared video, and the frames it was cut from (``frames``)."""

    clips: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray
    frames: int


def model_inputs(clip_path: str | os.PathLike, params) -> VideoInputs:
    """One video file decoded once and prepared as the model was trained on its videos: one clip
    of T frames spread over it (``whole``: ``frames`` = its real frames), or every window of the
    video after resampling to ``target_fps`` (``windows``: ``frames`` = the video's frames).
    ``VideoError`` for a file that cannot be used."""
    if getattr(params, "clip_policy", "whole") != "windows":
        decoded = read_clip(clip_path, num_frames=params.num_frames)
        clip, length = prepare_clip(decoded.frames, params.num_frames, params.image_size, source=clip_path)
        return VideoInputs(clip[None], np.array([length]), np.array([0]), int(length))
    decoded = read_clip(clip_path)
    frames = decoded.frames[resample_indices(len(decoded.frames), decoded.fps, params.target_fps)]
    video, _ = prepare_clip(frames, len(frames), params.image_size, source=clip_path)
    starts = window_starts(len(video), params.num_frames, params.window_overlap)
    clips = np.stack([pad_window(video[start:start + params.num_frames], params.num_frames) for start in starts])
    lengths = np.array([min(params.num_frames, len(video) - start) for start in starts])
    return VideoInputs(clips, lengths, np.array(starts), len(video))
