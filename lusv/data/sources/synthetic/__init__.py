"""The synthetic source: lung-ultrasound clips with per-frame ground truth, generated on first use.

The generator exists so that the whole study (ingest -> folds -> training -> metrics ->
attention analysis) runs on a CPU in minutes with no download, and so that attention can be
scored against a known per-frame truth, which no public dataset offers.

- ``plan``: patients, their look and phenotype, which pattern shows in which frame (fast);
- ``primitives``: noise, bands, textures, speckle and the scan conversion to linear/convex images;
- ``render``: ``render_clip`` as a sequence of named drawing steps; ``synthesize_clip`` for demos;
- ``files``: writing the dataset, reusing it while its recorded parameters match
  (``load_synthetic``, the source's reader), reading the per-frame truth back;
- ``regions``: where each pattern is drawn, per frame, in the clip cache's geometry.

This module re-exports what the rest of lusv, the notebooks and the tests use, and the two
hooks of a source with frame-level truth (``frame_truth``, ``example_frames``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from lusv.data.sources.synthetic.files import (
    FRAME_TRUTH_FILE,
    LABELS_FILE,
    PARAMS_FILE,
    VIDEO_DIR,
    frame_truth_array,
    frame_truth_table,
    generate_dataset,
    load_synthetic,
    read_frame_truth,
)
from lusv.data.sources.synthetic.plan import (
    GENERATOR_VERSION,
    PHENOTYPES,
    PROBES,
    ClipPlan,
    PatientLook,
    plan_dataset,
    sample_patient_look,
    sample_presence,
)
from lusv.data.sources.synthetic.regions import region_masks
from lusv.data.sources.synthetic.render import render_clip, synthesize_clip, SyntheticClip

EXAMPLE_FRAMES_TITLE = "Synthetic LUS clips: example frames per pattern"


def frame_truth(root: str | os.PathLike, clip_ids: Sequence[str], num_frames: int) -> np.ndarray:
    """Per-frame pattern presence (N, T, 4) of ``clip_ids``, resampled like the clip cache."""
    truth, _ = frame_truth_array(read_frame_truth(root), clip_ids, num_frames)
    return truth


def frame_labels(root: str | os.PathLike) -> pd.DataFrame:
    """The per-frame truth as a frame-level label table (clip_id, first_frame, last_frame,
    pattern), what the windows clip policy labels each window from (``lusv.data.windows``)."""
    from lusv.data.frame_labels import frame_labels_from_truth

    return frame_labels_from_truth(read_frame_truth(root))


def example_frames(root: str | os.PathLike
                   ) -> tuple[pd.DataFrame, Callable[[str], tuple[np.ndarray, int]], pd.DataFrame | None]:
    """What ``lusv.report.tables.example_frames_figure`` shows of the dataset under ``root``: its labels,
    a loader of each clip's video frames (gray, as generated) and the per-frame truth."""
    from lusv.data.labels import read_labels
    from lusv.data.video import read_frames

    root = Path(root)
    labels = read_labels(root / LABELS_FILE)
    paths = dict(zip(labels["clip_id"], labels["path"]))

    def load_frames(clip_id: str) -> tuple[np.ndarray, int]:
        frames = read_frames(paths[clip_id])[..., 0]  # stored gray: R = G = B
        return frames, len(frames)

    truth = read_frame_truth(root) if (root / FRAME_TRUTH_FILE).is_file() else None
    return labels, load_frames, truth


__all__ = [
    "EXAMPLE_FRAMES_TITLE", "FRAME_TRUTH_FILE", "GENERATOR_VERSION", "LABELS_FILE", "PARAMS_FILE", "PHENOTYPES",
    "PROBES", "VIDEO_DIR", "ClipPlan", "PatientLook", "SyntheticClip", "example_frames", "frame_labels", "frame_truth",
    "frame_truth_array", "frame_truth_table", "generate_dataset", "load_synthetic", "plan_dataset",
    "read_frame_truth", "region_masks", "render_clip", "sample_patient_look", "sample_presence", "synthesize_clip",
]
