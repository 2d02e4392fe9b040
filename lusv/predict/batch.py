"""Batch prediction: ``lusv predict INPUT... --model EXPORT --out predictions.csv``.

``predict_videos(inputs, model, out)`` scores every video that ``lusv.predict.inputs.collect_videos``
finds, with an export or a single run's model (``lusv.predict.exported.load_model``):

* each file is decoded **once** and prepared as the study prepared its videos
  (``lusv.predict.video.model_inputs``: one clip, or every window); the clips of several videos
  are scored together in batches of ``batch_size`` by every fold model. Frozen-encoder models
  (the ``pretrained`` profile) encode the frames once for all fold models when they share the
  encoder, and pass the features through float16 as the study's feature cache did;
* a video's probability is exactly the study's score of it: the fold ensemble
  (``lusv.evaluation.out_of_fold.ensemble_mean``) of each clip, then, for a windows model, the mean
  over the video's windows (``lusv.evaluation.video_level.video_predictions``);
* one row per video (``ROW_COLUMNS``): ``clip_id``, ``status`` (ok / failed / skipped) and its
  ``reason``, the ``frames`` and ``windows`` used, ``p_<pattern>``, ``call_<pattern>`` (1 when the
  probability is at least the export's threshold, empty without one), the labels and patient a
  labels CSV gave (so ``lusv evaluate`` reads the file), the path and the model's identity.
  A file that cannot be read is a row with its reason, never the end of the batch;
* rows are appended (and flushed to disk) as videos finish: a killed batch keeps every finished
  row, and the same command run again predicts only what is missing (rows of failed or skipped
  files are tried again). A file of another model is refused, never mixed;
* ``per_window`` writes every clip's row to ``<out stem>.windows.csv`` (called at the per-window
  thresholds of a windows export); ``plots`` writes each video's attention figure
  (``lusv.predict.video.write_attention_figure``: attention = the fold models' mean over the
  window with the highest summed probability, Grad-CAM maps of the first fold model).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lusv.data.model_input import to_model_input
from lusv.data.patterns import DISPLAY_NAMES, PATTERNS
from lusv.errors import ConfigError, LusvError, VideoError
from lusv.evaluation.out_of_fold import ensemble_mean
from lusv.evaluation.video_level import video_predictions
from lusv.inference import forward_batch
from lusv.infra.console import bars_enabled, on_terminal
from lusv.predict.exported import PredictionModel
from lusv.predict.inputs import collect_videos, VideoItem
from lusv.predict.output import PredictionsFile
from lusv.predict.video import model_inputs, VideoInputs, write_attention_figure

log = logging.getLogger(__name__)

PROBABILITIES = [f"p_{p}" for p in PATTERNS]
CALLS = [f"call_{p}" for p in PATTERNS]
ROW_COLUMNS = ["clip_id", "status", "reason", "frames", "windows", *PROBABILITIES, *CALLS, *PATTERNS, "patient_id",
               "path", "model"]
# Frames per encoder call (as lusv.data.features.FeatureCache): bounds the memory of a batch, since
# activations of a 224 x 224 encoder run to hundreds of MB per 64 frames.
FRAMES_PER_CALL = 64
WINDOW_ROW_COLUMNS = ["clip_id", "window", "start", "length", *PROBABILITIES, *CALLS, "path", "model"]


@dataclass
class BatchResult:
    table: pd.DataFrame  # every row of the output file, in the order of the inputs
    out: Path
    windows_out: Path | None
    counts: dict[str, int]  # predicted now, reused from an earlier run, failed, skipped
    plots: list[Path] = field(default_factory=list)


@dataclass
class _Batch:
    """Videos read and waiting to be scored together."""

    videos: list[tuple[VideoItem, VideoInputs]] = field(default_factory=list)

    @property
    def clips(self) -> int:
        return sum(len(inputs.clips) for _, inputs in self.videos)


def predict_videos(inputs: list[str | os.PathLike], model: PredictionModel, out: str | os.PathLike, *,
                   per_window: bool = False, plots: str | os.PathLike | None = None, batch_size: int = 16,
                   device: torch.device | str = "cpu", progress: bool = True) -> BatchResult:
    """Score every video of ``inputs`` into ``out`` (see the module docstring)."""
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size}: must be at least 1")
    items = collect_videos(inputs)
    if not items:
        raise ConfigError(f"no file found in {', '.join(map(str, inputs))}: give video files, folders or a labels CSV")
    out = Path(out)
    windows_out = out.with_name(f"{out.stem}.windows.csv") if per_window else None
    output = PredictionsFile(out, ROW_COLUMNS, model.identity, windows_out, WINDOW_ROW_COLUMNS)
    plot_dir = Path(plots) if plots is not None else None
    if plot_dir is not None:
        _writable_folder(plot_dir)
    model.to(device)
    todo = [item for item in items if item.path not in output.finished]
    counts = {"predicted": 0, "reused": len(items) - len(todo), "failed": 0, "skipped": 0}
    written_plots: list[Path] = []
    bar = tqdm(total=len(items), initial=counts["reused"], unit="video", desc="lusv predict",
               disable=not (progress and on_terminal() and bars_enabled()))
    batch = _Batch()
    for item in todo:
        row = None if item.skip else _read(item, model, batch)
        if item.skip or row is not None:
            output.append([row or _unread_row(item, "skipped", item.skip)])
            counts["skipped" if item.skip else "failed"] += 1
            bar.update(1)
        if batch.clips >= batch_size or (item is todo[-1] and batch.videos):
            done = _score_and_write(batch, model, output, plot_dir, batch_size, device, written_plots)
            counts["predicted"] += done["ok"]
            counts["failed"] += done["failed"]
            bar.update(len(batch.videos))
            batch = _Batch()
    bar.close()
    table = output.finish(order=[item.path for item in items])
    return BatchResult(table, out, windows_out, counts, written_plots)


def _read(item: VideoItem, model: PredictionModel, batch: _Batch) -> dict | None:
    """Decode one file into ``batch``; the row of a file that cannot be read, else None."""
    try:
        batch.videos.append((item, model_inputs(item.path, model.params)))
    except VideoError as exc:
        return _unread_row(item, "failed", str(exc))
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:  # anything else the decoders raise
        return _unread_row(item, "failed", f"{item.path} cannot be read ({type(exc).__name__}: {exc})")
    return None


def _unread_row(item: VideoItem, status: str, reason: str) -> dict:
    return {"clip_id": item.clip_id, "status": status, "reason": reason, "patient_id": item.patient_id,
            "path": item.path, **{p: item.labels.get(p, np.nan) for p in PATTERNS}}


def _score_and_write(batch: _Batch, model: PredictionModel, output: PredictionsFile, plot_dir: Path | None,
                     batch_size: int, device, written_plots: list[Path]) -> dict[str, int]:
    """Score every clip of the batch with every fold model, write one row per video (and its
    window rows, plots); returns how many videos were ok and failed."""
    clips = np.concatenate([inputs.clips for _, inputs in batch.videos])
    lengths = np.concatenate([inputs.lengths for _, inputs in batch.videos])
    probabilities, attention = _score(model, clips, lengths, batch_size, device, keep_attention=plot_dir is not None)
    windows = _window_table(batch, probabilities)
    videos = video_predictions(windows, "mean").set_index("video_id")
    rows, window_rows, status = [], [], {"ok": 0, "failed": 0}
    for index, (item, inputs) in enumerate(batch.videos):
        key = f"v{index}"
        p = videos.loc[key, PROBABILITIES].to_numpy(float)
        if not np.isfinite(p).all():
            rows.append(_unread_row(item, "failed", "the model gives non-finite probabilities for this video: its "
                                    "weights are damaged; export the study again"))
            status["failed"] += 1
            continue
        own = windows[windows["video_id"] == key]
        row = {**_unread_row(item, "ok", ""), "frames": inputs.frames, "windows": len(inputs.clips),
               **dict(zip(PROBABILITIES, p)), **_calls(p, model.thresholds)}
        if plot_dir is not None:
            row["reason"] = _plot(item, inputs, own, attention, model, plot_dir, written_plots)
        rows.append(row)
        window_rows += [{"clip_id": item.clip_id, "window": w, "start": int(inputs.starts[w]),
                         "length": int(inputs.lengths[w]), "path": item.path,
                         **dict(zip(PROBABILITIES, values)), **_calls(values, model.window_thresholds or model.thresholds)}
                        for w, values in enumerate(own[PROBABILITIES].to_numpy(float))]
        status["ok"] += 1
    output.append(rows, window_rows)
    return status


def _score(model: PredictionModel, clips: np.ndarray, lengths: np.ndarray, batch_size: int, device,
           keep_attention: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Probabilities (N, 4) of every fold model, and their attention (N, P, H, T) when asked and
    the model has one."""
    per_model = [[] for _ in model.models]
    attention = [[] for _ in model.models]
    device = torch.device(device)
    channels_last = bool(model.params.channels_last)
    with torch.inference_mode():
        for start in range(0, len(clips), batch_size):
            batch = {"clips": torch.from_numpy(clips[start:start + batch_size]),
                     "lengths": torch.as_tensor(lengths[start:start + batch_size], dtype=torch.int64)}
            shared = _features(model.models[0], batch, device, model.frozen_features) if model.shared_encoder else None
            for m, fold_model in enumerate(model.models):
                if model.frozen_features is not None:
                    features = shared if shared is not None else _features(fold_model, batch, device, model.frozen_features)
                    out = forward_batch(fold_model, {"features": features, "lengths": batch["lengths"]}, device)
                else:
                    out = _forward_in_pieces(fold_model, batch, device, channels_last)
                per_model[m].append(torch.sigmoid(out["logits"].float()).cpu().numpy())
                if keep_attention and out.get("attention") is not None:
                    attention[m].append(out["attention"].float().cpu().numpy())
    probabilities = [np.concatenate(parts) for parts in per_model]
    kept = [np.concatenate(parts) for parts in attention] if keep_attention and attention[0] else None
    return probabilities, kept


def _pieces(clips: int, frames: int) -> list[slice]:
    """Clips per encoder call so that a call sees at most FRAMES_PER_CALL frames (at least one clip)."""
    per_call = max(1, FRAMES_PER_CALL // max(1, frames))
    return [slice(start, start + per_call) for start in range(0, clips, per_call)]


def _features(fold_model, batch: dict, device, dtype: str) -> torch.Tensor:
    """The frozen encoder's features (B, T, F) of a batch of clips, rounded through ``dtype`` as
    the study's feature cache stores them (``lusv.data.features``); encoded a few clips at a time."""
    encoder = fold_model.encoder
    channels_last = bool(getattr(encoder, "channels_last", False))
    clips = batch["clips"]
    parts = [encoder.encode_clips(to_model_input(clips[piece], device, channels_last=channels_last))
             for piece in _pieces(len(clips), clips.shape[1])]
    return torch.cat(parts).float().to(getattr(torch, dtype)).float()


def _forward_in_pieces(fold_model, batch: dict, device, channels_last: bool) -> dict[str, torch.Tensor]:
    """An end-to-end model's outputs for a batch, a few clips per call (memory stays bounded for
    large encoders); logits (B, 4) and attention (B, P, H, T) when the model has it."""
    outs = [forward_batch(fold_model, {"clips": batch["clips"][piece], "lengths": batch["lengths"][piece]}, device,
                          channels_last=channels_last)
            for piece in _pieces(len(batch["clips"]), batch["clips"].shape[1])]
    joined = {"logits": torch.cat([out["logits"] for out in outs])}
    if outs[0].get("attention") is not None:
        joined["attention"] = torch.cat([out["attention"] for out in outs])
    return joined


def _window_table(batch: _Batch, probabilities: list[np.ndarray]) -> pd.DataFrame:
    """The fold ensemble (``ensemble_mean``) of every clip of the batch, keyed ``v<i>_w<j>``."""
    ids, videos = [], []
    for index, (_, inputs) in enumerate(batch.videos):
        ids += [f"v{index}_w{w}" for w in range(len(inputs.clips))]
        videos += [f"v{index}"] * len(inputs.clips)
    frames = []
    for values in probabilities:
        frame = pd.DataFrame({"clip_id": ids, "video_id": videos, "patient_id": videos})
        for i, pattern in enumerate(PATTERNS):
            frame[f"p_{pattern}"] = values[:, i].astype(np.float64)
            frame[pattern] = np.nan
        frames.append(frame)
    return ensemble_mean(frames)


def _calls(p: np.ndarray, thresholds: dict[str, float | None] | None) -> dict:
    if thresholds is None:
        return {}
    return {f"call_{pattern}": (int(value >= thresholds[pattern]) if thresholds[pattern] is not None else np.nan)
            for pattern, value in zip(PATTERNS, p)}


def _plot(item: VideoItem, inputs: VideoInputs, own: pd.DataFrame, attention, model: PredictionModel,
          plot_dir: Path, written: list[Path]) -> str:
    """Write the video's attention figure; "" or the note the row's reason carries."""
    if attention is None:
        return f"no attention plot: model '{model.params.model}' has no attention over frames"
    rows = own.index.to_numpy()  # positions in the batch: the window table keeps the batch order
    shown = int(np.argmax(own[PROBABILITIES].to_numpy(float).sum(axis=1)))
    mean_attention = np.mean([a[rows[shown]] for a in attention], axis=0)
    probability_text = ", ".join(f"{DISPLAY_NAMES[p]} {v:.2f}" for p, v in zip(PATTERNS, own[PROBABILITIES].mean()))
    name = re.sub(r"[^\w.+-]+", "_", item.clip_id)
    path = plot_dir / f"{name}.attention.png"
    error = write_attention_figure(model.models[0], inputs.clips[shown], int(inputs.lengths[shown]), mean_attention,
                                   f"{item.clip_id}: {probability_text}", path)
    if error:
        return error
    written.append(path)
    return ""


def _writable_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LusvError(f"--plots {folder} cannot be made ({exc.strerror or exc}): choose another folder") from None
    if not os.access(folder, os.W_OK):
        raise LusvError(f"--plots {folder} is not writable: choose another folder")


def attention_figure(model: PredictionModel, path: str | os.PathLike, plot_dir: str | os.PathLike,
                     clip_id: str | None = None) -> Path:
    """Write one video's attention figure as ``--plots`` does and return its path; ``LusvError``
    when the model has no attention or the figure cannot be written."""
    item = VideoItem(clip_id or Path(path).name, str(Path(path).resolve()))
    inputs = model_inputs(item.path, model.params)
    device = next(model.models[0].parameters()).device
    probabilities, attention = _score(model, inputs.clips, inputs.lengths, 16, device, keep_attention=True)
    windows = _window_table(_Batch([(item, inputs)]), probabilities)
    _writable_folder(Path(plot_dir))
    written: list[Path] = []
    note = _plot(item, inputs, windows, attention, model, Path(plot_dir), written)
    if not written:
        raise LusvError(note)
    return written[0]
