"""A tiny synthetic dataset, cached once per test session, for the training tests.

24 synthetic clips of 12 patients, 8 frames of 32 x 32, decoded once into a clip cache, with a
temporal split (later patients held out) and 3 patient-level folds of the development clips.
Import the fixture into a test module with ``from fixtures_data import tiny_data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

NUM_FRAMES = 8
IMAGE_SIZE = 32
NUM_FOLDS = 3


@dataclass(frozen=True)
class TinyData:
    root: Path
    labels_csv: Path
    folds_csv: Path
    temporal_csv: Path
    cache_dir: Path

    def labels(self) -> pd.DataFrame:
        from lusv.labels import read_labels

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
            "epochs": 2,
            "batch_size": 4,
            "max_batches_per_epoch": 2,
            "num_workers": 0,
            **overrides,
        }
        return params_for("quick", **values).to_dict()


def build_tiny_data(root: Path) -> TinyData:
    from lusv.cache import ClipCache
    from lusv.io import write_csv
    from lusv.sources.synthetic import load_synthetic
    from lusv.splits import make_folds, temporal_split

    labels = load_synthetic(root / "synthetic", n_clips=24, n_patients=12, num_frames=NUM_FRAMES,
                            frame_size=IMAGE_SIZE, seed=0, progress=False)
    ClipCache(root / "cache", NUM_FRAMES, IMAGE_SIZE).build(labels, progress=False)
    temporal = temporal_split(labels, test_fraction=0.25)
    development = labels[labels["clip_id"].isin(temporal.loc[temporal["split"] == "development", "clip_id"])]
    folds = make_folds(development, num_folds=NUM_FOLDS, seed=0)
    return TinyData(
        root=root,
        labels_csv=root / "synthetic" / "labels.csv",
        folds_csv=write_csv(root / "folds.csv", folds),
        temporal_csv=write_csv(root / "temporal_split.csv", temporal),
        cache_dir=root / "cache",
    )


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> TinyData:
    return build_tiny_data(tmp_path_factory.mktemp("tiny_data"))
