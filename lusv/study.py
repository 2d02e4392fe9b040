"""The study pipeline that the notebooks, ``run_all.sh`` and the ``lusv`` command call.

prepare -> (labels table, clip cache, ingestion report, temporal split, patient folds)
train_folds -> one training run per fold of one model configuration (train_configurations: several
as one grid; sequential or on Ray, see lusv.train.executors)
out_of_fold -> the test-fold predictions of every fold, stacked (``lusv.evaluation.out_of_fold``, re-exported
here with ``results``, ``load_out_of_fold`` and ``out_of_fold_attention``).

A study run lives in one folder, ``results/<run>/`` (a relative folder is relative to the
repository root, see ``lusv.paths``)::

    prepare/    labels.csv, ingest_report.csv (+ _summary), temporal_split.csv, held_out.csv, folds.csv,
                fold_balance.csv; under clip_policy="windows" also windows.csv (one row per window:
                clip_id = window id, video_id, patient_id, start, length, the pattern columns) and,
                for a dataset with a per-frame truth, frame_labels.csv (clip_id, first_frame, last_frame, pattern)
    runs/       one folder per (model configuration, fold), written by lusv.train
    oof/        out-of-fold predictions per model configuration (see ``lusv.evaluation.out_of_fold``)
    tables/, figures/   what the results notebook writes

The dataset comes from a registered source (``lusv.data.sources``): its location, cache name,
reader and whether it has a per-frame truth come from there. When the dataset has acquisition
dates, patients first seen on or after a cutoff date form the temporally separated test set
(see ``lusv.data.temporal_split``); of the rest, about ``held_out_fraction`` of the patients (the
paper: 10%) form the held-out test set (``lusv.data.splits.held_out_split``), and the folds are made on
what remains, the development set. Every fold model predicts both test sets.

The study's settings are stored once, by ``prepare``, in ``prepare/prepared.json``
(``lusv.data.prepared.Prepared``: profile, data source and path, clip policy, frames, size,
window settings, held-out fraction, seed, lusv version). The later steps read them from there:
they take no profile, and one given anyway must agree with the study's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

import lusv
from lusv.config import held_out_fraction as profile_held_out_fraction, params_for, synthetic_options
from lusv.data.cache import ClipCache
from lusv.data.prepared import Prepared, dataset_location, dataset_name, ingest, load_dataset  # noqa: F401 - study steps
from lusv.errors import ConfigError
from lusv.infra import io, runlock
from lusv.evaluation.out_of_fold import (  # noqa: F401 - the study steps the notebooks call
    SPLITS,
    FoldAttention,
    SplitResults,
    comparable_keys,
    fold_ensemble,
    fold_model_predictions,
    load_out_of_fold,
    out_of_fold,
    out_of_fold_attention,
    paper_results,
    results,
    sweep_results,
    trained_runs,
    video_level_results,
    write_out_of_fold,
    write_report,
)
from lusv.evaluation.claims import claims_markdown, run_claims as claims  # noqa: F401 - notebook 06's claims table
from lusv.data.sources import get_source
from lusv.data.splits import check_enough_patients, fold_balance, load_or_make_folds, load_or_make_held_out
from lusv.data.temporal_split import set_apart_temporal_test
from lusv.data.windows import write_windows
from lusv.paths import in_repository
from lusv.models import roster
from lusv.train import run_grid
from lusv.explain.truth import example_frames_figure, frame_truth, region_truth  # noqa: F401 - study steps too

log = logging.getLogger(__name__)


def resolve_run_dir(run_dir: str | Path) -> Path:
    """A relative run dir is relative to the repository root, wherever the notebook runs from."""
    return in_repository(run_dir)


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
    every video is cached whole and cut into windows (``prepare/windows.csv``, ``lusv.data.windows``).
    """
    policy = _checked_settings(profile, num_folds, num_frames, image_size, clip_policy or get_source(data).clip_policy,
                               window_overlap, target_fps)
    run_dir = in_repository(run_dir)
    with runlock.study_lock(run_dir):  # one study per folder; run_all.sh holds it for its whole run
        return _prepare(run_dir, policy, profile, data, data_path, num_folds, seed, temporal_test_fraction, synthetic,
                        cache_root, dayfirst, temporal_split, held_out_fraction)


def _prepare(run_dir: Path, policy, profile: str, data: str, data_path, num_folds: int, seed: int,
             temporal_test_fraction: float, synthetic: dict | None, cache_root, dayfirst: bool, temporal_split: bool,
             held_out_fraction: float | None) -> Prepared:
    """``prepare`` under the study folder's lock."""
    earlier = Prepared.recorded(run_dir)
    if earlier is not None and earlier.profile not in (None, profile):
        raise ConfigError(f"{run_dir} holds a study prepared with profile {earlier.profile!r}, not {profile!r}: "
                          "choose another run folder, or keep its profile")
    prepare_dir = run_dir / "prepare"
    if get_source(data).generated and synthetic is None:
        synthetic = synthetic_options(profile)
    held_out_fraction = profile_held_out_fraction(profile) if held_out_fraction is None else held_out_fraction
    ingested = ingest(data, data_path, policy, prepare_dir / "ingest_report.csv", synthetic=synthetic,
                      dayfirst=dayfirst, cache_root=cache_root)
    usable, name = ingested.usable, ingested.name
    labels_csv = io.write_csv(prepare_dir / "labels.csv", _with_iso_dates(usable))
    temporal_csv, held_out_csv, development = _set_apart_test_sets(
        usable, prepare_dir, name, temporal_split, temporal_test_fraction, held_out_fraction, seed, num_folds)
    check_enough_patients(development, usable, ingested.labels, num_folds, ingested.report, ingested.report_path)
    folds = load_or_make_folds(development, prepare_dir / "folds.csv", num_folds=num_folds, seed=seed)
    io.write_csv(prepare_dir / "fold_balance.csv", fold_balance(folds, development))
    prepared = Prepared(
        run_dir=run_dir, labels_csv=labels_csv, folds_csv=prepare_dir / "folds.csv", temporal_csv=temporal_csv,
        cache_root=ingested.cache.root, num_frames=policy.num_frames, image_size=policy.image_size, num_folds=num_folds,
        dataset=name, data=data, data_path=str(ingested.location.resolve()), held_out_csv=held_out_csv,
        **_windows_files(policy, prepare_dir, ingested.cache, usable, get_source(data), ingested.location),
        profile=profile, seed=seed, held_out_fraction=held_out_fraction, lusv_version=lusv.__version__,
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


def _set_apart_test_sets(usable: pd.DataFrame, prepare_dir: Path, name: str, temporal: bool, temporal_fraction: float,
                         held_out_fraction: float, seed: int, num_folds: int) -> tuple[Path | None, Path | None, pd.DataFrame]:
    """(The temporal split file, the held-out split file, either None when there is none; the
    development clips left for the folds)."""
    temporal_csv, development = set_apart_temporal_test(
        usable, prepare_dir / "temporal_split.csv", temporal_fraction if temporal else 0, name, asked=temporal)
    held_out = load_or_make_held_out(development, prepare_dir / "held_out.csv", held_out_fraction, seed=seed,
                                     min_left=num_folds)
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
    folds: list[int] | None = None,
    key: str | None = None,
    *,
    models: list[str] | str | None = None,
    profile: str | None = None,
    executor: str = "sequential",
    ray_address: str | None = None,
    **overrides,
) -> list[Path]:
    """Train one model configuration on every fold (or the given ones); returns the run dirs.

    The profile is the study's (``profile``, when given, must agree with it). Finished folds are
    reused and interrupted ones resumed, so rerunning a notebook after a crash continues where it
    stopped. ``executor="ray"`` trains the folds side by side as Ray tasks (``ray_address``: a
    cluster, or None for a local Ray); see ``lusv.train.executors``. ``models`` (the study's
    subset, ``run_all.sh --models``) without ``key``: nothing is trained, and the finished runs of
    ``key`` are returned (ConfigError when there are none: every comparison needs LUV-Net).
    """
    key = key or model
    if roster.select([key], roster.check_models(prepared.resolve_profile(profile), models)) == []:
        return reused_runs(prepared, key)
    return train_configurations(prepared, {key: {"model": model, **overrides}}, folds, profile=profile,
                                executor=executor, ray_address=ray_address)[key]


def reused_runs(prepared: Prepared, key: str) -> list[Path]:
    """The finished runs of ``key`` in the study, for a step whose ``models`` leave it out."""
    found = trained_runs(prepared.run_dir, key)
    if not found:
        raise ConfigError(f"{key} is not among the models asked for and {prepared.run_dir} has no finished run of it: "
                          f"add {key} to the models (every comparison is against it)")
    log.info("%s is not among the models asked for: reusing its %d finished run(s)", key, len(found))
    return found


def train_configurations(
    prepared: Prepared,
    configurations: dict[str, dict],
    folds: list[int] | None = None,
    *,
    profile: str | None = None,
    executor: str = "sequential",
    ray_address: str | None = None,
    **overrides,
) -> dict[str, list[Path]]:
    """Train several model configurations on every fold as one grid; returns their run dirs by key.

    ``configurations`` maps a key (its name in oof/ and the tables) to RunParams overrides that
    include ``model``; ``overrides`` apply to all. ``folds``: a list, or text such as "0,1" (a
    notebook parameter passed by ``run_all.sh --folds``). One grid lets the Ray executor run every
    (configuration, fold) side by side instead of one configuration at a time. The profile is the
    study's (``profile``, when given, must agree with it).
    """
    # A profile in the overrides (a notebook's ``overrides``) is checked against the study's like ``profile``.
    profile = prepared.resolve_profile(prepared.resolve_profile(overrides.pop("profile", None)) if profile is None
                                       else profile)
    folds = roster.check_folds(folds, prepared.num_folds) or list(range(prepared.num_folds))
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
    kernel_sizes: list[int] | None = None,
    head_counts: list[int] | None = None,
    *,
    folds: list[int] | None = None,
    models: list[str] | str | None = None,
    profile: str | None = None,
    executor: str = "sequential",
    ray_address: str | None = None,
    **overrides,
) -> list[str]:
    """Train LUV-Net without its temporal module, with each temporal kernel size K and with each
    number of attention heads H, on every fold (or ``folds``), as one grid (the paper swept K and
    H on one fold).

    The run at the profile's own K and H is the main LUV-Net of notebook 02 (key "luvnet") and
    is reused rather than trained twice. ``None``: the profile's grid (``lusv.models.roster.sweep_grid``:
    the paper's Tables 8-9 grid in the paper profile). ``models`` (the study's subset): only those
    keys train (``lusv.models.roster.sweep_configurations``); LUV-Net left out is reused. Returns
    the keys to compare, LUV-Net first: those trained now, and LUV-Net where its predictions cover
    the same clips (``comparable_keys``).
    """
    profile = prepared.resolve_profile(profile)
    models = roster.check_models(profile, models)
    configurations = roster.sweep_configurations(profile, models, kernel_sizes, head_counts)
    trained = train_configurations(prepared, configurations, folds, profile=profile, executor=executor,
                                   ray_address=ray_address, **overrides)
    keys = sorted(dict.fromkeys([roster.REFERENCE, *trained]), key=lambda k: k != roster.REFERENCE)
    return comparable_keys(prepared.run_dir, keys)
