"""The study pipeline that the notebooks, ``run_all.sh`` and the ``lusv`` command call.

prepare -> (labels table, clip cache, ingestion report, temporal split, patient folds)
train_folds -> one training run per fold of one model configuration (train_configurations: several
as one grid; sequential or on Ray, see lusv.executors)
out_of_fold -> the test-fold predictions of every fold, stacked (``lusv.out_of_fold``, re-exported
here with ``results``, ``load_out_of_fold`` and ``out_of_fold_attention``).

A study run lives in one folder, ``results/<run>/`` (a relative folder is relative to the
repository root, see ``lusv.paths``)::

    prepare/    labels.csv, ingest_report.csv (+ _summary), temporal_split.csv, held_out.csv, folds.csv,
                fold_balance.csv; under clip_policy="windows" also windows.csv (one row per window:
                clip_id = window id, video_id, patient_id, start, length, the pattern columns) and,
                for a dataset with a per-frame truth, frame_labels.csv (clip_id, first_frame, last_frame, pattern)
    runs/       one folder per (model configuration, fold), written by lusv.train
    oof/        out-of-fold predictions per model configuration (see ``lusv.out_of_fold``)
    tables/, figures/   what the results notebook writes

The dataset comes from a registered source (``lusv.sources``): its location, cache name,
reader and whether it has a per-frame truth come from there. When the dataset has acquisition
dates, patients first seen on or after a cutoff date form the temporally separated test set
(see ``lusv.temporal_split``); of the rest, about ``held_out_fraction`` of the patients (the
paper: 10%) form the held-out test set (``lusv.splits.held_out_split``), and the folds are made on
what remains, the development set. Every fold model predicts both test sets.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lusv import io
from lusv.config import params_for, synthetic_options
from lusv.cache import ClipCache
from lusv.errors import ConfigError, IngestError
from lusv.out_of_fold import (  # noqa: F401 - the study steps the notebooks call
    SPLITS,
    FoldAttention,
    SplitResults,
    fold_ensemble,
    fold_model_predictions,
    load_out_of_fold,
    out_of_fold,
    out_of_fold_attention,
    paper_results,
    results,
    sweep_results,
    video_level_results,
    write_out_of_fold,
    write_report,
)
from lusv.paths import default_cache_root, in_repository
from lusv.sources import get_source
from lusv.windows import WindowedClips, clip_cache_for, write_windows
from lusv.truth import example_frames_figure, frame_truth, region_truth  # noqa: F401 - study steps too

log = logging.getLogger(__name__)


def resolve_run_dir(run_dir: str | Path) -> Path:
    """A relative run dir is relative to the repository root, wherever the notebook runs from."""
    return in_repository(run_dir)


@dataclass(frozen=True)
class Prepared:
    """Everything a training run needs to find its data; written under ``<run_dir>/prepare``."""

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
    # the clip policy (lusv.windows); a study prepared before it existed made one clip per video
    clip_policy: str = "whole"
    window_overlap: int = 0
    target_fps: float | None = None
    windows_csv: Path | None = None
    frame_labels_csv: Path | None = None

    @property
    def prepare_dir(self) -> Path:
        return self.run_dir / "prepare"

    def cache(self):
        """The clip cache, or under the windows policy its windows (``lusv.windows.WindowedClips``,
        read like a clip cache by window id)."""
        cache = clip_cache_for(self, self.cache_root)
        if self.clip_policy != "windows":
            return cache
        return WindowedClips(cache, io.read_table(self.windows_csv), self.num_frames)

    def labels(self) -> pd.DataFrame:
        from lusv.labels import read_labels

        return read_labels(self.labels_csv)

    def folds(self) -> pd.DataFrame:
        return io.read_table(self.folds_csv)

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
        record = json.loads(path.read_text())
        for key in ("run_dir", "labels_csv", "folds_csv", "cache_root"):
            record[key] = Path(record[key])
        for key in ("temporal_csv", "held_out_csv", "windows_csv", "frame_labels_csv"):  # absent from older records
            record[key] = Path(record[key]) if record.get(key) else None
        return cls(**record)


def dataset_name(data: str, data_path: str | Path | None, synthetic: dict | None = None) -> str:
    """A name for the cache folder: one per dataset, so two datasets never share entries."""
    return get_source(data).cache_name(data, dataset_location(data, data_path, synthetic).resolve())


def dataset_location(data: str, data_path: str | Path | None = None, synthetic: dict | None = None) -> Path:
    """Where a dataset is read from: ``data_path``, else the source's default (the synthetic
    folder under data/ named after its options, the POCUS folder beside the repository)."""
    return get_source(data).location(data_path, synthetic)


def load_dataset(data: str, data_path: str | Path | None = None, synthetic: dict | None = None,
                 dayfirst: bool = False) -> pd.DataFrame:
    """The labels table of a registered dataset (``lusv.sources``: synthetic, pocus, folder)."""
    return get_source(data).load(dataset_location(data, data_path, synthetic), synthetic, dayfirst=dayfirst)


def prepare(
    run_dir: str | Path,
    profile: str = "quick",
    data: str = "synthetic",
    data_path: str | Path | None = None,
    num_folds: int = 5,
    seed: int = 0,
    temporal_test_fraction: float = 0.2,
    num_frames: int | None = None,
    image_size: int | None = None,
    synthetic: dict | None = None,
    cache_root: str | Path | None = None,
    dayfirst: bool = False,
    temporal_split: bool = True,
    held_out_fraction: float | None = None,
    clip_policy: str | None = None,
    window_overlap: int | None = None,
    target_fps: float | None = None,
) -> Prepared:
    """Read a dataset, decode every clip once into the cache, and make the split files.

    Long because its keywords are the ``lusv prepare`` flags, one line each. Frames and size default to the profile's (``lusv.config.PROFILES``). ``dayfirst`` reads a
    folder dataset's ``acquired_on`` as day-first dates (20.04.2020). Clips that cannot be
    used are skipped and counted in ``prepare/ingest_report.csv``; the study stops only when
    none is usable. When every clip has an acquisition date, about ``temporal_test_fraction``
    of the clips (whole patients, the latest first seen) form the temporally separated test
    set (``temporal_split=False`` or fraction 0: none, as when all were first seen on one date).
    Of the rest, about ``held_out_fraction`` of the patients (None: the profile's, see
    ``lusv.config.HELD_OUT_BY_PROFILE``; 0 = none) form the held-out test set; the folds split the others.
    ``clip_policy`` defaults to the source's (POCUS: whole), else the profile's; under "windows"
    every video is cached whole and cut into windows (``prepare/windows.csv``, ``lusv.windows``).
    """
    from lusv.splits import check_enough_patients, fold_balance, load_or_make_folds

    policy = _checked_settings(profile, num_folds, num_frames, image_size, clip_policy or get_source(data).clip_policy,
                               window_overlap, target_fps)
    run_dir = in_repository(run_dir)
    prepare_dir = run_dir / "prepare"
    if get_source(data).generated and synthetic is None:
        synthetic = synthetic_options(profile)
    name = dataset_name(data, data_path, synthetic)
    labels = load_dataset(data, data_path, synthetic, dayfirst=dayfirst)

    # Absolute: prepared.json must lead later steps to the same cache from any working directory.
    cache_root = Path(cache_root).resolve() if cache_root else default_cache_root(name)
    cache = clip_cache_for(policy, cache_root)
    usable, report, report_path = _cache_clips(labels, cache, prepare_dir, name)
    labels_csv = io.write_csv(prepare_dir / "labels.csv", _with_iso_dates(usable))
    temporal_csv, held_out_csv, development = _set_apart_test_sets(
        usable, prepare_dir, name, profile, temporal_split, temporal_test_fraction, held_out_fraction, seed, num_folds)
    check_enough_patients(development, usable, labels, num_folds, report, report_path)
    folds = load_or_make_folds(development, prepare_dir / "folds.csv", num_folds=num_folds, seed=seed)
    io.write_csv(prepare_dir / "fold_balance.csv", fold_balance(folds, development))
    location = dataset_location(data, data_path, synthetic)
    prepared = Prepared(
        run_dir=run_dir, labels_csv=labels_csv, folds_csv=prepare_dir / "folds.csv", temporal_csv=temporal_csv,
        cache_root=cache_root, num_frames=policy.num_frames, image_size=policy.image_size, num_folds=num_folds, dataset=name,
        data=data, data_path=str(location.resolve()), held_out_csv=held_out_csv,
        **_windows_files(policy, prepare_dir, cache, usable, get_source(data), location),
    )  # fmt: skip
    prepared.save()
    return prepared


def _checked_settings(profile: str, num_folds: int, num_frames: int | None, image_size: int | None,
                      clip_policy: str | None, window_overlap: int | None, target_fps: float | None):
    """The profile's RunParams with the frames, size and clip policy asked for (None: the
    profile's), checked (``ConfigError``) before the long decoding, as is ``num_folds`` (not
    only when training refuses the folds)."""
    if num_folds < 3:
        raise ConfigError(f"num_folds={num_folds}: separate train, validation and test folds need at least 3 folds")
    defaults = params_for(profile)
    return params_for(
        profile, num_frames=num_frames or defaults.num_frames, image_size=image_size or defaults.image_size,
        clip_policy=clip_policy or defaults.clip_policy, target_fps=target_fps,
        window_overlap=defaults.window_overlap if window_overlap is None else window_overlap,
    )


def _windows_files(policy, prepare_dir: Path, cache: ClipCache, usable: pd.DataFrame, source, location: Path) -> dict:
    """The clip-policy fields of ``Prepared``; under windows, after writing windows.csv (and the
    dataset's frame_labels.csv when it has one)."""
    if policy.clip_policy != "windows":
        return {"clip_policy": policy.clip_policy}
    windows_csv, frame_labels_csv = write_windows(prepare_dir, cache, usable, policy.num_frames, policy.window_overlap,
                                                  source.frame_labels(location))
    return {"clip_policy": "windows", "window_overlap": policy.window_overlap, "target_fps": policy.target_fps,
            "windows_csv": windows_csv, "frame_labels_csv": frame_labels_csv}


def _cache_clips(labels: pd.DataFrame, cache: ClipCache, prepare_dir: Path, name: str):
    """Decode every clip once into the cache; (usable clips' labels, ingest report, its path)."""
    report_path = prepare_dir / "ingest_report.csv"
    try:
        report = cache.build(labels)
    except IngestError as exc:
        # Nothing usable: the per-clip reasons are what the user needs to fix the data, so keep them.
        raise IngestError(str(exc), exc.report, report_path=exc.report.save(report_path)) from None
    report.save(report_path)
    log.info("%s: %s", name, report)
    return labels[labels["clip_id"].isin(set(report.usable_ids))].reset_index(drop=True), report, report_path


def _set_apart_test_sets(usable: pd.DataFrame, prepare_dir: Path, name: str, profile: str, temporal: bool,
                         temporal_fraction: float, held_out_fraction: float | None, seed: int, num_folds: int
                         ) -> tuple[Path | None, Path | None, pd.DataFrame]:
    """(The temporal split file, the held-out split file, either None when there is none; the
    development clips left for the folds). ``held_out_fraction`` None = the profile's."""
    from lusv.config import held_out_fraction as profile_fraction
    from lusv.splits import load_or_make_held_out
    from lusv.temporal_split import set_apart_temporal_test

    temporal_csv, development = set_apart_temporal_test(
        usable, prepare_dir / "temporal_split.csv", temporal_fraction if temporal else 0, name, asked=temporal)
    fraction = profile_fraction(profile) if held_out_fraction is None else held_out_fraction
    held_out = load_or_make_held_out(development, prepare_dir / "held_out.csv", fraction, seed=seed, min_left=num_folds)
    if held_out is None:
        return temporal_csv, None, development
    kept = held_out.loc[held_out["split"] == "development", "clip_id"]
    return temporal_csv, prepare_dir / "held_out.csv", development[development["clip_id"].isin(kept)].reset_index(drop=True)


def _with_iso_dates(labels: pd.DataFrame) -> pd.DataFrame:
    out = labels.copy()
    if "acquired_on" in out:
        out["acquired_on"] = pd.to_datetime(out["acquired_on"]).dt.strftime("%Y-%m-%d")
    return out


def train_folds(
    prepared: Prepared,
    model: str,
    profile: str = "quick",
    folds: list[int] | None = None,
    key: str | None = None,
    *,
    executor: str = "sequential",
    ray_address: str | None = None,
    **overrides,
) -> list[Path]:
    """Train one model configuration on every fold (or the given ones); returns the run dirs.

    Finished folds are reused and interrupted ones resumed, so rerunning a notebook after a
    crash continues where it stopped. ``executor="ray"`` trains the folds side by side as Ray
    tasks (``ray_address``: a cluster, or None for a local Ray); see ``lusv.executors``.
    """
    key = key or model
    return train_configurations(
        prepared, {key: {"model": model, **overrides}}, profile, folds, executor=executor, ray_address=ray_address
    )[key]


def train_configurations(
    prepared: Prepared,
    configurations: dict[str, dict],
    profile: str = "quick",
    folds: list[int] | None = None,
    *,
    executor: str = "sequential",
    ray_address: str | None = None,
    **overrides,
) -> dict[str, list[Path]]:
    """Train several model configurations on every fold as one grid; returns their run dirs by key.

    ``configurations`` maps a key (its name in oof/ and the tables) to RunParams overrides that
    include ``model``; ``overrides`` apply to all. One grid lets the Ray executor run every
    (configuration, fold) side by side instead of one configuration at a time.
    """
    from lusv.executors import run_grid

    folds = list(range(prepared.num_folds)) if folds is None else list(folds)
    keys, grid = [], []
    for key, configuration in configurations.items():
        for fold in folds:
            keys.append(key)
            grid.append(params_for(
                profile,
                fold=fold,
                out_dir=str(prepared.run_dir / "runs"),
                run_name=f"{key}-fold{fold}",
                resume=True,
                **{**prepared.training_inputs(), **overrides, **configuration},
            ))
    run_dirs: dict[str, list[Path]] = {key: [] for key in configurations}
    for key, run_dir in zip(keys, run_grid(grid, executor, address=ray_address)):
        run_dirs[key].append(run_dir)
    for key, dirs in run_dirs.items():
        write_out_of_fold(prepared.run_dir, key, dirs, temporal_test=prepared.temporal_csv is not None,
                          held_out=prepared.held_out_csv is not None)
    return run_dirs


def ingest_summary(prepared: Prepared) -> pd.DataFrame:
    """Clips ingested / reused / rebuilt / skipped, by reason, for this prepared dataset
    (``prepare/ingest_report_summary.csv``, saved beside the per-clip ``ingest_report.csv``)."""
    return pd.read_csv(prepared.prepare_dir / "ingest_report_summary.csv")


def temporal_ablation(
    prepared: Prepared,
    profile: str = "quick",
    kernel_sizes: list[int] | None = None,
    head_counts: list[int] | None = None,
    *,
    executor: str = "sequential",
    ray_address: str | None = None,
    **overrides,
) -> list[str]:
    """Train LUV-Net without its temporal module, with each temporal kernel size K and with each
    number of attention heads H, on every fold, as one grid (the paper swept K and H on one fold).

    The run at the profile's own K and H is the main LUV-Net of notebook 02 (key "luvnet") and
    is reused rather than trained twice. ``None``: the profile's grid (``lusv.sweeps.sweep_grid``:
    the paper's Tables 8-9 grid in the paper profile). Returns the keys to compare, LUV-Net first.
    """
    from lusv.sweeps import sweep_grid

    main = params_for(profile)
    kernel_sizes = sweep_grid(profile, "kernel_size") if kernel_sizes is None else kernel_sizes
    head_counts = sweep_grid(profile, "num_heads") if head_counts is None else head_counts
    configurations = {}
    for knob, values, own, prefix in (("kernel_size", kernel_sizes, main.kernel_size, "luvnet_k"),
                                      ("num_heads", head_counts, main.num_heads, "luvnet_h")):
        for value in values:
            configurations["luvnet" if value == own else f"{prefix}{value}"] = {"model": "luvnet", knob: value}
    configurations["luvnet_no_temporal"] = {"model": "luvnet_no_temporal"}
    train_configurations(prepared, configurations, profile, executor=executor, ray_address=ray_address, **overrides)
    return sorted(configurations, key=lambda k: k != "luvnet")
