"""The clip cache: every clip decoded once into a compact uint8 store plus a manifest.

Layout under ``root/f"T{T}_S{S}"/`` (other T or S values get their own folder):

- ``clips/<clip id>-<hash>.npy``: uint8 ``(T, S, S, 1)`` gray, prepared by
  ``lusv.data.video.prepare_clip`` (frames after ``length`` are zeros), written atomically;

With ``num_frames=None`` (the ``windows`` clip policy, ``lusv.data.windows``) the cache holds whole
videos instead, under ``root/"all_S{S}"/`` (or ``fps<target>_S{S}`` when resampled to
``target_fps``, ``lusv.data.video.resample_indices``): each entry is every kept frame, uint8
``(length, S, S, 1)``, and windows are slices of it;
- ``manifest.csv``: one row per entry with the source path, its size and mtime, source
  frame count, fps and size, the entry's ``length`` and a SHA-256 of the cached array.

``build`` reuses an entry only when its manifest row (the entry's record, compared with
``lusv.infra.io.recorded_mismatch``) still holds, i.e. the same source path, size and mtime and
the same preparation code version, and the stored array still matches its checksum;
otherwise the clip is decoded again and the entry "rebuilt" (logged).
Clips that cannot be used are skipped with a reason; ``IngestReport`` counts them; when no
clip is usable ``build`` raises ``IngestError`` carrying that report.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm  # text bars: readable in JupyterLab and in papermill-rendered notebooks alike

from lusv.data.video import PREPARATION_VERSION, prepare_clip, read_clip, resample_indices
from lusv.errors import CacheError, ConfigError, IngestError, LabelsError, VideoError
from lusv.infra.console import bars_enabled
from lusv.infra.io import read_table, recorded_mismatch, save_npy, write_csv

log = logging.getLogger(__name__)

STATUSES = ("ingested", "cached", "rebuilt", "skipped")
MANIFEST_COLUMNS = (
    "clip_id", "path", "entry", "source_size", "source_mtime_ns", "source_frames", "fps",
    "height", "width", "length", "num_frames", "image_size", "preparation_version", "checksum",
)
# Persist the manifest this often during a build so an interrupted build keeps its work.
MANIFEST_SAVE_EVERY_S = 30.0


@dataclass
class IngestReport:
    """What ``ClipCache.build`` did with each clip.

    ``table`` has one row per clip: clip_id, path, status (ingested = decoded for the
    first time, cached = valid entry reused, rebuilt = stale/damaged entry decoded again,
    skipped = unusable), reason (short cause, the same for alike clips) and detail
    (the full message, naming the file).
    """

    table: pd.DataFrame

    @property
    def usable_ids(self) -> list[str]:
        return self.table.loc[self.table["status"] != "skipped", "clip_id"].tolist()

    def summary(self) -> pd.DataFrame:
        """Clip counts by status and reason (statuses in the order ingested, cached, rebuilt, skipped)."""
        counts = self.table.groupby(["status", "reason"]).size().rename("clips").reset_index()
        counts["order"] = counts["status"].map(STATUSES.index)
        counts = counts.sort_values(["order", "clips"], ascending=[True, False])
        return counts.drop(columns="order").reset_index(drop=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the per-clip table as CSV and the summary beside it (``<name>_summary.csv``),
        both atomically; returns the per-clip table's path."""
        path = Path(path)
        write_csv(path.with_name(f"{path.stem}_summary.csv"), self.summary())
        return write_csv(path, self.table)

    def __str__(self) -> str:
        counts = self.table["status"].value_counts()
        usable = ", ".join(f"{counts.get(status, 0)} {status}" for status in STATUSES[:3])
        skipped = self.table[self.table["status"] == "skipped"]["reason"].value_counts()
        why = "; ".join(f"{reason}: {count}" for reason, count in skipped.items())
        text = f"{len(self.usable_ids)} of {len(self.table)} clips usable ({usable}); {int(skipped.sum())} skipped"
        return text + (f" ({why})" if why else "")

    __repr__ = __str__


class ClipCache:
    """Prepared clips for one (num_frames, image_size) setting under ``root``."""

    def __init__(self, root: str | os.PathLike, num_frames: int | None, image_size: int,
                 target_fps: float | None = None):
        if (num_frames is not None and num_frames < 1) or image_size < 1 or (target_fps is not None and target_fps <= 0):
            raise ConfigError(f"ClipCache needs positive num_frames, image_size and target_fps "
                              f"(got {num_frames}, {image_size}, {target_fps})")
        if num_frames is not None and target_fps is not None:
            raise ConfigError("target_fps resamples whole videos (num_frames=None, the windows clip policy) only")
        self.root = Path(root)
        self.num_frames = None if num_frames is None else int(num_frames)
        self.image_size = int(image_size)
        self.target_fps = None if target_fps is None else float(target_fps)
        frames = f"T{self.num_frames}" if num_frames is not None else (
            "all" if target_fps is None else f"fps{self.target_fps:g}")
        self.dir = self.root / f"{frames}_S{self.image_size}"
        self.manifest_path = self.dir / "manifest.csv"
        self._rows: dict[str, dict] = self._read_manifest()

    # ---------------------------------------------------------------- queries
    @property
    def manifest(self) -> pd.DataFrame:
        """One row per cache entry (a copy; see the module docstring for the columns)."""
        return pd.DataFrame(list(self._rows.values()), columns=list(MANIFEST_COLUMNS))

    def __contains__(self, clip_id: object) -> bool:
        row = self._rows.get(str(clip_id))
        return row is not None and (self.dir / "clips" / row["entry"]).is_file()

    def __len__(self) -> int:
        return len(self._rows)

    def load(self, clip_id: str) -> tuple[np.ndarray, int]:
        """The cached clip: uint8 ``(T, S, S, 1)`` and its number of real frames (a whole video:
        ``(length, S, S, 1)``, memory-mapped, so that its windows are views)."""
        row = self._rows.get(str(clip_id))
        if row is None:
            raise CacheError(
                f"clip '{clip_id}' is not in the clip cache {self.dir}: run ClipCache.build(labels) first"
            )
        array = self._read_entry(row, mmap=self.num_frames is None)
        if array is None:
            raise CacheError(
                f"cache entry {self.dir / 'clips' / row['entry']} of clip '{clip_id}' is missing or damaged: "
                "run ClipCache.build(labels) to rebuild it"
            )
        return array, int(row["length"])

    def load_many(self, clip_ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """Stacked clips uint8 ``(N, T, S, S, 1)`` and lengths int64 ``(N,)``, in the order given."""
        clip_ids = list(clip_ids)
        if self.num_frames is None:
            raise CacheError(f"{self.dir} holds whole videos of different lengths: load them one by one "
                             "or through lusv.data.windows.WindowedClips")
        out = np.empty((len(clip_ids), self.num_frames, self.image_size, self.image_size, 1), dtype=np.uint8)
        lengths = np.empty(len(clip_ids), dtype=np.int64)
        for position, clip_id in enumerate(clip_ids):
            out[position], lengths[position] = self.load(clip_id)
        return out, lengths

    # ---------------------------------------------------------------- building
    def build(self, labels_df: pd.DataFrame, progress: bool = True, workers: int = 0) -> IngestReport:
        """Make sure every clip of ``labels_df`` (columns clip_id, path) has a valid entry.

        Valid entries are reused, the rest decoded (once each). ``workers > 1`` decodes in
        that many processes. Raises ``IngestError`` (carrying this report) only when no clip
        is usable.
        """
        jobs = _jobs_from_labels(labels_df)
        records: list[dict] = []
        todo: list[tuple[str, str, str | None]] = []  # clip_id, path, why an old entry is rebuilt
        last_save = time.monotonic()
        bar = tqdm(total=len(jobs), desc=f"clip cache {self.dir.name}",
                   unit="clip", disable=not bars_enabled(progress))
        with bar:
            for clip_id, path in jobs:
                stale = self._why_stale(clip_id, path)
                if stale is None:
                    records.append(_record(clip_id, path, "cached", "valid entry", ""))
                    bar.update(1)
                else:
                    todo.append((clip_id, path, stale if clip_id in self._rows else None))
            for (clip_id, path, rebuild_reason), result in zip(todo, self._prepare_all(todo, workers)):
                records.append(self._store(clip_id, path, rebuild_reason, result))
                bar.update(1)
                if time.monotonic() - last_save > MANIFEST_SAVE_EVERY_S:
                    self._write_manifest()
                    last_save = time.monotonic()
        if todo:
            self._write_manifest()

        report = IngestReport(pd.DataFrame(records, columns=["clip_id", "path", "status", "reason", "detail"]))
        log.info("clip cache %s: %s", self.dir, report)
        if not report.usable_ids:
            raise IngestError(
                f"no usable clip in {len(jobs)} labelled clip(s) for the clip cache {self.dir}: {report}. "
                "Check the paths in the labels table and the video files",
                report,
            )
        return report

    def _prepare_all(self, todo: list[tuple[str, str, str | None]], workers: int) -> Iterable[dict]:
        tasks = [(path, self.num_frames, self.image_size, self.target_fps) for _, path, _ in todo]
        if workers > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(max_workers=workers, initializer=_single_threaded) as pool:
                yield from pool.map(_prepare_one, tasks)
        else:
            yield from map(_prepare_one, tasks)

    def _store(self, clip_id: str, path: str, rebuild_reason: str | None, result: dict) -> dict:
        if "error" in result:
            log.warning("skipping clip '%s': %s", clip_id, result["detail"])
            self._rows.pop(clip_id, None)  # a stale entry of a now-unusable clip must not be loaded
            return _record(clip_id, path, "skipped", result["error"], result["detail"])
        entry = entry_file_name(clip_id)
        array = result.pop("array")
        save_npy(self.dir / "clips" / entry, array)
        self._rows[clip_id] = {
            "clip_id": clip_id, "path": path, "entry": entry, **result,
            "num_frames": self.num_frames or result["length"], "image_size": self.image_size,
            "preparation_version": PREPARATION_VERSION, "checksum": array_checksum(array),
        }
        if rebuild_reason is None:
            return _record(clip_id, path, "ingested", "new entry", "")
        log.warning("rebuilt cache entry of clip '%s' (%s): %s", clip_id, path, rebuild_reason)
        return _record(clip_id, path, "rebuilt", rebuild_reason.split(":")[0], rebuild_reason)

    def _why_stale(self, clip_id: str, path: str) -> str | None:
        """None when the entry can be reused, else why not ("no entry" when there is none).

        The manifest row is the entry's record: it must still name this source path, this
        preparation version and the source file's current size and modification time.
        """
        row = self._rows.get(clip_id)
        if row is None:
            return "no entry"
        try:
            stat = os.stat(path)
        except OSError:
            stat = None
        expected = {"path": path, "preparation_version": PREPARATION_VERSION}
        if stat is not None:
            expected.update(source_size=stat.st_size, source_mtime_ns=stat.st_mtime_ns)
        changed = {difference.key for difference in recorded_mismatch(row, expected)}
        if "path" in changed:
            return f"source path changed: was {row['path']}, now {path}"
        if "preparation_version" in changed:
            return f"preparation changed: entry made by version {row['preparation_version']}, now {PREPARATION_VERSION}"
        if stat is None:
            return "source missing"  # decoding again reports the missing file as a skip
        if changed:
            return f"source changed: {path} has a different size or modification time than when cached"
        return entry_damage(self._read_entry(row), row)

    def _read_entry(self, row: dict, mmap: bool = False) -> np.ndarray | None:
        frames = self.num_frames if self.num_frames is not None else int(row["length"])
        return read_entry(self.dir / "clips" / row["entry"], (frames, self.image_size, self.image_size, 1),
                          np.uint8, mmap=mmap)

    # ---------------------------------------------------------------- manifest
    def _read_manifest(self) -> dict[str, dict]:
        rows = read_manifest(
            self.manifest_path, MANIFEST_COLUMNS,
            {"clip_id": str, "path": str, "entry": str, "checksum": str,
             "source_size": "int64", "source_mtime_ns": "int64"},
            what="clip cache manifest", consequence="every clip will be decoded again",
        )
        return {row["clip_id"]: row for row in rows}

    def _write_manifest(self) -> None:
        write_csv(self.manifest_path, self.manifest)


def _jobs_from_labels(labels_df: pd.DataFrame) -> list[tuple[str, str]]:
    missing = [column for column in ("clip_id", "path") if column not in labels_df.columns]
    if missing:
        raise LabelsError(
            f"ClipCache.build needs a labels table with columns clip_id and path; it lacks {missing} "
            "(read it with lusv.data.labels.read_labels)"
        )
    clip_ids = labels_df["clip_id"].astype(str)
    duplicated = sorted(set(clip_ids[clip_ids.duplicated()]))
    if duplicated:
        raise LabelsError(f"labels table has duplicated clip_id(s) {duplicated[:5]}: clip ids must be unique")
    return list(zip(clip_ids, labels_df["path"].astype(str)))


def _prepare_one(task: tuple[str, int | None, int, float | None]) -> dict:
    """Decode and prepare one clip (``num_frames`` None: the whole video, resampled to
    ``target_fps`` when given); a plain dict so that it can come back from a worker process."""
    path, num_frames, image_size, target_fps = task
    try:
        stat = os.stat(path) if os.path.exists(path) else None
        clip = read_clip(path, num_frames=num_frames)
        frames = clip.frames
        if num_frames is None:
            frames = frames[resample_indices(len(frames), clip.fps, target_fps)]
        array, length = prepare_clip(frames, num_frames or len(frames), image_size, source=path)
    except VideoError as exc:
        return {"error": exc.reason, "detail": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop the ingestion of thousands
        # Not a case lusv knows (a decoder or numpy surprise): counted and explained like the
        # others, with the exception's type so that it can be reported as a bug.
        return {"error": "unexpected error", "detail": f"clip {path} could not be prepared "
                f"({type(exc).__name__}: {exc}); please report this with the file"}
    return {
        "array": array, "length": length, "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns,
        "source_frames": clip.source_frames, "fps": clip.fps, "height": clip.height, "width": clip.width,
    }


def _single_threaded() -> None:
    # Worker processes already run in parallel; torch's own threads would oversubscribe the cores.
    import torch

    torch.set_num_threads(1)


def _record(clip_id: str, path: str, status: str, reason: str, detail: str) -> dict:
    return {"clip_id": clip_id, "path": path, "status": status, "reason": reason, "detail": detail}


# ---------------------------------------------------------------- shared with lusv.data.features
def read_entry(path: Path, shape: tuple[int, ...], dtype, mmap: bool = False) -> np.ndarray | None:
    """A cache entry's array, or None when it is missing, damaged or not of ``shape``/``dtype``
    (``mmap``: memory-mapped read-only, so that slices of it are views).

    A damaged .npy header fails anywhere in numpy's parser (tokenize.TokenError, SyntaxError,
    ValueError, MemoryError...): any failure to read means "rebuild", never a crash.
    """
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except Exception:  # noqa: BLE001 - see the docstring
        return None
    return array if array.shape == tuple(shape) and array.dtype == np.dtype(dtype) else None


def entry_damage(array: np.ndarray | None, row: dict) -> str | None:
    """Why a cache entry read with ``read_entry`` cannot be reused (None when it can): unreadable,
    or no longer matching the checksum its manifest ``row`` recorded."""
    if array is None:
        return f"entry damaged: {row['entry']} is missing, truncated or has the wrong shape or dtype"
    if array_checksum(array) != row["checksum"]:
        return f"entry damaged: {row['entry']} no longer matches its checksum (edited?)"
    return None


def entry_file_name(key: str) -> str:
    """A safe, unique ``.npy`` file name for the cache entry ``key`` (a clip id, or more)."""
    # Clip ids may hold characters that are unsafe in file names ("/", spaces, "+"); the
    # hash keeps two ids that sanitise alike apart.
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80]
    return f"{readable}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:10]}.npy"


def array_checksum(array: np.ndarray) -> str:
    """SHA-256 of an array's bytes (C order): what a manifest records to detect damaged entries."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def read_manifest(
    path: Path, columns: Sequence[str], dtypes: dict, what: str, consequence: str
) -> list[dict]:
    """The rows (``columns`` only) of a cache manifest CSV, or none when there is none yet.

    An unreadable manifest (damaged, not CSV, lacking a column) is not an error: it is logged
    as "``what`` ... is unreadable ...: ``consequence``" and treated as empty, so the cache
    rebuilds its entries instead of failing.
    """
    if not path.is_file():
        return []
    try:
        frame = read_table(path, dtype=dtypes)
        missing = set(columns) - set(frame.columns)
        if missing:
            raise ValueError(f"lacks columns {sorted(missing)}")
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        log.warning("%s %s is unreadable (%s): %s", what, path, exc, consequence)
        return []
    return frame[list(columns)].to_dict("records")
