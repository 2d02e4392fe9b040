"""A prepared study's data and settings, stored once, and the one ingestion step that reads a dataset.

``Prepared`` is what the preparation step (notebook 01, ``lusv prepare``) writes to
``<run_dir>/prepare/prepared.json``: where the labels, splits and clip cache are, and the study's
settings (profile, data source and path, clip policy, frames, size, window settings, held-out
fraction, seed, the lusv version that prepared it). Every later step reads them from there
instead of being told again: ``Prepared.resolve_profile`` refuses, in one line naming both, a
profile that disagrees with the study's.

``ingest`` is how a dataset enters lusv, for a study's preparation and for external validation
alike: read the source's labels table, decode every clip once into the clip cache (frames and
size of the study's clip policy), save the ingestion report, keep the usable clips.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lusv.data.cache import ClipCache, IngestReport
from lusv.data.labels import read_labels
from lusv.data.sources import get_source
from lusv.data.windows import clip_cache_for, WindowedClips
from lusv.errors import ConfigError, IngestError
from lusv.infra import io
from lusv.paths import default_cache_root, in_repository

log = logging.getLogger(__name__)

_PATH_FIELDS = ("run_dir", "labels_csv", "folds_csv", "cache_root")
_OPTIONAL_PATH_FIELDS = ("temporal_csv", "held_out_csv", "windows_csv", "frame_labels_csv")


@dataclass(frozen=True)
class Prepared:
    """Everything a training run needs to find its data, and the settings the study was prepared
    with; written under ``<run_dir>/prepare``. ``profile`` is None only for a study prepared by a
    lusv that did not record it."""

    run_dir: Path
    labels_csv: Path
    folds_csv: Path
    temporal_csv: Path | None
    cache_root: Path
    num_frames: int
    image_size: int
    num_folds: int
    dataset: str
    data: str = "synthetic"
    data_path: str | None = None  # synthetic root, POCUS folder or labels CSV actually read
    held_out_csv: Path | None = None  # the held-out split (None: no held-out test set)
    # the clip policy (lusv.data.windows); a study prepared before it existed made one clip per video
    clip_policy: str = "whole"
    window_overlap: int = 0
    target_fps: float | None = None
    windows_csv: Path | None = None
    frame_labels_csv: Path | None = None
    # the settings later steps take from the study (absent from studies prepared before lusv 0.1.0 recorded them)
    profile: str | None = None
    seed: int = 0
    held_out_fraction: float | None = None
    lusv_version: str | None = None

    @property
    def prepare_dir(self) -> Path:
        return self.run_dir / "prepare"

    def cache(self):
        """The clip cache, or under the windows policy its windows (``lusv.data.windows.WindowedClips``,
        read like a clip cache by window id)."""
        cache = clip_cache_for(self, self.cache_root)
        if self.clip_policy != "windows":
            return cache
        return WindowedClips(cache, io.read_table(self.windows_csv), self.num_frames)

    def labels(self) -> pd.DataFrame:
        return read_labels(self.labels_csv)

    def folds(self) -> pd.DataFrame:
        return io.read_table(self.folds_csv)

    def resolve_profile(self, asked: str | None = None) -> str:
        """The study's profile; ``asked`` (a step's own profile argument) must agree with it."""
        if self.profile is None:
            if asked is None:
                raise ConfigError(f"{self.run_dir} was prepared by a lusv that did not record its profile: "
                                  "pass the profile it was prepared with (e.g. profile='quick') or prepare it again")
            return asked
        if asked is not None and asked != self.profile:
            raise ConfigError(f"{self.run_dir} was prepared with profile {self.profile!r}, not {asked!r}: leave the "
                              f"profile out (the study's is used) or prepare another study for {asked!r}")
        return self.profile

    def settings(self) -> dict[str, Any]:
        """The study's settings as a reader wants them (notebooks show this table)."""
        return {"profile": self.profile, "data": self.data, "data path": self.data_path, "dataset": self.dataset,
                "clip policy": self.clip_policy, "frames": self.num_frames, "size": self.image_size,
                "window overlap": self.window_overlap if self.clip_policy == "windows" else None,
                "target fps": self.target_fps, "folds": self.num_folds, "held-out fraction": self.held_out_fraction,
                "seed": self.seed, "lusv version": self.lusv_version}

    def training_inputs(self) -> dict:
        """The data-location parameters of ``lusv.train.run`` for this prepared dataset."""
        return {
            "labels": str(self.labels_csv),
            "splits": str(self.folds_csv),
            "temporal_split": str(self.temporal_csv) if self.temporal_csv else None,
            "held_out": str(self.held_out_csv) if self.held_out_csv else None,
            "cache_dir": str(self.cache_root),
            "num_frames": self.num_frames,
            "image_size": self.image_size,
            "num_folds": self.num_folds,
            "clip_policy": self.clip_policy,
            "window_overlap": self.window_overlap,
            "target_fps": self.target_fps,
            "frame_labels": str(self.frame_labels_csv) if self.frame_labels_csv else None,
        }

    def save(self) -> None:
        record = {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}
        io.write_json(self.prepare_dir / "prepared.json", record)

    @classmethod
    def load(cls, run_dir: str | Path) -> "Prepared":
        path = in_repository(run_dir) / "prepare" / "prepared.json"
        if not path.is_file():
            raise ConfigError(f"{path} not found: run the preprocessing step (notebook 01 / `lusv prepare`) first")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is unreadable or damaged ({type(exc).__name__}: {exc}): prepare the study "
                              "again (notebook 01 / `lusv prepare`)") from None
        fields = set(cls.__dataclass_fields__)
        if not isinstance(record, dict) or not set(_PATH_FIELDS) <= set(record):
            raise ConfigError(f"{path} is not a prepared study's record (no {', '.join(_PATH_FIELDS)}): prepare the "
                              "study again (notebook 01 / `lusv prepare`)")
        unknown = sorted(set(record) - fields)
        if unknown:
            raise ConfigError(f"{path} was written by another lusv version ({record.get('lusv_version')}) with "
                              f"settings this one does not know ({', '.join(unknown[:5])}): use that version, or "
                              "prepare the study again")
        for key in _PATH_FIELDS:
            record[key] = Path(record[key])
        for key in _OPTIONAL_PATH_FIELDS:  # absent from older records
            record[key] = Path(record[key]) if record.get(key) else None
        try:
            return cls(**record)
        except TypeError as exc:  # a required setting missing
            raise ConfigError(f"{path} lacks settings of a prepared study ({exc}): prepare the study again") from None

    @classmethod
    def recorded(cls, run_dir: str | Path) -> "Prepared | None":
        """The study prepared in ``run_dir``, or None when there is none yet."""
        if not (in_repository(run_dir) / "prepare" / "prepared.json").is_file():
            return None
        return cls.load(run_dir)


def dataset_location(data: str, data_path: str | Path | None = None, synthetic: dict | None = None) -> Path:
    """Where a dataset is read from: ``data_path``, else the source's default (the synthetic
    folder under data/ named after its options, the POCUS folder beside the repository)."""
    return get_source(data).location(data_path, synthetic)


def dataset_name(data: str, data_path: str | Path | None, synthetic: dict | None = None) -> str:
    """A name for the cache folder: one per dataset, so two datasets never share entries."""
    return get_source(data).cache_name(data, dataset_location(data, data_path, synthetic).resolve())


def load_dataset(data: str, data_path: str | Path | None = None, synthetic: dict | None = None,
                 dayfirst: bool = False) -> pd.DataFrame:
    """The labels table of a registered dataset (``lusv.data.sources``: synthetic, pocus, folder)."""
    return get_source(data).load(dataset_location(data, data_path, synthetic), synthetic, dayfirst=dayfirst)


@dataclass(frozen=True)
class Ingested:
    """A dataset read and decoded into its clip cache: its name and location, the cache, the usable
    clips' labels, and the ingestion report (saved at ``report_path``)."""

    name: str
    location: Path
    cache: ClipCache
    usable: pd.DataFrame
    report: IngestReport
    report_path: Path
    labels: pd.DataFrame  # every row the source read, usable or not


def ingest(data: str, data_path: str | Path | None, policy: Any, report_path: Path, *, synthetic: dict | None = None,
           dayfirst: bool = False, cache_root: str | Path | None = None) -> Ingested:
    """Read a dataset and decode every clip once into its cache at ``policy``'s clip policy, frames
    and size (a ``RunParams`` or a ``Prepared``); the report is saved at ``report_path``, also when
    no clip is usable (``IngestError``, carrying the per-clip reasons the user needs to fix the data)."""
    name = dataset_name(data, data_path, synthetic)
    labels = load_dataset(data, data_path, synthetic, dayfirst=dayfirst)
    # Absolute: prepared.json must lead later steps to the same cache from any working directory.
    root = Path(cache_root).resolve() if cache_root else default_cache_root(name)
    cache = clip_cache_for(policy, root)
    try:
        report = cache.build(labels)
    except IngestError as exc:
        raise IngestError(str(exc), exc.report, report_path=exc.report.save(report_path)) from None
    report.save(report_path)
    log.info("%s: %s", name, report)
    usable = labels[labels["clip_id"].isin(set(report.usable_ids))].reset_index(drop=True)
    return Ingested(name, dataset_location(data, data_path, synthetic), cache, usable, report, report_path, labels)
