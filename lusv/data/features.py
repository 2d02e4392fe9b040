"""The frozen-encoder feature cache: per-frame features computed once, reused by every 2-D head.

The 2-D models (luvnet, luvnet_no_temporal, usvn, cnn_lstm) see a clip only through
``model.encoder.encode_clips(x)`` -> (B, T, F), and ``model(x, lengths)`` equals
``model.forward_features(model.encoder.encode_clips(x), lengths)``. With the encoder frozen in
eval mode those features depend only on the clip, the encoder's weights and the input pipeline,
so they are computed once here and reused by every model, fold, sweep point and epoch.

In training: ``build`` the clips a fold needs, then ``lusv.data.datasets.FeatureDataset`` serves
them and ``model.forward_features(features, lengths)`` replaces ``model(clips, lengths)``.

Layout under ``root`` (default ``clip_cache.dir / "features"``), one folder per identity,
``<encoder name>_T<T>_S<S>_<clip policy>_<dtype>-<key>/``, where key is a hash of the identity:
lusv's feature code version, every parameter and buffer value of the encoder (so the same name
with other weights, even another random init, gets another folder), T, S, the clip policy and
the storage dtype. Inside:

- ``identity.json``: the identity in words (what the folder holds);
- ``features/<clip id>_<view>-<hash>.npy``: (T, F) features of one clip and view, written
  atomically, float16 by default (half the size; relative rounding <= 2^-11 per value: freshly
  built heads on EfficientNet-Lite0 features moved by <= 6e-5 in their logits, measured) or
  float32 (the heads then equal the full model to float precision, as a test asserts at 1e-5).
  All T frames are stored, padding included, as the encoder saw them: heads mask them by length;
- ``manifest.csv``: one row per entry: clip_id, view, entry, source_checksum (the SHA-256 the clip
  cache records for the clip), length, and the SHA-256 of the stored features.

Over a whole-video clip cache (``num_frames=None``, the windows clip policy) an entry holds the
(length, F) features of every frame of one video, computed once (the encoder sees at most
``frames_per_call`` frames at a time; an augmented view augments the whole video alike), and
``lusv.data.windows.WindowedFeatures`` slices a window's rows from it (``run_feature_cache`` does this).

Views: ``"plain"`` is the clip as the model sees it at evaluation (``to_model_input`` without
augmentation). ``build(..., views=N)`` adds N augmented views ``"aug<key>-1"`` ... ``"aug<key>-N"``
made by ``ClipAugment`` (key: its settings and ``seed``); view k of a clip draws from a generator
seeded by (seed, clip id, k), so it is the same whatever N, the clip order or other clips, and
raising N later computes only the new views.

``build`` reuses an entry only when its clip cache entry is unchanged (same checksum) and the
stored array still has its shape, dtype and checksum; anything else is recomputed, "rebuilt".
An unreadable manifest or identity file empties the cache. ``load`` never recomputes: a damaged
entry raises ``CacheError`` naming it (run ``build``). ``in_memory=True`` keeps each entry that
``build`` or ``load`` read and checked (read-only), so training epochs read no file; an entry
``build`` recomputes or finds stale is dropped from memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lusv.data.cache import (
    MANIFEST_SAVE_EVERY_S,
    CacheError,
    IngestReport,
    array_checksum,
    entry_damage,
    entry_file_name,
    read_entry,
    read_manifest,
)
from lusv.data.model_input import clip_augment, ClipAugment, to_model_input
from lusv.data.windows import WindowedClips, WindowedFeatures
from lusv.errors import ConfigError
from lusv.infra.console import bars_enabled
from lusv.infra.io import save_npy, write_csv, write_json


log = logging.getLogger(__name__)

# Bump when the way features are computed changes: every cached feature is then recomputed.
FEATURES_VERSION = 1
PLAIN = "plain"
STORAGE_DTYPES = ("float16", "float32")
MANIFEST_COLUMNS = ("clip_id", "view", "entry", "source_checksum", "length", "checksum")


# The augmented views of a run's feature cache are drawn from this seed, not the run's: views are
# data, shared by every model, fold and seed (the run's seed picks which view a clip shows when).
RUN_VIEW_SEED = 0


def run_feature_cache(p: Any, clip_cache: Any, encoder: torch.nn.Module) -> "FeatureCache | WindowedFeatures":
    """The feature cache of a ``train_encoder=False`` run with ``RunParams`` ``p`` (also what the
    linear probe and external validation read): under the clip cache's folder, float16, the
    training augmentation of ``p.augmentations`` (``clip_augment``) for the views. Same encoder
    weights, frames and size give the same folder, so every model, fold and epoch reuses the same
    features (another augmentation set is keyed apart), held in memory (40 KB an entry for Lite0
    at 16 frames) so no epoch reads a file. Over the windows of a ``lusv.data.windows.WindowedClips``
    each whole video's frames are encoded once and the windows slice them (``WindowedFeatures``)."""
    windowed = isinstance(clip_cache, WindowedClips)
    features = FeatureCache(clip_cache.videos if windowed else clip_cache, encoder, encoder_name=p.encoder,
                            clip_policy="windows" if windowed else p.clip_policy, augment=clip_augment(p.augmentations),
                            seed=RUN_VIEW_SEED, in_memory=True)
    return WindowedFeatures(features, clip_cache) if windowed else features


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``encoder`` (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _seed_for(*parts: object) -> int:
    """A stable 63-bit seed from any values (independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode("utf-8")).digest()[:8], "big") >> 1


class FeatureCache:
    """Frozen-encoder features (T, F) of the clips of ``clip_cache``, one folder per identity.

    ``clip_cache`` is a ``lusv.data.cache.ClipCache`` (or anything with ``num_frames``, ``image_size``,
    ``dir``, ``load(clip_id)`` and a ``manifest`` with clip_id and checksum columns).
    ``encoder`` is the model's ``FrameEncoder``: it is put in eval mode while computing (its
    mode is restored after) and never changed. ``clip_policy`` names how ``clip_cache``'s clips
    were cut (recorded in the identity). Clips go to ``device`` (default: the encoder's);
    ``frames_per_call`` bounds the frames per encoder call.
    """

    def __init__(
        self,
        clip_cache: Any,
        encoder: torch.nn.Module,
        *,
        encoder_name: str = "encoder",
        root: str | os.PathLike | None = None,
        clip_policy: str = "whole",
        dtype: str = "float16",
        augment: ClipAugment | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        frames_per_call: int = 64,
        in_memory: bool = False,
    ):
        if dtype not in STORAGE_DTYPES:
            raise ConfigError(f"feature cache dtype {dtype!r} is not one of {', '.join(STORAGE_DTYPES)}")
        self.clip_cache = clip_cache
        self.encoder = encoder
        # None: whole videos of any length (the windows clip policy); entries are then (length, F)
        self.num_frames = None if clip_cache.num_frames is None else int(clip_cache.num_frames)
        self.feature_dim = int(encoder.feature_dim)
        self.dtype = np.dtype(dtype)
        self.augment = augment if augment is not None else ClipAugment()
        self.seed = int(seed)
        if device is None:
            device = next(iter(encoder.parameters()), torch.empty(0)).device
        self.device = torch.device(device)
        self.frames_per_call = max(1, int(frames_per_call))
        # Checked entries kept in memory (storage dtype), so that epochs after the first read no file.
        self.in_memory = bool(in_memory)
        self._held: dict[tuple[str, str], np.ndarray] = {}
        self.identity = {
            "features_version": FEATURES_VERSION, "encoder": encoder_name,
            "encoder_fingerprint": encoder_fingerprint(encoder), "feature_dim": self.feature_dim,
            "num_frames": self.num_frames, "image_size": int(clip_cache.image_size),
            "clip_policy": clip_policy, "dtype": dtype,
        }
        key = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:12]
        frames = "all" if self.num_frames is None else self.num_frames
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{encoder_name}_T{frames}_S{clip_cache.image_size}"
                          f"_{clip_policy}_{dtype}")
        self.root = Path(root) if root is not None else Path(clip_cache.dir) / "features"
        self.dir = self.root / f"{readable}-{key}"
        self.manifest_path = self.dir / "manifest.csv"
        self.identity_path = self.dir / "identity.json"
        augment_settings = {"augment": asdict(self.augment), "seed": self.seed}
        self._augment_key = hashlib.sha256(json.dumps(augment_settings, sort_keys=True).encode()).hexdigest()[:10]
        self._rows: dict[tuple[str, str], dict] = self._read_manifest() if self._identity_matches() else {}

    # ---------------------------------------------------------------- queries
    def view_names(self, views: int = 0) -> list[str]:
        """``["plain"]`` followed by the names of the first ``views`` augmented views."""
        if views < 0:
            raise ConfigError(f"the number of augmented views must be >= 0, got {views}")
        return [PLAIN] + [f"aug{self._augment_key}-{k}" for k in range(1, views + 1)]

    @property
    def manifest(self) -> pd.DataFrame:
        """One row per entry (a copy; see the module docstring for the columns)."""
        return pd.DataFrame(list(self._rows.values()), columns=list(MANIFEST_COLUMNS))

    def __len__(self) -> int:
        return len(self._rows)

    def load(self, clip_id: str, view: str = PLAIN) -> tuple[np.ndarray, int]:
        """Stored features ``(T, F)`` (the storage dtype) of one clip and view, and its length."""
        row = self._rows.get((str(clip_id), view))
        if row is None:
            raise CacheError(f"no features of clip '{clip_id}' (view {view}) in {self.dir}: "
                             "run FeatureCache.build with this clip and number of views first")
        key = (str(clip_id), view)
        array = self._held.get(key)
        if array is None:
            array = self._read_entry(row)
            if array is None:
                raise CacheError(f"feature entry {self.dir / 'features' / row['entry']} of clip '{clip_id}' is "
                                 "missing or damaged: run FeatureCache.build to recompute it")
            self._hold(key, array, row)
        return array, int(row["length"])

    def load_many(self, clip_ids: Sequence[str], views: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stacked features ``(N, T, F)`` (storage dtype) and lengths ``(N,)``; views default to plain."""
        views = list(views) if views is not None else [PLAIN] * len(clip_ids)
        if self.num_frames is None:
            raise CacheError(f"{self.dir} holds features of whole videos of different lengths: load them one by "
                             "one or through lusv.data.windows.WindowedFeatures")
        out = np.empty((len(clip_ids), self.num_frames, self.feature_dim), dtype=self.dtype)
        lengths = np.empty(len(clip_ids), dtype=np.int64)
        for position, (clip_id, view) in enumerate(zip(clip_ids, views)):
            out[position], lengths[position] = self.load(clip_id, view)
        return out, lengths

    # ---------------------------------------------------------------- building
    def build(self, clip_ids: Iterable[str], views: int = 0, progress: bool = True) -> IngestReport:
        """Make sure every clip of ``clip_ids`` has valid plain and ``views`` augmented features.

        Returns an ``IngestReport`` with one row per clip: cached (every view reused), ingested
        (views computed for the first time), rebuilt (a stale or damaged view recomputed; the
        detail says why) or skipped (no usable clip cache entry). Raises ``CacheError`` only
        when no clip has features.
        """
        clip_ids = [str(clip_id) for clip_id in clip_ids]
        wanted = self.view_names(views)
        sources = {str(row["clip_id"]): row["checksum"] for row in self.clip_cache.manifest.to_dict("records")}
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.identity_path.is_file():
            write_json(self.identity_path, self.identity)
        records, changed, last_save = [], False, time.monotonic()
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            for clip_id in tqdm(clip_ids, desc=f"features {self.dir.name}", unit="clip", disable=not bars_enabled(progress)):
                record = self._build_clip(clip_id, sources.get(clip_id), wanted)
                records.append(record)
                changed |= record["status"] in ("ingested", "rebuilt")
                if changed and time.monotonic() - last_save > MANIFEST_SAVE_EVERY_S:
                    self._write_manifest()
                    last_save = time.monotonic()
        finally:
            self.encoder.train(was_training)
            if changed:
                self._write_manifest()
        report = IngestReport(pd.DataFrame(records, columns=["clip_id", "path", "status", "reason", "detail"]))
        log.info("feature cache %s: %s", self.dir, report)
        if not report.usable_ids:
            raise CacheError(f"no features for any of {len(clip_ids)} clip(s) in {self.dir}: {report}. "
                             "Build the clip cache for these clips first")
        return report

    def _build_clip(self, clip_id: str, source_checksum: str | None, wanted: list[str]) -> dict:
        path = str(self.dir / "features")
        if source_checksum is None:
            return _record(clip_id, path, "skipped", "no clip cache entry", f"clip '{clip_id}' is not in {self.clip_cache.dir}")
        stale = {view: self._why_stale(clip_id, view, source_checksum) for view in wanted}
        todo = [view for view, why in stale.items() if why is not None]
        if not todo:
            return _record(clip_id, path, "cached", "valid entry", "")
        try:
            clip, length = self.clip_cache.load(clip_id)
        except CacheError as exc:
            for view in wanted:
                self._rows.pop((clip_id, view), None)  # features of a clip now unusable must not be loaded
                self._held.pop((clip_id, view), None)
            return _record(clip_id, path, "skipped", "clip cache entry unusable", str(exc))
        for view, features in zip(todo, self._compute(clip_id, clip, int(length), todo)):
            self._store(clip_id, view, features, source_checksum, int(length))
        rebuilt = {view: stale[view] for view in todo if stale[view] != "no entry"}
        if not rebuilt:
            return _record(clip_id, path, "ingested", "new entry", f"computed views {', '.join(todo)}")
        why = "; ".join(f"{view}: {reason}" for view, reason in rebuilt.items())
        log.warning("recomputed features of clip '%s' (%s)", clip_id, why)
        return _record(clip_id, path, "rebuilt", next(iter(rebuilt.values())).split(":")[0], why)

    def _compute(self, clip_id: str, clip: np.ndarray, length: int, views: list[str]) -> list[np.ndarray]:
        """Features (T, F) of each of ``views`` of one clip, in the storage dtype."""
        uint8 = torch.from_numpy(np.array(clip, copy=True)).unsqueeze(0)  # a memory-mapped video is read-only
        lengths = torch.tensor([length], dtype=torch.int64)
        channels_last = bool(getattr(self.encoder, "channels_last", False))
        inputs = []
        for view in views:
            if view == PLAIN:
                inputs.append(to_model_input(uint8, self.device, channels_last=channels_last))
            else:
                generator = torch.Generator().manual_seed(_seed_for(self.seed, clip_id, view))
                inputs.append(to_model_input(uint8, self.device, augment=self.augment, generator=generator,
                                             lengths=lengths, channels_last=channels_last))
        return list(self._encode(torch.cat(inputs)))

    def _encode(self, inputs: torch.Tensor) -> np.ndarray:
        """Features (N, T, F) of model inputs (N, T, 3, S, S), at most ``frames_per_call`` frames
        per encoder call (a whole video is cut along time: its frames are encoded one by one)."""
        clips, frames = inputs.shape[:2]
        per_call = max(1, self.frames_per_call // frames)
        with torch.inference_mode():
            if per_call > 1 or frames <= self.frames_per_call:
                features = torch.cat([self.encoder.encode_clips(inputs[start:start + per_call])
                                      for start in range(0, clips, per_call)])
            else:
                features = torch.cat([self.encoder.encode_clips(inputs[:, start:start + self.frames_per_call])
                                      for start in range(0, frames, self.frames_per_call)], dim=1)
        return features.float().cpu().numpy().astype(self.dtype)

    def padding_features(self) -> np.ndarray:
        """Features (F,) of a black padding frame, as the encoder sees one (in every view: the
        augmentation keeps padding frames black): what a window of a video shorter than T is
        padded with, so that it equals the full model's input."""
        if getattr(self, "_padding", None) is None:
            black = torch.zeros((1, 1, self.clip_cache.image_size, self.clip_cache.image_size, 1), dtype=torch.uint8)
            channels_last = bool(getattr(self.encoder, "channels_last", False))
            was_training = self.encoder.training
            self.encoder.eval()
            try:
                self._padding = self._encode(to_model_input(black, self.device, channels_last=channels_last))[0, 0]
            finally:
                self.encoder.train(was_training)
        return self._padding

    def _store(self, clip_id: str, view: str, features: np.ndarray, source_checksum: str, length: int) -> None:
        entry = entry_file_name(f"{clip_id}|{view}")
        save_npy(self.dir / "features" / entry, features)
        row = {
            "clip_id": clip_id, "view": view, "entry": entry, "source_checksum": source_checksum,
            "length": length, "checksum": array_checksum(features),
        }
        self._rows[(clip_id, view)] = row
        self._held.pop((clip_id, view), None)
        self._hold((clip_id, view), features, row, checked=True)

    def _hold(self, key: tuple[str, str], array: np.ndarray, row: dict, checked: bool = False) -> None:
        """With ``in_memory``, keep an entry that matches its recorded checksum (checked here once,
        unless ``checked``) for later loads; an entry that does not is left to ``build``."""
        if self.in_memory and (checked or array_checksum(array) == row["checksum"]):
            array.flags.writeable = False  # shared by every batch that reads it
            self._held[key] = array

    def _why_stale(self, clip_id: str, view: str, source_checksum: str) -> str | None:
        """None when the entry can be reused, else why not ("no entry" when there is none)."""
        row = self._rows.get((clip_id, view))
        if row is None:
            return "no entry"
        if row["source_checksum"] != source_checksum:
            self._held.pop((clip_id, view), None)
            return "clip changed: its clip cache entry is not the one these features were computed from"
        array = self._read_entry(row)
        damage = entry_damage(array, row)
        self._held.pop((clip_id, view), None)
        if damage is None:
            self._hold((clip_id, view), array, row, checked=True)  # build's read is the one training uses
        return damage

    def _read_entry(self, row: dict) -> np.ndarray | None:
        frames = self.num_frames if self.num_frames is not None else int(row["length"])
        return read_entry(self.dir / "features" / row["entry"], (frames, self.feature_dim), self.dtype)

    # ---------------------------------------------------------------- identity and manifest
    def _identity_matches(self) -> bool:
        if not self.identity_path.is_file():
            return True  # a new folder, or one whose identity file was never written: the manifest decides
        try:
            recorded = json.loads(self.identity_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            recorded = f"unreadable ({exc})"
        if recorded == self.identity:
            return True
        log.warning("feature cache %s: identity.json does not describe this encoder and setting (%s): "
                    "every feature will be computed again", self.dir, recorded)
        write_json(self.identity_path, self.identity)
        return False

    def _read_manifest(self) -> dict[tuple[str, str], dict]:
        rows = read_manifest(
            self.manifest_path, MANIFEST_COLUMNS,
            {"clip_id": str, "view": str, "entry": str, "source_checksum": str, "checksum": str, "length": "int64"},
            what="feature cache manifest", consequence="every feature will be computed again",
        )
        return {(row["clip_id"], row["view"]): row for row in rows}

    def _write_manifest(self) -> None:
        write_csv(self.manifest_path, self.manifest)


def _record(clip_id: str, path: str, status: str, reason: str, detail: str) -> dict:
    return {"clip_id": clip_id, "path": path, "status": status, "reason": reason, "detail": detail}
