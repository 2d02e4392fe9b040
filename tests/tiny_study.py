"""The tiny study the training tests share, prepared through the real ``lusv.study.prepare``.

24 synthetic clips of 12 patients, 8 frames of 32 x 32 (one clip per video, ``clip_policy="whole"``),
decoded once into a clip cache, with a
temporal split (the latest quarter of the clips, by patient, held out) and 3 patient-level folds
of the development clips. The ``tiny_data`` fixture in ``conftest.py`` builds it once per test
session; test modules import its constants from here, and ``copy_of_tiny_study`` for a study folder
of their own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

NUM_FRAMES = 8
IMAGE_SIZE = 32
NUM_FOLDS = 3
# One clip per video: the shared tiny study tests the whole-clip path (clip ids = video ids);
# tests/test_windows.py prepares its own study under the windows policy.
CLIP_POLICY = "whole"
SYNTHETIC = {"n_clips": 24, "n_patients": 12, "num_frames": NUM_FRAMES, "frame_size": IMAGE_SIZE, "seed": 0}


@dataclass(frozen=True)
class TinyData:
    root: Path
    source_dir: Path  # the synthetic dataset as generated: videos/ and its own labels.csv
    labels_csv: Path  # the prepared labels table (prepare/labels.csv), as training reads it
    folds_csv: Path
    temporal_csv: Path
    cache_dir: Path

    def labels(self) -> pd.DataFrame:
        from lusv.data.labels import read_labels

        return read_labels(self.labels_csv)

    def folds(self) -> pd.DataFrame:
        return pd.read_csv(self.folds_csv, dtype={"clip_id": str, "patient_id": str})

    def temporal(self) -> pd.DataFrame:
        return pd.read_csv(self.temporal_csv, dtype={"clip_id": str, "patient_id": str})

    def params(self, out_dir: Path, **overrides: Any) -> dict[str, Any]:
        """Fast CPU run parameters (quick profile, 2 epochs of at most 2 batches) on this data."""
        from lusv.config import params_for

        values = {
            "labels": str(self.labels_csv),
            "splits": str(self.folds_csv),
            "temporal_split": str(self.temporal_csv),
            "cache_dir": str(self.cache_dir),
            "out_dir": str(out_dir),
            "num_frames": NUM_FRAMES,
            "image_size": IMAGE_SIZE,
            "num_folds": NUM_FOLDS,
            "clip_policy": CLIP_POLICY,
            "epochs": 2,
            "batch_size": 4,
            "max_batches_per_epoch": 2,
            "num_workers": 0,
            **overrides,
        }
        return params_for("quick", **values).to_dict()


def build_tiny_data(root: Path) -> TinyData:
    """Generate the synthetic clips under ``root/synthetic`` and prepare them as a study would."""
    from lusv.study import prepare

    prepared = prepare(
        root / "study",
        profile="quick",
        data="synthetic",
        data_path=root / "synthetic",  # not the repository's data/ folder
        synthetic={**SYNTHETIC, "progress": False},
        num_frames=NUM_FRAMES,
        image_size=IMAGE_SIZE,
        num_folds=NUM_FOLDS,
        seed=0,
        temporal_test_fraction=0.25,
        held_out_fraction=0.0,  # the shared folds stay as they were; tests/test_held_out.py prepares one
        cache_root=root / "cache",
        clip_policy=CLIP_POLICY,
    )
    assert prepared.temporal_csv is not None, "synthetic clips have acquisition dates: expected a temporal split"
    return TinyData(
        root=root,
        source_dir=root / "synthetic",
        labels_csv=prepared.labels_csv,
        folds_csv=prepared.folds_csv,
        temporal_csv=prepared.temporal_csv,
        cache_dir=prepared.cache_root,
    )


# One short epoch: enough for fold models that exist, finish and predict.
ONE_SHORT_EPOCH = {"epochs": 1, "batch_size": 4, "max_batches_per_epoch": 2, "num_workers": 0}


def copy_of_tiny_study(tiny_data: TinyData, run_dir: Path, configurations: dict | None = None):
    """The tiny study's preparation under ``run_dir`` (its clips, folds and cache shared, read-only;
    no runs), with ``configurations`` trained on every fold for ``ONE_SHORT_EPOCH`` when given."""
    from lusv import study

    prepared = dataclasses.replace(study.Prepared.load(tiny_data.root / "study"), run_dir=Path(run_dir))
    prepared.save()
    if configurations:
        study.train_configurations(prepared, configurations, **ONE_SHORT_EPOCH)
    return prepared
