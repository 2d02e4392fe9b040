"""The study pipeline that the notebooks, ``run_all.sh`` and the ``lusv`` command call.

prepare -> (labels table, clip cache, ingestion report, temporal split, patient folds)
train_folds -> one training run per fold of one model configuration (train_configurations: several
as one grid; sequential or on Ray, see lusv.executors)
out_of_fold -> the test-fold predictions of every fold, stacked (``lusv.out_of_fold``, re-exported
here with ``results``, ``load_out_of_fold`` and ``out_of_fold_attention``).

A study run lives in one folder, ``results/<run>/`` (a relative folder is relative to the
repository root, see ``lusv.paths``)::

    prepare/    labels.csv, ingest_report.csv (+ _summary), temporal_split.csv, folds.csv, fold_balance.csv
    runs/       one folder per (model configuration, fold), written by lusv.train
    oof/        out-of-fold predictions per model configuration (see ``lusv.out_of_fold``)
    tables/, figures/   what the results notebook writes

The dataset comes from a registered source (``lusv.sources``): its location, cache name,
reader and whether it has a per-frame truth come from there. When the dataset has acquisition
dates, patients first seen on or after a cutoff date form the temporally separated test set
(see ``lusv.temporal_split``) and folds are made on the rest.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lusv import io
from lusv.errors import ConfigError, IngestError, TooFewPatientsError
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
        return io.read_table(self.folds_csv)

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
        path = in_repository(run_dir) / "prepare" / "prepared.json"
        if not path.is_file():
            raise ConfigError(f"{path} not found: run the preprocessing step (notebook 01 / `lusv prepare`) first")
        record = json.loads(path.read_text())
        for key in ("run_dir", "labels_csv", "folds_csv", "cache_root"):
            record[key] = Path(record[key])
        record["temporal_csv"] = Path(record["temporal_csv"]) if record["temporal_csv"] else None
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
) -> Prepared:
    """Read a dataset, decode every clip once into the cache, and make the split files.

    Frames and size default to the profile's (``lusv.config.PROFILES``). ``dayfirst`` reads a
    folder dataset's ``acquired_on`` as day-first dates (20.04.2020). Clips that cannot be
    used are skipped and counted in ``prepare/ingest_report.csv``; the study stops only when
    none is usable. When every clip has an acquisition date, about ``temporal_test_fraction``
    of the clips (whole patients, the latest first seen) form the temporally separated test
    set and the folds are made on the rest (the development set). ``temporal_split=False`` (or
    fraction 0) puts every clip into the folds, as do clips all first seen on one date (warned).
    """
    from lusv.config import params_for, synthetic_options
    from lusv.splits import fold_balance, load_or_make_folds

    defaults = params_for(profile)
    if num_folds < 3:  # checked before the (long) decoding, not when training refuses the folds
        raise ConfigError(f"num_folds={num_folds}: separate train, validation and test folds need at least 3 folds")
    num_frames = num_frames or defaults.num_frames
    image_size = image_size or defaults.image_size
    run_dir = in_repository(run_dir)
    prepare_dir = run_dir / "prepare"
    if get_source(data).generated and synthetic is None:
        synthetic = synthetic_options(profile)
    name = dataset_name(data, data_path, synthetic)
    labels = load_dataset(data, data_path, synthetic, dayfirst=dayfirst)

    # Absolute: prepared.json must lead later steps to the same cache from any working directory.
    cache_root = Path(cache_root).resolve() if cache_root else default_cache_root(name)
    usable, report, report_path = _cache_clips(labels, cache_root, num_frames, image_size, prepare_dir, name)
    labels_csv = io.write_csv(prepare_dir / "labels.csv", _with_iso_dates(usable))
    temporal_csv, development = _temporal_split(usable, prepare_dir, temporal_test_fraction if temporal_split else 0,
                                                name, asked=temporal_split)
    _check_enough_patients(development, usable, labels, num_folds, report, report_path)
    folds = load_or_make_folds(development, prepare_dir / "folds.csv", num_folds=num_folds, seed=seed)
    io.write_csv(prepare_dir / "fold_balance.csv", fold_balance(folds, development))

    prepared = Prepared(
        run_dir=run_dir, labels_csv=labels_csv, folds_csv=prepare_dir / "folds.csv", temporal_csv=temporal_csv,
        cache_root=cache_root, num_frames=num_frames, image_size=image_size, num_folds=num_folds, dataset=name,
        data=data, data_path=str(dataset_location(data, data_path, synthetic).resolve()),
    )  # fmt: skip
    prepared.save()
    return prepared


def _cache_clips(labels: pd.DataFrame, cache_root: Path, num_frames: int, image_size: int,
                 prepare_dir: Path, name: str):
    """Decode every clip once into the cache; (usable clips' labels, ingest report, its path)."""
    from lusv.cache import ClipCache

    cache = ClipCache(cache_root, num_frames, image_size)
    report_path = prepare_dir / "ingest_report.csv"
    try:
        report = cache.build(labels)
    except IngestError as exc:
        # Nothing usable: the per-clip reasons are what the user needs to fix the data, so keep them.
        raise IngestError(str(exc), exc.report, report_path=exc.report.save(report_path)) from None
    report.save(report_path)
    log.info("%s: %s", name, report)
    return labels[labels["clip_id"].isin(set(report.usable_ids))].reset_index(drop=True), report, report_path


def _temporal_split(usable: pd.DataFrame, prepare_dir: Path, test_fraction: float, name: str, asked: bool = True
                    ) -> tuple[Path | None, pd.DataFrame]:
    """The temporal split file (None without one) and the development clips the folds are made on.

    Without one (not asked for, fraction 0, missing dates or a single date) the split files of
    an earlier prepare are removed: they must not mislead a later step.
    """
    from lusv.temporal_split import load_or_make_temporal_split, temporal_split_unavailable

    why_not = temporal_split_unavailable(usable) if test_fraction > 0 else "not asked for"
    if why_not is None:
        temporal = load_or_make_temporal_split(usable, prepare_dir / "temporal_split.csv", test_fraction=test_fraction)
        development_ids = set(temporal.loc[temporal["split"] == "development", "clip_id"])
        return prepare_dir / "temporal_split.csv", usable[usable["clip_id"].isin(development_ids)].reset_index(drop=True)
    for stale in ("temporal_split.csv", "temporal_split.json"):
        (prepare_dir / stale).unlink(missing_ok=True)
    if asked and test_fraction > 0:
        log.warning("%s: %s, so there is no temporally separated test set", name, why_not)
    return None, usable


def _check_enough_patients(development, usable, labels, num_folds, report, report_path) -> None:
    """Refuse, with the numbers and the ingest table, when the folds cannot be made."""
    patients = development["patient_id"].nunique()
    if patients >= num_folds:
        return
    held_out = len(usable) - len(development)
    where = [f"{len(labels) - len(usable)} clip(s) skipped at ingest (see {report_path})"]
    if held_out:
        where.append(f"{held_out} held out as the temporal test set")
    if patients >= 3:
        advice = f"lower num_folds to at most {patients} or add patients"
    else:
        advice = ("separate train, validation and test folds need at least 3 patients: add patients"
                  + (", fix the skipped clips" if len(labels) > len(usable) else "")
                  + (" or prepare without the temporal test set (--no-temporal-split)" if held_out else ""))
    raise TooFewPatientsError(
        f"only {patients} patient(s) with {len(development)} clip(s) are left for {num_folds} patient-level "
        f"folds ({'; '.join(where)}): {advice}",
        report, report_path,  # lusv prepare prints the skip table
    )


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
        write_out_of_fold(prepared.run_dir, key, dirs, temporal_test=prepared.temporal_csv is not None)
    return run_dirs


def ingest_summary(prepared: Prepared) -> pd.DataFrame:
    """Clips ingested / reused / rebuilt / skipped, by reason, for this prepared dataset
    (``prepare/ingest_report_summary.csv``, saved beside the per-clip ``ingest_report.csv``)."""
    return pd.read_csv(prepared.prepare_dir / "ingest_report_summary.csv")


def temporal_ablation(
    prepared: Prepared,
    profile: str = "quick",
    kernel_sizes: list[int] = (5, 13),
    head_counts: list[int] = (),
    *,
    executor: str = "sequential",
    ray_address: str | None = None,
    **overrides,
) -> list[str]:
    """Train LUV-Net without its temporal module, with each temporal kernel size K and with each
    number of attention heads H, on every fold, as one grid (the paper swept K and H on one fold).

    The run at the profile's own K and H is the main LUV-Net of notebook 02 (key "luvnet") and
    is reused rather than trained twice. Returns the keys to compare, LUV-Net first.
    """
    from lusv.config import params_for

    main = params_for(profile)
    configurations = {}
    for knob, values, own, prefix in (("kernel_size", kernel_sizes, main.kernel_size, "luvnet_k"),
                                      ("num_heads", head_counts, main.num_heads, "luvnet_h")):
        for value in values:
            configurations["luvnet" if value == own else f"{prefix}{value}"] = {"model": "luvnet", knob: value}
    configurations["luvnet_no_temporal"] = {"model": "luvnet_no_temporal"}
    train_configurations(prepared, configurations, profile, executor=executor, ray_address=ray_address, **overrides)
    return sorted(configurations, key=lambda k: k != "luvnet")


def frame_truth(prepared: Prepared, clip_ids: list[str]):
    """Per-frame pattern presence (N, T, P) aligned with the cache, or None for data without it."""
    source = get_source(prepared.data)
    if not source.has_frame_truth:
        return None
    return source.module.frame_truth(prepared.data_path, clip_ids, prepared.num_frames)


def region_truth(prepared: Prepared):
    """``clip_ids -> (N, T, 4, S, S)`` masks of where each pattern is drawn, in the cache's
    geometry (``lusv.sources.synthetic.regions``), or None for data without such a truth."""
    from functools import partial

    region_masks = getattr(get_source(prepared.data).module, "region_masks", None)
    if region_masks is None:
        return None
    return partial(region_masks, prepared.data_path, num_frames=prepared.num_frames, image_size=prepared.image_size)


def example_frames_figure(prepared: Prepared):
    """Example frames per pattern: for a source with per-frame truth, its own video frames with
    the frames where each pattern is present marked; otherwise prepared frames from the cache."""
    from lusv.report import example_frames_figure as figure

    source = get_source(prepared.data)
    if source.has_frame_truth:
        labels, load_frames, truth = source.module.example_frames(prepared.data_path)
        return figure(labels, load_frames, truth, title=source.module.EXAMPLE_FRAMES_TITLE)
    cache = prepared.cache()

    def load_frames(clip_id: str):
        clip, length = cache.load(clip_id)
        return clip[..., 0], length

    return figure(prepared.labels(), load_frames)
