"""The study pipeline that the notebooks, ``run_all.sh`` and the ``lusv`` command call.

prepare -> (labels table, clip cache, ingestion report, temporal split, patient folds)
train_folds -> one training run per fold of one model configuration (train_configurations: several
as one grid; sequential or on Ray, see lusv.executors)
out_of_fold -> the test-fold predictions of every fold, stacked: each clip predicted exactly once
by a model that never saw its patient.

A study run lives in one folder, ``results/<run>/``::

    prepare/    labels.csv, ingest_report.csv (+ _summary), temporal_split.csv, folds.csv, fold_balance.csv
    runs/       one folder per (model configuration, fold), written by lusv.train
    oof/        <key>.test.csv   out-of-fold test predictions (each development clip once)
                <key>.val.csv    each fold model's validation-fold predictions (for thresholds)
                (both: fold = the clip's fold, model_fold = the fold of the model that predicted it)
                <key>.temporal_test.csv   fold-ensemble predictions on the temporally separated set
    tables/, figures/   what the results notebook writes

When the dataset has acquisition dates, patients first seen on or after a cutoff date form the
temporally separated test set (see ``lusv.splits.temporal_split``) and folds are made on the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lusv import io
from lusv.errors import ConfigError, LusvError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO_ROOT / "data"
DEFAULT_POCUS_PATH = REPO_ROOT.parent / "shared" / "data" / "pocus"
SPLITS = ("test", "val", "temporal_test")

# The synthetic dataset each profile generates: quick stays small enough for a CPU; paper
# generates clips at the paper's 30 frames, large enough to crop to 256 x 256.
SYNTHETIC_BY_PROFILE = {
    "quick": {"n_clips": 150, "n_patients": 50, "num_frames": 16, "frame_size": 96},
    "paper": {"n_clips": 600, "n_patients": 150, "num_frames": 30, "frame_size": 256},
}


def resolve_run_dir(run_dir: str | Path) -> Path:
    """A relative run dir is relative to the repository root, wherever the notebook runs from."""
    run_dir = Path(run_dir)
    return run_dir if run_dir.is_absolute() else REPO_ROOT / run_dir


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

    @property
    def prepare_dir(self) -> Path:
        return self.run_dir / "prepare"

    def cache(self):
        from lusv.cache import ClipCache

        return ClipCache(self.cache_root, self.num_frames, self.image_size)

    def labels(self) -> pd.DataFrame:
        from lusv.labels import read_labels

        return read_labels(self.labels_csv)

    def folds(self) -> pd.DataFrame:
        return pd.read_csv(self.folds_csv, dtype={"clip_id": str, "patient_id": str})

    def training_inputs(self) -> dict:
        """The data-location parameters of ``lusv.train.run`` for this prepared dataset."""
        return {
            "labels": str(self.labels_csv),
            "splits": str(self.folds_csv),
            "temporal_split": str(self.temporal_csv) if self.temporal_csv else None,
            "cache_dir": str(self.cache_root),
            "num_frames": self.num_frames,
            "image_size": self.image_size,
            "num_folds": self.num_folds,
        }

    def save(self) -> None:
        record = {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}
        io.write_json(self.prepare_dir / "prepared.json", record)

    @classmethod
    def load(cls, run_dir: str | Path) -> "Prepared":
        path = resolve_run_dir(run_dir) / "prepare" / "prepared.json"
        if not path.is_file():
            raise ConfigError(f"{path} not found: run the preprocessing step (notebook 01 / `lusv prepare`) first")
        record = json.loads(path.read_text())
        for key in ("run_dir", "labels_csv", "folds_csv", "cache_root"):
            record[key] = Path(record[key])
        record["temporal_csv"] = Path(record["temporal_csv"]) if record["temporal_csv"] else None
        return cls(**record)


def dataset_name(data: str, data_path: str | Path | None, synthetic: dict | None = None) -> str:
    """A name for the cache folder: one per dataset, so two datasets never share entries."""
    location = dataset_location(data, data_path, synthetic).resolve()
    if data != "folder":
        return f"{data}-{location.with_suffix('').name}"
    # Users' CSVs are mostly all called labels.csv and their clip ids ("clip001") recur across
    # datasets, while the cache is keyed by clip id: name the folder holding the CSV and add a
    # hash of the CSV's absolute path so that two datasets never share a cache folder.
    digest = hashlib.sha1(str(location).encode("utf-8")).hexdigest()[:8]
    return f"{data}-{location.parent.name or 'root'}-{location.stem}-{digest}"


def dataset_location(data: str, data_path: str | Path | None = None, synthetic: dict | None = None) -> Path:
    """Where a dataset is read from: the synthetic folder under data/, the POCUS folder, or the CSV."""
    if data == "synthetic":
        return Path(data_path) if data_path else DATA_ROOT / "synthetic" / _synthetic_folder_name(dict(synthetic or {}))
    if data == "pocus":
        return Path(data_path) if data_path else DEFAULT_POCUS_PATH
    if data == "folder":
        if not data_path:
            raise ConfigError("data='folder' needs data_path: the labels CSV of your videos")
        return Path(data_path)
    raise ConfigError(f"unknown data source {data!r}: use 'synthetic', 'pocus' or 'folder'")


def load_dataset(data: str, data_path: str | Path | None = None, synthetic: dict | None = None,
                 dayfirst: bool = False) -> pd.DataFrame:
    """The labels table of a dataset: ``synthetic`` (generated under data/), ``pocus`` or ``folder``."""
    from lusv.sources import load_source

    location = dataset_location(data, data_path, synthetic)
    if data == "synthetic":
        return load_source("synthetic", root=location, **dict(synthetic or {}))
    if data == "pocus":
        return load_source("pocus", root=location)
    return load_source("folder", csv_path=location, dayfirst=dayfirst)


def _synthetic_folder_name(options: dict) -> str:
    if not options:
        return "default"
    return "-".join(f"{k}{v}" for k, v in sorted(options.items()))


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
) -> Prepared:
    """Read a dataset, decode every clip once into the cache, and make the split files.

    Frames and size default to the profile's (``lusv.config.PROFILES``). ``dayfirst`` reads a
    folder dataset's ``acquired_on`` as day-first dates (20.04.2020). Clips that cannot be
    used are skipped and counted in ``prepare/ingest_report.csv``; the study stops only when
    none is usable. When every clip has an acquisition date, about ``temporal_test_fraction``
    of the clips (whole patients, the latest first seen) form the temporally separated test
    set and the folds are made on the rest (the development set).
    """
    from lusv.cache import ClipCache
    from lusv.config import params_for
    from lusv.splits import fold_balance, load_or_make_folds, load_or_make_temporal_split

    defaults = params_for(profile)
    if num_folds < 3:  # checked before the (long) decoding, not when training refuses the folds
        raise ConfigError(f"num_folds={num_folds}: separate train, validation and test folds need at least 3 folds")
    num_frames = num_frames or defaults.num_frames
    image_size = image_size or defaults.image_size
    run_dir = resolve_run_dir(run_dir)
    prepare_dir = run_dir / "prepare"
    if data == "synthetic" and synthetic is None:
        synthetic = SYNTHETIC_BY_PROFILE[profile]
    name = dataset_name(data, data_path, synthetic)
    labels = load_dataset(data, data_path, synthetic, dayfirst=dayfirst)

    # Absolute: prepared.json must lead later steps to the same cache from any working directory.
    cache_root = Path(cache_root).resolve() if cache_root else DATA_ROOT / "cache" / name
    cache = ClipCache(cache_root, num_frames, image_size)
    report_path = prepare_dir / "ingest_report.csv"
    try:
        report = cache.build(labels)
    except LusvError as exc:
        # Nothing usable: the per-clip reasons are what the user needs to fix the data, so keep them.
        if getattr(exc, "report", None) is not None:
            exc.report_path = exc.report.save(report_path)
        raise
    report.save(report_path)
    log.info("%s: %s", name, report)
    usable = labels[labels["clip_id"].isin(set(report.usable_ids))].reset_index(drop=True)
    labels_csv = io.write_csv(prepare_dir / "labels.csv", _with_iso_dates(usable))

    temporal_csv = None
    development = usable
    if "acquired_on" in usable and usable["acquired_on"].notna().all() and temporal_test_fraction > 0:
        temporal = load_or_make_temporal_split(
            usable, prepare_dir / "temporal_split.csv", test_fraction=temporal_test_fraction
        )
        temporal_csv = prepare_dir / "temporal_split.csv"
        development_ids = set(temporal.loc[temporal["split"] == "development", "clip_id"])
        development = usable[usable["clip_id"].isin(development_ids)].reset_index(drop=True)
    elif temporal_test_fraction > 0:
        log.warning("%s: not every clip has acquired_on, so there is no temporally separated test set", name)

    folds = load_or_make_folds(development, prepare_dir / "folds.csv", num_folds=num_folds, seed=seed)
    io.write_csv(prepare_dir / "fold_balance.csv", fold_balance(folds, development))

    prepared = Prepared(
        run_dir=run_dir,
        labels_csv=labels_csv,
        folds_csv=prepare_dir / "folds.csv",
        temporal_csv=temporal_csv,
        cache_root=cache_root,
        num_frames=num_frames,
        image_size=image_size,
        num_folds=num_folds,
        dataset=name,
        data=data,
        data_path=str(dataset_location(data, data_path, synthetic).resolve()),
    )
    prepared.save()
    return prepared


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
    from lusv.config import params_for
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
        _write_out_of_fold(prepared, key, dirs)
    return run_dirs


def _write_out_of_fold(prepared: Prepared, key: str, run_dirs: list[Path]) -> None:
    oof_dir = prepared.run_dir / "oof"
    io.write_csv(oof_dir / f"{key}.test.csv", out_of_fold(run_dirs, "test"))
    io.write_csv(oof_dir / f"{key}.val.csv", out_of_fold(run_dirs, "val"))
    if prepared.temporal_csv is not None:
        io.write_csv(oof_dir / f"{key}.temporal_test.csv", fold_ensemble(run_dirs, "temporal_test"))


def out_of_fold(run_dirs: list[Path], split: str = "test") -> pd.DataFrame:
    """Stack one split's predictions of every fold; refuses a clip predicted twice.

    With test = fold f and validation = fold f+1, each development clip is in exactly one
    fold's test set and exactly one fold's validation set, so both stacks are clean.
    ``model_fold`` (after ``fold``) says which fold model predicted each clip.
    """
    frames = [_read_predictions(Path(d) / f"predictions_{split}.csv") for d in run_dirs]
    stacked = pd.concat(frames, ignore_index=True)
    duplicated = stacked["clip_id"][stacked["clip_id"].duplicated()]
    if len(duplicated):
        raise LusvError(f"clips in the {split} set of more than one fold: {sorted(duplicated)[:5]} — folds overlap")
    return stacked


def fold_ensemble(run_dirs: list[Path], split: str = "temporal_test") -> pd.DataFrame:
    """Average the fold models' probabilities on a held-out set every fold predicted."""
    frames = [_read_predictions(Path(d) / f"predictions_{split}.csv") for d in run_dirs]
    stacked = pd.concat(frames, ignore_index=True)
    probability_columns = [c for c in stacked.columns if c.startswith("p_")]
    keep_first = [c for c in stacked.columns if c not in probability_columns and c not in ("fold", "model_fold")]
    firsts = stacked.groupby("clip_id", sort=False)[keep_first].first().reset_index(drop=True)
    means = stacked.groupby("clip_id", sort=False)[probability_columns].mean().reset_index(drop=True)
    return pd.concat([firsts, means], axis=1)


def _read_predictions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise LusvError(f"{path} is missing: that training run did not finish")
    return pd.read_csv(path, dtype={"clip_id": str, "patient_id": str})


def load_out_of_fold(run_dir: str | Path, split: str = "test", keys: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """The ``split`` prediction tables of a study run keyed by model configuration.

    ``keys`` picks and orders them (the order of every table and legend); default: all, sorted.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    oof_dir = resolve_run_dir(run_dir) / "oof"
    found = {path.name[: -len(f".{split}.csv")]: path for path in oof_dir.glob(f"*.{split}.csv")}
    if keys is None:
        keys = sorted(found)
    missing = [key for key in keys if key not in found]
    if missing:
        raise LusvError(f"no {split} predictions for {missing} in {oof_dir}: train those models first")
    return {key: _read_predictions(found[key]) for key in keys}


def ingest_summary(prepared: Prepared) -> pd.DataFrame:
    """Clips ingested / reused / rebuilt / skipped, by reason, for this prepared dataset
    (``prepare/ingest_report_summary.csv``, saved beside the per-clip ``ingest_report.csv``)."""
    return pd.read_csv(prepared.prepare_dir / "ingest_report_summary.csv")


@dataclass
class SplitResults:
    """The tables and ROC figure of one held-out set (cross-validated test or temporal test)."""

    tables: dict
    roc: object  # matplotlib Figure
    paths: list


def results(
    run_dir: str | Path, reference: str = "luvnet", keys: list[str] | None = None, n_boot: int = 1000
) -> dict[str, SplitResults]:
    """Result tables and ROC figures of the trained models of a study run, saved and returned.

    Writes tables/<split>_<table>.csv for the cross-validated ("test") and, where present, the
    temporally separated ("temporal_test") predictions, and figures/roc_<split>.png.
    """
    from lusv.report import results_tables, roc_figure, save_figure, save_tables

    run_dir = resolve_run_dir(run_dir)
    out = {}
    test = load_out_of_fold(run_dir, "test", keys)
    val = load_out_of_fold(run_dir, "val", list(test))
    held_out = {"test": (test, val)}
    temporal_keys = [key for key in test if (run_dir / "oof" / f"{key}.temporal_test.csv").is_file()]
    if temporal_keys:
        # The fold ensemble (mean of the fold models) is no single fold model: its thresholds are
        # chosen on the validation predictions of all fold models pooled (see threshold_source).
        held_out["temporal_test"] = (load_out_of_fold(run_dir, "temporal_test", temporal_keys), val)
    for split, (predictions, val_predictions) in held_out.items():
        tables = results_tables(predictions, reference=reference, val_predictions=val_predictions, n_boot=n_boot)
        paths = save_tables({f"{split}_{name}": table for name, table in tables.items()}, run_dir / "tables")
        figure = roc_figure(predictions)
        paths.append(save_figure(figure, run_dir / "figures" / f"roc_{split}.png"))
        out[split] = SplitResults(tables, figure, paths)
    return out


def write_report(
    run_dir: str | Path, reference: str = "luvnet", keys: list[str] | None = None, n_boot: int = 1000
) -> list[Path]:
    """``results`` for the command line: saves everything and returns the paths written."""
    import matplotlib.pyplot as plt

    written = []
    for split_results in results(run_dir, reference, keys, n_boot).values():
        written += split_results.paths
        plt.close(split_results.roc)
    return written


def temporal_ablation(
    prepared: Prepared,
    profile: str = "quick",
    kernel_sizes: list[int] = (5, 13),
    *,
    executor: str = "sequential",
    ray_address: str | None = None,
    **overrides,
) -> list[str]:
    """Train LUV-Net without its temporal module and with each temporal kernel size, as one grid.

    The run at the profile's own kernel size is the main LUV-Net of notebook 02 (key "luvnet")
    and is reused rather than trained twice. Returns the keys to compare, LUV-Net first.
    """
    from lusv.config import params_for

    main_kernel = params_for(profile).kernel_size
    configurations = {
        ("luvnet" if kernel_size == main_kernel else f"luvnet_k{kernel_size}"): {"model": "luvnet", "kernel_size": kernel_size}
        for kernel_size in kernel_sizes
    }
    configurations["luvnet_no_temporal"] = {"model": "luvnet_no_temporal"}
    train_configurations(prepared, configurations, profile, executor=executor, ray_address=ray_address, **overrides)
    return sorted(configurations, key=lambda k: k != "luvnet")


@dataclass
class FoldAttention:
    """Attention of each fold's model on its own test clips (every development clip once)."""

    clip_ids: list[str]
    attention: "np.ndarray"  # (N, P or 1, H, T)
    lengths: "np.ndarray"  # (N,)
    labels: "np.ndarray"  # (N, P) with NaN for missing
    probabilities: "np.ndarray"  # (N, P)


def out_of_fold_attention(prepared: Prepared, key: str = "luvnet") -> FoldAttention:
    """Run every fold's best model on its test clips from the cache and keep the attention."""
    import numpy as np

    from lusv.patterns import PATTERNS
    from lusv.train import load_trained, predict

    cache = prepared.cache()
    parts = []
    for run_dir in sorted((prepared.run_dir / "runs").glob(f"{key}-fold*")):
        test = _read_predictions(run_dir / "predictions_test.csv")
        clips, lengths = cache.load_many(test["clip_id"])
        probabilities, attention = predict(load_trained(run_dir), clips, lengths, return_attention=True)
        if attention is None:
            raise ConfigError(f"model {key!r} has no attention to show")
        parts.append((test, attention, lengths, probabilities))
    if not parts:
        raise LusvError(f"no trained runs named {key}-fold* in {prepared.run_dir / 'runs'}: train them first")
    tests = pd.concat([p[0] for p in parts], ignore_index=True)
    return FoldAttention(
        clip_ids=tests["clip_id"].tolist(),
        attention=np.concatenate([p[1] for p in parts]),
        lengths=np.concatenate([p[2] for p in parts]),
        labels=tests[list(PATTERNS)].to_numpy(dtype=float),
        probabilities=np.concatenate([p[3] for p in parts]),
    )


def frame_truth(prepared: Prepared, clip_ids: list[str]):
    """Per-frame pattern presence (N, T, P) aligned with the cache, or None for data without it."""
    if prepared.data != "synthetic":
        return None
    from lusv.synthetic import frame_truth_array, read_frame_truth

    truth, _ = frame_truth_array(read_frame_truth(prepared.data_path), clip_ids, prepared.num_frames)
    return truth


def example_frames_figure(prepared: Prepared):
    """Example frames per pattern: the synthetic generator's own figure (marks the frames where
    each pattern is present), or prepared frames from the cache for real data."""
    if prepared.data == "synthetic":
        from lusv.synthetic import plot_example_frames

        return plot_example_frames(prepared.data_path)
    from lusv.report import example_clips_figure

    return example_clips_figure(prepared.cache(), prepared.labels())
