"""Use a trained run: rebuild its model, predict clips, and judge one video file with it.

* ``load_trained(run_dir or best.pt)`` -> the model of a training run, rebuilt from its
  ``config.json`` (``build_run_model``, the ``model_option`` fields of ``RunParams``) with the
  weights of its ``best.pt``.
* ``predict(model, clips)`` -> pattern probabilities (and attention) for cached uint8 clips;
  ``predict_batches`` is the batch loop under it, which training also uses to score its
  validation and test clips (``masked_bce``, the loss of training, over the labelled entries).
* ``predict_clip(video, checkpoint)`` -> ``lusv predict``: one video through exactly the
  preparation the training data went through (``lusv.video.read_clip`` + ``prepare_clip`` at
  the run's T and S), so a user's own video is judged the way the cross-validated model was.

Training imports this module, never the other way round.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lusv import io
from lusv.config import RunParams, model_options
from lusv.datasets import to_model_input
from lusv.devices import autocast
from lusv.errors import CheckpointError
from lusv.patterns import DISPLAY_NAMES, PATTERNS


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of BCE-with-logits over the labelled entries (NaN = missing) and their count.

    The loss training minimises and the validation loss early stopping watches."""
    known = ~torch.isnan(labels)
    losses = F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(labels), reduction="none")
    return (losses * known).sum(), known.sum()


def model_config(p: RunParams) -> dict[str, Any]:
    """The ``build_model`` keyword arguments of a run: its fields marked ``model_option``."""
    return {name: getattr(p, name) for name in model_options()}


def build_run_model(p: RunParams, weights: Optional[str] = None) -> nn.Module:
    """The model a run trains, built from its parameters; ``weights`` overrides ``p.weights``."""
    from lusv.models import build_model

    config = model_config(p)
    if weights is not None:
        config["weights"] = weights
    return build_model(p.model, **config)


def forward_batch(
    model: nn.Module, batch: Mapping[str, Any], device: torch.device, amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False, augment: Any = None, generator: Optional[torch.Generator] = None,
) -> dict[str, torch.Tensor]:
    """The model's outputs for one batch: clips (``lusv.datasets.collate_clips``) go through the
    whole model, optionally augmented on the device; cached frozen-encoder features
    (``lusv.features.collate_features``) go through its heads alone (``forward_features``)."""
    from lusv.devices import unwrap

    lengths = batch["lengths"].to(device, non_blocking=True)
    if "features" in batch:
        features = batch["features"].to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            return unwrap(model).forward_features(features, lengths)
    x = to_model_input(batch["clips"], device, augment=augment, generator=generator,
                       lengths=batch["lengths"], channels_last=channels_last)
    with autocast(device, amp_dtype):
        return model(x, lengths=lengths)


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """Probabilities (N, 4), summed masked BCE, label count, and attention per batch (if any).

    Batches of clips or of cached features (see ``forward_batch``)."""
    model.eval()
    probabilities, attentions = [], []
    loss_sum = torch.zeros((), device=device)
    count = torch.zeros((), device=device, dtype=torch.int64)
    for batch in batches:
        out = forward_batch(model, batch, device, amp_dtype, channels_last)
        logits = out["logits"].float()
        if "labels" in batch:
            batch_loss, batch_count = masked_bce(logits, batch["labels"].to(device))
            loss_sum += batch_loss
            count += batch_count
        probabilities.append(torch.sigmoid(logits).cpu().numpy())
        if out.get("attention") is not None:
            attentions.append(out["attention"].float().cpu().numpy())
    stacked = np.concatenate(probabilities) if probabilities else np.zeros((0, len(PATTERNS)), np.float32)
    return stacked, loss_sum, count, attentions


def predict(
    model: nn.Module,
    clips: np.ndarray | torch.Tensor,
    lengths: np.ndarray | torch.Tensor | None = None,
    *,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    return_attention: bool = False,
) -> np.ndarray | tuple[np.ndarray, Optional[np.ndarray]]:
    """Pattern probabilities (N, 4) for uint8 clips (N, T, S, S, 1), e.g. from ``ClipCache.load_many``.

    ``lengths`` (N,) gives the real frames of zero-padded clips (None = all real). Runs on the
    model's device unless ``device`` is given. With ``return_attention`` also returns the
    model's attention (N, 4, H, T) (None for models without one).
    """
    clips_t = torch.as_tensor(np.asarray(clips)) if not isinstance(clips, torch.Tensor) else clips
    n, t = clips_t.shape[:2]
    lengths_t = torch.full((n,), t, dtype=torch.int64) if lengths is None else torch.as_tensor(np.asarray(lengths), dtype=torch.int64)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    batches = (
        {"clips": clips_t[i : i + batch_size], "lengths": lengths_t[i : i + batch_size]} for i in range(0, n, batch_size)
    )
    probabilities, _, _, attentions = predict_batches(model, batches, device)
    if not return_attention:
        return probabilities
    return probabilities, (np.concatenate(attentions) if attentions else None)


def load_trained(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild a trained model from a run directory (or its best.pt) in eval mode.

    The architecture comes from the run's config.json; the weights from best.pt (read with
    weights_only=True). The returned model has ``run_params`` (RunParams) and
    ``weights_source`` = "trained:<best.pt>".
    """
    path = Path(path)
    best = path / "best.pt" if path.is_dir() else path
    config_path = best.parent / "config.json"
    if not best.is_file():
        raise CheckpointError(f"checkpoint {best} does not exist: pass a training run's best.pt or its folder")
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} not found: {best.parent} is not a lusv run directory (train it with lusv.train.run)")
    params = RunParams.from_dict(json.loads(config_path.read_text(encoding="utf-8"))["params"])
    state = io.torch_load(best)
    model = build_run_model(params, weights="random")  # the trained weights replace any init
    try:
        model.load_state_dict(state)
    except RuntimeError:
        from lusv.models import describe_state_dict_mismatch

        why = describe_state_dict_mismatch(model, state, **{**model_config(params), "weights": "random"})
        raise CheckpointError(f"{best} does not fit the {params.model} model described by {config_path}: {why}") from None
    model.weights_source = f"trained:{best.resolve()}"
    model.run_params = params
    return model.to(device).eval()


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

    The plot is the paper's Appendix B figure (``lusv.explain.plot_appendix_b``) with the
    Grad-CAM maps of each pattern's top frames, written to ``plot_path`` or, by default,
    ``./<clip file name>.attention.png`` in the current folder.

    ``checkpoint`` is a run's ``best.pt`` or the run folder. Raises ``VideoError`` for a clip that
    cannot be read and ``CheckpointError`` for a missing or unsafe checkpoint. A plot that cannot
    be written does not raise: the result carries ``plot_error`` beside the probabilities.

    A model trained on windows (``lusv.windows``) predicts every window of the video: the result
    is their mean (``window_probabilities``: each), the plot the window of highest summed probability.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lusv.errors import ConfigError
    from lusv.explain import plot_appendix_b
    from lusv.saliency import top_frame_maps
    from lusv.io import atomic_path

    model = load_trained(checkpoint)  # checked first: a wrong checkpoint should not cost a decode
    params = model.run_params
    clips, lengths = _model_inputs(clip_path, params)
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
    try:
        _, saliency = top_frame_maps(model, clip, attention[0], length)
    except ConfigError:  # no 2-D frame encoder: the curves and frames without the maps
        saliency = None
    probability_text = ", ".join(f"{DISPLAY_NAMES[p]} {v:.2f}" for p, v in named.items())
    figure = plot_appendix_b(attention[0], clip[..., 0], length=length, saliency=saliency,
                             title=f"{Path(clip_path).name}: {probability_text}")
    try:
        with atomic_path(written) as tmp:
            figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    except OSError as exc:  # e.g. a read-only folder beside the clip: the probabilities still stand
        return ClipPrediction(named, attention[0], length, None, **per_window,
                              plot_error=f"attention plot {written} not written: {exc}; choose another path with --plot")
    finally:
        plt.close(figure)
    return ClipPrediction(named, attention[0], length, written, **per_window)


def _model_inputs(clip_path: str | os.PathLike, params) -> tuple["np.ndarray", "np.ndarray"]:
    """uint8 clips (N, T, S, S, 1) and lengths (N,) of one video file as the model was trained on
    them: one clip of T frames spread over it (``whole``), or every window (``windows``)."""
    from lusv.video import prepare_clip, read_clip, resample_indices
    from lusv.windows import pad_window, window_starts

    if getattr(params, "clip_policy", "whole") != "windows":
        decoded = read_clip(clip_path, num_frames=params.num_frames)
        clip, length = prepare_clip(decoded.frames, params.num_frames, params.image_size, source=clip_path)
        return clip[None], np.array([length])
    decoded = read_clip(clip_path)
    frames = decoded.frames[resample_indices(len(decoded.frames), decoded.fps, params.target_fps)]
    video, _ = prepare_clip(frames, len(frames), params.image_size, source=clip_path)
    starts = window_starts(len(video), params.num_frames, params.window_overlap)
    clips = np.stack([pad_window(video[start:start + params.num_frames], params.num_frames) for start in starts])
    return clips, np.array([min(params.num_frames, len(video) - start) for start in starts])
