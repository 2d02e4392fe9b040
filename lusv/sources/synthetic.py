"""The synthetic source: generate the embedded dataset once, then reuse it.

``load_synthetic(root)`` is what ``lusv.sources.load_source("synthetic", root=...)`` calls.
The generation parameters are stored in ``root/params.json``; the dataset is regenerated
only when they (or the generator version) change or a file is missing, so notebooks can
call it unconditionally.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd

from lusv import synthetic
from lusv.io import write_json
from lusv.labels import read_labels

log = logging.getLogger(__name__)

PARAMS_FILE = "params.json"


def _is_current(root: Path, params: dict) -> bool:
    """True when root holds a complete dataset made with exactly these parameters."""
    try:
        stored = json.loads((root / PARAMS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stored != params:
        return False
    if not (root / synthetic.FRAME_TRUTH_FILE).is_file() or not (root / synthetic.LABELS_FILE).is_file():
        return False
    try:
        labels = pd.read_csv(root / synthetic.LABELS_FILE, usecols=["path"])
    except (ValueError, OSError, pd.errors.ParserError):  # damaged (empty, edited): generate it again
        return False
    return all((root / path).is_file() for path in labels["path"])


def load_synthetic(root: str | os.PathLike, n_clips: int = 120, n_patients: int = 40, num_frames: int = 16,
                   frame_size: int = 96, seed: int = 0, probe: str = "mixed",
                   progress: bool = True) -> pd.DataFrame:
    """Labels table of the synthetic dataset under ``root``, generating it when needed.

    Writes ``root/videos/*.mp4``, ``root/labels.csv``, ``root/frame_truth.csv`` (read it with
    ``lusv.synthetic.read_frame_truth(root)``) and, last, ``root/params.json``: an interrupted
    generation has no params file and is redone on the next call. ``probe`` is "convex",
    "linear" or "mixed" (per patient). Returns ``read_labels(root/"labels.csv")``.
    """
    root = Path(root)
    params = {
        "generator_version": synthetic.GENERATOR_VERSION,
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
        for stale in (root / synthetic.VIDEO_DIR).glob("SYN-C*.mp4"):
            stale.unlink()
        synthetic.generate_dataset(root, n_clips=n_clips, n_patients=n_patients, num_frames=num_frames,
                                   frame_size=frame_size, seed=seed, probe=probe, progress=progress)
        write_json(root / PARAMS_FILE, params)
    return read_labels(root / synthetic.LABELS_FILE)
