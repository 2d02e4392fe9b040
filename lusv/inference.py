"""Predict one clip with a trained run: the four probabilities and a plot of where it looked.

Used by ``lusv predict``. The clip goes through exactly the preparation the training data went
through (``lusv.video.read_clip`` + ``prepare_clip`` at the run's T and S), so a user's own
video is judged the way the cross-validated model was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lusv.patterns import PATTERNS


@dataclass
class ClipPrediction:
    probabilities: dict[str, float]
    attention: object | None  # (4 or 1, H, T) numpy array, None for models without attention
    length: int
    plot_path: Path | None
    plot_note: str = ""  # why there is no plot, for a model without attention
    plot_error: str = ""  # why the plot could not be written (the probabilities still stand)


def predict_clip(
    clip_path: str | os.PathLike, checkpoint: str | os.PathLike, plot_path: str | os.PathLike | None = None
) -> ClipPrediction:
    """Probabilities per pattern for one video file; writes an attention plot when the model has attention.

    ``checkpoint`` is a run's ``best.pt`` or the run folder. Raises ``VideoError`` for a clip that
    cannot be read and ``CheckpointError`` for a missing or unsafe checkpoint. A plot that cannot
    be written does not raise: the result carries ``plot_error`` beside the probabilities.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import numpy as np

    from lusv.errors import CheckpointError
    from lusv.explain import plot_attention_over_time
    from lusv.io import atomic_path
    from lusv.train import load_trained, predict
    from lusv.video import prepare_clip, read_clip

    model = load_trained(checkpoint)  # checked first: a wrong checkpoint should not cost a decode
    params = model.run_params
    decoded = read_clip(clip_path, num_frames=params.num_frames)
    clip, length = prepare_clip(decoded.frames, params.num_frames, params.image_size, source=clip_path)
    probabilities, attention = predict(model, clip[None], [length], return_attention=True)
    if not np.isfinite(probabilities).all():  # a NaN must never be printed as a probability
        raise CheckpointError(f"checkpoint {checkpoint} gives non-finite probabilities for {clip_path}: "
                              "its weights are damaged or training diverged; use another run")
    named = {pattern: float(p) for pattern, p in zip(PATTERNS, probabilities[0])}

    if attention is None:
        note = f"no attention plot: model '{params.model}' has no attention over frames"
        return ClipPrediction(named, None, length, None, note)
    written = Path(plot_path) if plot_path else Path(f"{clip_path}.attention.png")
    figure = plot_attention_over_time(
        attention[0], frames=clip[..., 0], probabilities=probabilities[0], length=length,
        title=Path(clip_path).name,
    )  # fmt: skip
    try:
        with atomic_path(written) as tmp:
            figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    except OSError as exc:  # e.g. a read-only folder beside the clip: the probabilities still stand
        return ClipPrediction(named, attention[0], length, None,
                              plot_error=f"attention plot {written} not written: {exc}; choose another path with --plot")
    finally:
        plt.close(figure)
    return ClipPrediction(named, attention[0], length, written)
