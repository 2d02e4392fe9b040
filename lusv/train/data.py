"""A run's clips: checked in the clip cache before training, and the loaders that feed them.

``ensure_cached`` checks every clip of the fold against the cache (decoding missing or stale
entries on the main process) and leaves out, with a warning, clips that cannot be cached.
``train_loader`` shards and reshuffles the training clips per epoch (``DistributedSampler``,
also for a single process); ``eval_loader`` gives a whole role in table order on every rank.
Both loaders draw from their own seeded generator, never the global one.

With ``train_encoder=False`` the loaders serve cached frozen-encoder features instead of clips:
``ensure_features`` fills the run's feature cache (``lusv.data.features.run_feature_cache``: plain
features of every clip, plus ``feature_views`` augmented views of the training clips), and the
same two loaders, given that cache, yield ``FeatureDataset`` batches. They load in the main
process (features are small, and a worker would have to be sent the encoder).

Under ``clip_policy="windows"`` the cache holds whole videos and, once the fold's videos are
checked (the leakage checks of ``lusv.data.folds`` are per video and patient), every role's videos
are replaced by their windows (``cut_into_windows``, ``lusv.data.windows``): the loaders then serve
windows, and predictions carry each window's ``video_id``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler

from lusv.config import RunParams
from lusv.data.cache import ClipCache
from lusv.data.datasets import ClipDataset, collate_clips, collate_features, FeatureDataset
from lusv.data.features import FeatureCache, run_feature_cache
from lusv.data.folds import FoldData
from lusv.data.frame_labels import read_frame_labels
from lusv.errors import IngestError, LabelsError, LusvError, name_a_few
from lusv.infra.devices import Distributed
from lusv.data.windows import (
    WindowedClips,
    WindowedFeatures,
    clip_cache_for,
    expand_to_windows,
    windows_of_cache,
)
from lusv.data.patterns import PATTERNS
from lusv.train.progress import progress_is_live
from lusv.train.randomness import loader_generator

logger = logging.getLogger("lusv.train")


def ensure_cached(p: RunParams, data: FoldData, dist: Distributed) -> ClipCache | WindowedClips:
    """Open the clip cache, check every entry and decode missing or stale clips (rank 0), drop
    unusable ones with a warning. Under ``clip_policy="windows"`` every role's videos are then
    replaced by their windows (``cut_into_windows``) and the windows are what the loaders read."""
    cache = clip_cache_for(p, p.cache_dir)
    everything = pd.concat(list(data.roles().values()), ignore_index=True)
    if dist.is_main:
        # Every entry is checked against its source and checksum before training, not only in the
        # prepare step: an entry edited or truncated since, or made from another file under the
        # same id (the default cache_dir is shared and ids like "clip001" recur), is decoded
        # again with a warning instead of being trained on. A valid entry costs one read.
        try:
            cache.build(everything.drop(columns=["fold"]), progress=progress_is_live())
        except IngestError as exc:
            logger.warning("none of the %d clip(s) of this fold could be cached: %s", len(everything), exc.report)
    dist.barrier()
    cache = clip_cache_for(p, p.cache_dir)  # re-read the manifest (other ranks)
    for role, table in data.roles().items():
        absent = [cid for cid in table["clip_id"] if cid not in cache]
        if absent:
            logger.warning(
                "%s: %d clip(s) could not be cached and are left out: %s", role, len(absent), name_a_few(absent, sort=True)
            )
            data.skipped.update({cid: role for cid in absent})
            setattr(data, role, table[~table["clip_id"].isin(absent)].reset_index(drop=True))
    if p.clip_policy == "windows":
        cache = cut_into_windows(p, cache, data)
    for role in ("train", "val", "test"):
        if getattr(data, role).empty:
            raise LusvError(f"fold {p.fold}: no usable {role} clips left (see the cache's ingest report)")
    if np.isnan(data.val[list(PATTERNS)].to_numpy(dtype=float)).all():
        raise LabelsError(f"fold {p.fold}: the validation fold has no labels at all, so early stopping is impossible")
    return cache


def cut_into_windows(p: RunParams, videos: ClipCache, data: FoldData) -> WindowedClips:
    """Replace each role's videos by their windows (``lusv.data.windows``; each window keeps its
    video's fold and patient) and return the windows of the whole-video cache."""
    frame_labels = read_frame_labels(p.frame_labels) if p.frame_labels else None
    every_video = pd.concat(list(data.roles().values()), ignore_index=True).drop_duplicates("clip_id")
    windows = windows_of_cache(videos, every_video.drop(columns=["fold"]), p.num_frames, p.window_overlap, frame_labels)
    for role, table in data.roles().items():
        setattr(data, role, expand_to_windows(table, windows))
    return WindowedClips(videos, windows, p.num_frames)


def ensure_features(p: RunParams, cache: ClipCache | WindowedClips, data: FoldData, encoder: torch.nn.Module
                    ) -> tuple[FeatureCache | WindowedFeatures, dict]:
    """The run's feature cache with every clip of the fold in it, and what building it did
    (``{"dir": ..., "views": ..., "clips": {status: count}}`` for config.json). Computes only
    what no earlier run (another model, fold or seed) left there."""
    features = run_feature_cache(p, cache, encoder)
    others = pd.concat([table for role, table in data.roles().items() if role != "train"], ignore_index=True)
    statuses = pd.concat([
        features.build(data.train["clip_id"], views=p.feature_views, progress=progress_is_live()).table,
        features.build(others["clip_id"], views=0, progress=progress_is_live()).table,
    ], ignore_index=True)["status"]  # fmt: skip
    counts = {str(status): int(n) for status, n in statuses.value_counts().sort_index().items()}
    return features, {"dir": str(features.dir), "views": p.feature_views, "clips": counts}


def _dataset(source: ClipCache | FeatureCache, table: pd.DataFrame, p: RunParams, train: bool):
    """(dataset, collate function, worker count) of clips or of cached features."""
    if isinstance(source, (FeatureCache, WindowedFeatures)):
        views = p.feature_views if train else 0
        return FeatureDataset(source, table, views=views, seed=p.seed), collate_features, 0
    return ClipDataset(source, table), collate_clips, p.num_workers


def train_loader(p: RunParams, source: ClipCache | FeatureCache, table: pd.DataFrame, dist: Distributed,
                 device: torch.device) -> DataLoader:
    """This process's shard of the training clips, reshuffled from (seed, epoch) at every ``set_epoch``."""
    dataset, collate, workers = _dataset(source, table, p, train=True)
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=p.seed, drop_last=False)
    return DataLoader(
        dataset, batch_size=p.batch_size, sampler=sampler, collate_fn=collate,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        generator=loader_generator(p.seed, dist.rank),
    )  # fmt: skip


def eval_loader(p: RunParams, source: ClipCache | FeatureCache, table: pd.DataFrame, dist: Distributed,
                device: torch.device) -> DataLoader:
    """Every clip of ``table`` in table order (each rank sees them all)."""
    dataset, collate, workers = _dataset(source, table, p, train=False)
    return DataLoader(
        dataset, batch_size=p.batch_size, shuffle=False, collate_fn=collate,
        num_workers=workers, pin_memory=device.type == "cuda",
        generator=loader_generator(p.seed, dist.rank),
    )  # fmt: skip
