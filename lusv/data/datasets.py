"""Torch datasets over the clip cache and the frozen-encoder feature cache, and their collation.

1. ``ClipDataset`` reads uint8 clips (T, S, S, 1) from ``lusv.data.cache.ClipCache``; a whole batch
   is read with one ``load_many`` call (``__getitems__``), which suits a memory-mapped cache.
   ``FeatureDataset`` does the same over ``lusv.data.features.FeatureCache``.
2. ``collate_clips`` stacks them: ``clips`` uint8 (B, T, S, S, 1), ``lengths`` int64 (B,),
   ``labels`` float32 (B, 4) with NaN for missing labels, ``clip_ids`` list of str.
3. ``lusv.data.model_input.to_model_input`` then moves the uint8 batch to the device and makes
   the model's input there (augmented while training).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from lusv.data.features import FeatureCache
from lusv.data.patterns import PATTERNS
from lusv.errors import LabelsError

Batch = dict[str, Any]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def keep_freed_cpu_buffers(threshold_bytes: int = 1 << 30) -> bool:
    """Let glibc reuse freed CPU buffers of up to ``threshold_bytes`` instead of unmapping them.

    glibc serves every allocation over 32 MB with a fresh ``mmap`` and returns it to the OS on
    free, so each CPU batch (B x T x 3 x S x S floats: 94 MB at the paper size) and each large
    activation page-faults all of its memory anew: measured here, that was a third of the time
    of the CPU data path. Kept buffers are reused by the next batch, so the process keeps its
    peak memory instead of giving it back between batches. Process-wide; a no-op (False)
    where the C library is not glibc. CUDA memory has its own caching allocator and is unaffected.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    value = ctypes.c_int(int(threshold_bytes))
    return bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    # Memory-mapped cache entries are read-only; torch warns on (and must not write to) those.
    if not array.flags.writeable:
        array = np.array(array, copy=True)
    return torch.from_numpy(np.ascontiguousarray(array))


class _CachedSplit(Dataset):
    """The clips of one split read from a cache: their ids and labels, and items and whole
    batches shaped alike for clips and features (``item_key`` / ``batch_key`` name the data)."""

    item_key, batch_key = "", ""

    def __init__(self, cache: Any, table: pd.DataFrame):
        self.cache = cache
        self.clip_ids, self.labels = _ids_and_labels(table, type(self).__name__)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def _read_one(self, index: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _read_many(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Batch:
        data, length = self._read_one(index)
        return {
            self.item_key: self._tensor(data),
            "length": int(length),
            "labels": torch.from_numpy(self.labels[index].copy()),
            "clip_id": self.clip_ids[index],
        }

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """A whole batch in one read (DataLoader uses this when it exists)."""
        indices = list(indices)
        data, lengths = self._read_many(indices)
        return {
            self.batch_key: self._tensor(np.asarray(data)),
            "lengths": torch.as_tensor(np.asarray(lengths), dtype=torch.int64),
            "labels": torch.from_numpy(self.labels[indices].copy()),
            "clip_ids": [self.clip_ids[i] for i in indices],
        }


class ClipDataset(_CachedSplit):
    """Clips of one split, read from a clip cache.

    ``cache`` is a ``lusv.data.cache.ClipCache`` (anything with ``load(clip_id)`` and
    ``load_many(clip_ids)``); ``table`` has a ``clip_id`` column and one column per pattern
    (float 0/1, NaN = missing). An item is a dict: clip uint8 (T, S, S, 1), length int,
    labels float32 (4,), clip_id str; a batch (one ``load_many`` call, which suits a
    memory-mapped cache): clips, lengths, labels, clip_ids.
    """

    item_key, batch_key = "clip", "clips"

    def _read_one(self, index: int) -> tuple[np.ndarray, int]:
        return self.cache.load(self.clip_ids[index])

    def _read_many(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.cache.load_many([self.clip_ids[i] for i in indices])

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return _as_tensor(array)


def _ids_and_labels(table: pd.DataFrame, what: str) -> tuple[list[str], np.ndarray]:
    """A split's clip ids (as strings) and labels float32 (N, 4), NaN = missing."""
    missing = [c for c in ("clip_id", *PATTERNS) if c not in table.columns]
    if missing:
        raise LabelsError(f"{what} table lacks column(s) {missing} (needed: clip_id, {', '.join(PATTERNS)})")
    return table["clip_id"].astype(str).tolist(), table[list(PATTERNS)].to_numpy(dtype=np.float32)


def _stack(samples: Sequence[Batch] | Batch, item: str, batch: str) -> Batch:
    """Stack dataset items into a batch (``item`` tensors -> ``batch``); a batch already made by
    ``__getitems__`` passes through."""
    if isinstance(samples, Mapping):
        return dict(samples)
    return {
        batch: torch.stack([s[item] for s in samples]),
        "lengths": torch.tensor([s["length"] for s in samples], dtype=torch.int64),
        "labels": torch.stack([s["labels"] for s in samples]),
        "clip_ids": [s["clip_id"] for s in samples],
    }


def collate_clips(samples: Sequence[Batch] | Batch) -> Batch:
    """``ClipDataset`` items -> a batch with ``clips`` uint8 (B, T, S, S, 1)."""
    return _stack(samples, "clip", "clips")


def collate_features(samples: Sequence[Batch] | Batch) -> Batch:
    """``FeatureDataset`` items -> a batch with ``features`` float32 (B, T, F)."""
    return _stack(samples, "features", "features")


class FeatureDataset(_CachedSplit):
    """Cached features of the clips of one split, shaped like ``lusv.data.datasets.ClipDataset``.

    An item is a dict: features float32 (T, F), length int, labels float32 (4,), clip_id str; a
    batch (``__getitems__`` or ``collate_features``): features float32 (B, T, F), lengths int64
    (B,), labels float32 (B, 4) with NaN for missing labels, clip_ids list of str.

    With ``views = 0`` every item is the plain view. With ``views = N > 0`` (training with
    augmentation) each clip shows one of its N augmented views per epoch, drawn uniformly from
    a generator seeded by (``seed``, epoch): call ``set_epoch(epoch)`` before each epoch's pass
    (a DataLoader copies the dataset to its workers when its iterator starts, so do not use
    ``persistent_workers`` with views).
    """

    def __init__(self, cache: FeatureCache, table: pd.DataFrame, views: int = 0, seed: int = 0):
        super().__init__(cache, table)
        # view_names(N) = the plain view, then the N augmented ones; training draws among those
        self.view_names = cache.view_names(views)[1:] if views > 0 else cache.view_names(0)
        self.seed = int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the view each clip shows in ``epoch`` (the same draws for the same seed and epoch)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        picks = rng.integers(0, len(self.view_names), size=len(self.clip_ids))
        self.views = [self.view_names[i] for i in picks]

    item_key = batch_key = "features"

    def _read_one(self, index: int) -> tuple[np.ndarray, int]:
        return self.cache.load(self.clip_ids[index], self.views[index])

    def _read_many(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.cache.load_many([self.clip_ids[i] for i in indices], [self.views[i] for i in indices])

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array.astype(np.float32))
