"""The datasets lusv can read, registered in one place; each one's reader lives in its own module.

A source turns a dataset into the labels table (see ``lusv.data.labels``). Its registration says
where its reader is, what ``data_path`` means for it and where it lies when none is given,
how its clip-cache folder is named, which options its reader takes and whether it has a
per-frame truth (then its module also offers ``frame_truth`` and ``example_frames``); a module
that offers ``frame_labels(location)`` gives the windows of its videos their own labels.
``lusv.study``, the ``lusv prepare --data`` choices and ``run_all.sh`` (through
``python -m lusv.data.sources``) read the names from here. Adding a dataset = one module under
``lusv/sources/`` plus one ``Source`` in ``SOURCES``.

Readers are imported only when asked for, so a missing optional dependency of one source
never breaks the others; this module itself needs the standard library only.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from lusv.errors import ConfigError
from lusv.paths import DATA_ROOT, SHARED_DATA_ROOT


def _name_after_location(source: str, location: Path) -> str:
    return f"{source}-{location.with_suffix('').name}"


def _name_after_csv(source: str, location: Path) -> str:
    # Users' CSVs are mostly all called labels.csv and their clip ids ("clip001") recur across
    # datasets, while the cache is keyed by clip id: name the folder holding the CSV and add a
    # hash of the CSV's absolute path so that two datasets never share a cache folder.
    digest = hashlib.sha1(str(location).encode("utf-8")).hexdigest()[:8]
    return f"{source}-{location.parent.name or 'root'}-{location.stem}-{digest}"


def _synthetic_folder(options: Mapping[str, Any]) -> Path:
    """data/synthetic/<options>: one folder per set of generation parameters."""
    name = "-".join(f"{k}{v}" for k, v in sorted(options.items())) if options else "default"
    return DATA_ROOT / "synthetic" / name


@dataclass(frozen=True)
class Source:
    """One dataset lusv can read.

    ``reader`` ("module:function") is called as ``function(location, **options)``;
    ``generated``: the ``synthetic=`` options of ``lusv.study.prepare`` are its generation
    parameters (passed to the reader; they also name its default folder); ``reads_dayfirst``:
    its reader takes ``dayfirst``; ``default_location(options)`` gives the location when the
    caller names none (None: the caller must; ``data_path_hint`` says what to pass);
    ``clip_policy``: the clip policy (``lusv.data.windows``) this dataset is prepared with unless the
    caller names one (None: the profile's).
    """

    name: str
    reader: str
    data_path_hint: str
    default_location: Callable[[Mapping[str, Any]], Path] | None = None
    cache_name: Callable[[str, Path], str] = _name_after_location
    generated: bool = False
    reads_dayfirst: bool = False
    has_frame_truth: bool = False
    clip_policy: str | None = None

    @property
    def module(self):
        """The module that reads this source (imported on first use)."""
        return importlib.import_module(self.reader.split(":")[0])

    def location(self, data_path: str | Path | None = None, options: Mapping[str, Any] | None = None) -> Path:
        """Where the dataset is read from: ``data_path``, else the source's default."""
        if data_path:
            return Path(data_path)
        if self.default_location is None:
            raise ConfigError(f"data={self.name!r} needs data_path: {self.data_path_hint}")
        return self.default_location(dict(options or {}))

    def frame_labels(self, location: str | Path):
        """The dataset's frame-level label table (clip_id, first_frame, last_frame, pattern;
        ``lusv.data.windows``) when its module offers one (``frame_labels(location)``), else None."""
        reader = getattr(self.module, "frame_labels", None)
        return None if reader is None else reader(Path(location))

    def load(self, location: str | Path, options: Mapping[str, Any] | None = None, dayfirst: bool = False):
        """The labels table of the dataset at ``location`` (generation options / dayfirst as it takes them)."""
        kwargs = dict(options or {}) if self.generated else {}
        if self.reads_dayfirst:
            kwargs["dayfirst"] = dayfirst
        return getattr(self.module, self.reader.split(":")[1])(location, **kwargs)


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source("synthetic", "lusv.data.sources.synthetic:load_synthetic", "a folder to generate the dataset in",
               default_location=_synthetic_folder, generated=True, has_frame_truth=True),
        Source("pocus", "lusv.data.sources.pocus:load_pocus", "the POCUS folder (dataset_metadata.csv, pocus_videos/)",
               default_location=lambda options: SHARED_DATA_ROOT / "pocus",
               # short clips at 10-60 fps (median ~90 frames): one clip per video; windows would give
               # ~10x the clips at no common duration (issue 12 keeps whole)
               clip_policy="whole"),
        Source("folder", "lusv.data.sources.folder:load_folder", "the labels CSV of your videos",
               cache_name=_name_after_csv, reads_dayfirst=True),
    )
}


def source_names() -> list[str]:
    """The registered source names, in registration order."""
    return list(SOURCES)


def get_source(name: str) -> Source:
    """The registration of source ``name``; ConfigError naming the others when there is none."""
    if name not in SOURCES:
        raise ConfigError(f"unknown data source '{name}': choose one of {sorted(SOURCES)}")
    return SOURCES[name]


def load_source(name: str, **kwargs):
    """Labels table of dataset ``name`` (one of ``SOURCES``); ``kwargs`` go to its reader unchanged.

    synthetic: ``load_synthetic(root, n_clips=..., ...)``; pocus: ``load_pocus(root)``;
    folder: ``load_folder(csv_path)``.
    """
    source = get_source(name)
    return getattr(source.module, source.reader.split(":")[1])(**kwargs)
