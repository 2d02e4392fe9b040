"""The synthetic dataset on disk: write it, reuse it while its parameters match, read its truth.

Files written by :func:`generate_dataset` (the same layout the real-data path reads)::

    root/videos/SYN-C0001.mp4 ...   H.264 (or MPEG-4 part 2) grayscale clips, yuv420p
    root/labels.csv                 the labels contract: clip_id, path (relative), patient_id,
                                    a_lines, b_lines, consolidation, pleural_effusion,
                                    acquired_on (ISO date), probe, source="synthetic"
    root/frame_truth.csv            clip_id, frame, one 0/1 column per pattern
    root/params.json                the generation parameters (written last, by load_synthetic)

``load_synthetic(root)`` is the source's reader (``lusv.data.sources``): it regenerates the dataset
only when the parameters recorded in ``params.json`` (``lusv.infra.io.recorded_mismatch``) differ
from the ones asked for, the generator version changed or a file is missing, so notebooks
can call it unconditionally.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lusv.data.labels import read_labels
from lusv.data.patterns import OPTIONAL_COLUMNS, PATTERNS, REQUIRED_COLUMNS
from lusv.data.sources.synthetic.plan import ClipPlan, GENERATOR_VERSION, plan_dataset
from lusv.data.sources.synthetic.render import render_clip
from lusv.data.video import sample_indices
from lusv.data.video_writer import WRITE_FPS, write_video
from lusv.errors import ConfigError, LabelsError
from lusv.infra.console import bars_enabled
from lusv.infra.io import read_table, recorded_mismatch, write_csv, write_record

log = logging.getLogger(__name__)

VIDEO_DIR = "videos"
LABELS_FILE = "labels.csv"
FRAME_TRUTH_FILE = "frame_truth.csv"
PARAMS_FILE = "params.json"


def _labels_row(plan: ClipPlan, relative_path: str) -> dict:
    labels = plan.labels
    return {
        "clip_id": plan.clip_id,
        "path": relative_path,
        "patient_id": plan.patient_id,
        **{name: float(labels[i]) for i, name in enumerate(PATTERNS)},
        "acquired_on": plan.acquired_on.isoformat(),
        "probe": plan.look.probe,
        "source": "synthetic",
    }


def frame_truth_table(plans: Sequence[ClipPlan]) -> pd.DataFrame:
    """Long table of the per-frame truth: clip_id, frame, one 0/1 int column per pattern."""
    parts = []
    for plan in plans:
        part = pd.DataFrame(plan.presence.astype(np.int8), columns=list(PATTERNS))
        part.insert(0, "frame", np.arange(len(part)))
        part.insert(0, "clip_id", plan.clip_id)
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["clip_id", "frame", *PATTERNS])
    return pd.concat(parts, ignore_index=True)


def generate_dataset(root: str | os.PathLike, n_clips: int = 120, n_patients: int = 40, num_frames: int = 16,
                     frame_size: int = 96, seed: int = 0, probe: str = "mixed", fps: int = WRITE_FPS,
                     progress: bool = True) -> pd.DataFrame:
    """Render and write a synthetic dataset under ``root``; return the labels table as written.

    Writes ``root/videos/<clip_id>.mp4``, ``root/labels.csv`` (the labels contract, paths
    relative to ``root``) and ``root/frame_truth.csv``. Use
    ``lusv.data.sources.synthetic.load_synthetic`` to reuse an existing dataset with the same
    parameters instead of regenerating it.
    """
    from tqdm import tqdm  # text bars: readable in JupyterLab and in papermill-rendered notebooks alike


    if frame_size % 2:
        raise ConfigError(f"frame_size must be even (videos are yuv420p), got {frame_size}")
    root = Path(root)
    plans = plan_dataset(n_clips, n_patients, num_frames, seed, probe)
    rows = []
    for plan in tqdm(plans, desc="synthetic clips", unit="clip", disable=not bars_enabled(progress)):
        clip = render_clip(plan.look, plan.presence, frame_size, seed=plan.render_seed,
                           confluent_b_lines=plan.confluent_b_lines)
        relative = f"{VIDEO_DIR}/{plan.clip_id}.mp4"
        write_video(root / relative, clip.frames, fps=fps)
        rows.append(_labels_row(plan, relative))
    labels = pd.DataFrame(rows, columns=[*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS])
    write_csv(root / FRAME_TRUTH_FILE, frame_truth_table(plans))
    write_csv(root / LABELS_FILE, labels)
    log.info("wrote %d synthetic clips of %d patients to %s", len(plans), n_patients, root)
    return labels


def read_frame_truth(root: str | os.PathLike) -> pd.DataFrame:
    """Per-frame truth of a synthetic dataset: clip_id, frame, one 0/1 int column per pattern.

    ``root`` is the dataset folder (holding frame_truth.csv) or the CSV itself. ``frame``
    indexes the frames of the video file (0-based), before any resampling by the clip cache.
    """
    path = Path(root)
    if path.is_dir():
        path = path / FRAME_TRUTH_FILE
    if not path.is_file():
        raise LabelsError(f"no per-frame truth at {path}: generate the dataset with "
                          "lusv.data.sources.synthetic.load_synthetic(root)")
    truth = read_table(path)
    missing = [c for c in ("clip_id", "frame", *PATTERNS) if c not in truth.columns]
    if missing:
        raise LabelsError(f"{path} lacks column(s) {missing} (needed: clip_id, frame, {', '.join(PATTERNS)})")
    if truth[list(PATTERNS)].isna().any().any() or not truth[list(PATTERNS)].isin([0, 1]).all().all():
        raise LabelsError(f"{path}: pattern columns must be 0 or 1 in every row")
    truth[list(PATTERNS)] = truth[list(PATTERNS)].astype(np.int8)
    truth["frame"] = truth["frame"].astype(int)
    return truth


def frame_truth_array(truth: pd.DataFrame, clip_ids: Sequence[str], num_frames: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Stack the per-frame truth of ``clip_ids`` into (N, T, 4) uint8 plus lengths (N,).

    With ``num_frames`` the truth follows the clip cache's short-clip policy: clips with at
    least ``num_frames`` frames are resampled at ``np.linspace``-spaced frame indices, shorter
    ones keep their frames and are zero-padded (length = their frame count). Without it,
    T is the longest clip and shorter clips are zero-padded.
    """
    grouped = {cid: g.sort_values("frame")[list(PATTERNS)].to_numpy() for cid, g in truth.groupby("clip_id")}
    missing = [cid for cid in clip_ids if cid not in grouped]
    if missing:
        raise LabelsError(f"no per-frame truth for clip(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    T = num_frames or max((len(grouped[cid]) for cid in clip_ids), default=0)
    out = np.zeros((len(clip_ids), T, len(PATTERNS)), dtype=np.uint8)
    lengths = np.zeros(len(clip_ids), dtype=np.int64)
    for i, cid in enumerate(clip_ids):
        rows = grouped[cid]
        if len(rows) >= T:
            rows = rows[sample_indices(len(rows), T)]
        out[i, :len(rows)] = rows
        lengths[i] = len(rows)
    return out, lengths




def _is_current(root: Path, params: dict) -> bool:
    """True when root holds a complete dataset made with exactly these parameters."""
    if recorded_mismatch(root / PARAMS_FILE, params) != []:
        return False
    if not (root / FRAME_TRUTH_FILE).is_file() or not (root / LABELS_FILE).is_file():
        return False
    try:
        labels = pd.read_csv(root / LABELS_FILE, usecols=["path"])
    except (ValueError, OSError, pd.errors.ParserError):  # damaged (empty, edited): generate it again
        return False
    return all((root / path).is_file() for path in labels["path"])


def load_synthetic(root: str | os.PathLike, n_clips: int = 120, n_patients: int = 40, num_frames: int = 16,
                   frame_size: int = 96, seed: int = 0, probe: str = "mixed",
                   progress: bool = True) -> pd.DataFrame:
    """Labels table of the synthetic dataset under ``root``, generating it when needed.

    Writes ``root/videos/*.mp4``, ``root/labels.csv``, ``root/frame_truth.csv`` (read it with
    ``lusv.data.sources.synthetic.read_frame_truth(root)``) and, last, ``root/params.json``: an
    interrupted generation has no params file and is redone on the next call. ``probe`` is
    "convex", "linear" or "mixed" (per patient). Returns ``read_labels(root/"labels.csv")``.
    """
    root = Path(root)
    params = {
        "generator_version": GENERATOR_VERSION,
        "n_clips": int(n_clips),
        "n_patients": int(n_patients),
        "num_frames": int(num_frames),
        "frame_size": int(frame_size),
        "seed": int(seed),
        "probe": str(probe),
    }
    if _is_current(root, params):
        log.info("reusing the synthetic dataset in %s", root)
    else:
        log.info("generating the synthetic dataset in %s (%s)", root, params)
        (root / PARAMS_FILE).unlink(missing_ok=True)
        # Clips of an earlier parameter set would linger unreferenced in videos/; drop them.
        for stale in (root / VIDEO_DIR).glob("SYN-C*.mp4"):
            stale.unlink()
        generate_dataset(root, n_clips=n_clips, n_patients=n_patients, num_frames=num_frames,
                         frame_size=frame_size, seed=seed, probe=probe, progress=progress)
        write_record(root / PARAMS_FILE, params)
    return read_labels(root / LABELS_FILE)
