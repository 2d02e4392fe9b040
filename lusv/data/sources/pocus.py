"""The public POCUS lung-ultrasound dataset (Born et al., covid19_ultrasound) as a labels table.

``root`` holds ``dataset_metadata.csv`` (the dataset's own table, unmodified) and the
clips under ``pocus_videos/convex`` and ``pocus_videos/linear`` (any video extension).

- A metadata row matches a file when ``Filename`` equals the file name without its
  extension; rows without a file (most of the published table) are skipped, counted and
  logged, and so are files without a row (they have no labels).
- Labels: ``A-lines`` -> a_lines, ``B-lines`` -> b_lines, ``Consolidations`` ->
  consolidation, ``Effusion`` -> pleural_effusion. The table is hand-made: any value other
  than 0/1 (empty, ``n/A``, a URL pasted into the cell) becomes a missing label (NaN),
  counted and logged per column.
- Patients: ``Patient ID / Name`` is one running number over the whole table, so it is
  kept as is (prefixed ``pocus-`` so that it never collides with another dataset's ids).
  Where it is empty, the clip is grouped with the other unnamed clips of the same
  publisher (``Source ID``), as ``pocus-src<Source ID>-unknown``: one publication's
  unnamed clips may come from one patient, so grouping them can never leak a patient
  across folds (splitting them per clip could). Without a Source ID either, the clip is
  its own patient (``pocus-clip-<clip_id>``). Every fallback is logged.
- ``Date added`` (dd.mm.yy) -> acquired_on (NaT where unparseable, logged);
  ``Probe`` -> probe (the folder name where empty); source = ``pocus-src<Source ID>``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from lusv.data.labels import read_labels
from lusv.errors import LabelsError

log = logging.getLogger(__name__)

METADATA_FILE = "dataset_metadata.csv"
VIDEO_FOLDERS = ("pocus_videos/convex", "pocus_videos/linear")
LABEL_COLUMNS = {
    "A-lines": "a_lines",
    "B-lines": "b_lines",
    "Consolidations": "consolidation",
    "Effusion": "pleural_effusion",
}
NEEDED_COLUMNS = ("Filename", "Patient ID / Name", "Source ID", "Date added", "Probe", *LABEL_COLUMNS)


def load_pocus(root: str | os.PathLike) -> pd.DataFrame:
    """Labels table (the contract of ``lusv.data.labels.read_labels``) of the POCUS clips under ``root``."""
    # Absolute from the start: the clip paths are built from ``root`` and read_labels resolves
    # relative ones against ``root`` again, which doubled a relative root (../x -> ../x/../x).
    root = Path(root).resolve()
    metadata = _read_metadata(root)
    files = _clip_files(root)

    rows = metadata.drop_duplicates("Filename", keep="first")
    if len(rows) < len(metadata):
        log.warning("POCUS: %d duplicated Filename row(s) in %s; kept the first of each",
                    len(metadata) - len(rows), METADATA_FILE)
    matched = rows[rows["Filename"].isin(files)].copy()
    without_file = len(rows) - len(matched)
    without_row = sorted(set(files) - set(rows["Filename"]))
    log.warning("POCUS: %d clip(s) with metadata; skipped %d metadata row(s) whose clip is not under %s",
             len(matched), without_file, root / "pocus_videos")
    if without_row:
        log.warning("POCUS: skipped %d clip file(s) without a metadata row (no labels): %s",
                    len(without_row), ", ".join(without_row[:10]))
    if matched.empty:
        raise LabelsError(
            f"no POCUS clip under {root / 'pocus_videos'} matches a Filename in {root / METADATA_FILE}: "
            f"check the folder layout ({', '.join(VIDEO_FOLDERS)})"
        )

    table = pd.DataFrame({"clip_id": matched["Filename"].to_numpy()})
    table["path"] = [str(files[name]) for name in table["clip_id"]]
    table["patient_id"] = _patient_ids(matched)
    for column, pattern in LABEL_COLUMNS.items():
        table[pattern] = _labels(matched[column], column)
    table["acquired_on"] = _dates(matched["Date added"])
    folder_probe = [files[name].parent.name.lower() for name in table["clip_id"]]
    probe = matched["Probe"].str.strip().str.lower().to_numpy()
    table["probe"] = np.where(probe == "", folder_probe, probe)
    table["source"] = [f"pocus-src{value.strip()}" if value.strip() else "pocus" for value in matched["Source ID"]]
    return read_labels(table, base_dir=root)


def _read_metadata(root: Path) -> pd.DataFrame:
    path = root / METADATA_FILE
    if not path.is_file():
        raise LabelsError(
            f"POCUS metadata {path} does not exist: point load_pocus at the folder that holds "
            f"{METADATA_FILE} and pocus_videos/"
        )
    metadata = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    metadata.columns = [column.strip() for column in metadata.columns]
    missing = [column for column in NEEDED_COLUMNS if column not in metadata.columns]
    if missing:
        raise LabelsError(f"POCUS metadata {path} lacks column(s) {missing}; it has {list(metadata.columns)}")
    metadata["Filename"] = metadata["Filename"].str.strip()
    return metadata[metadata["Filename"] != ""]


def _clip_files(root: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for folder in VIDEO_FOLDERS:
        directory = root / folder
        if not directory.is_dir():
            log.warning("POCUS: folder %s does not exist", directory)
            continue
        for path in sorted(directory.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.stem in files:
                raise LabelsError(
                    f"two POCUS clips share the name '{path.stem}': {files[path.stem]} and {path}; "
                    "rename or remove one, clip ids must be unique"
                )
            files[path.stem] = path
    return files


def _patient_ids(matched: pd.DataFrame) -> list[str]:
    ids, fallbacks = [], 0
    for name, patient, source in zip(matched["Filename"], matched["Patient ID / Name"], matched["Source ID"]):
        patient, source = patient.strip(), source.strip()
        if patient:
            ids.append(f"pocus-{patient}")
            continue
        fallbacks += 1
        ids.append(f"pocus-src{source}-unknown" if source else f"pocus-clip-{name}")
    if fallbacks:
        log.warning("POCUS: %d clip(s) have no Patient ID; grouped per publisher (Source ID) instead", fallbacks)
    # The table numbers patients across publishers; an id used by two publishers is most likely
    # a typo, but keeping such clips together is the side that cannot leak, so only say so.
    sources_per_patient = pd.Series(list(matched["Source ID"]), index=ids).groupby(level=0).nunique()
    shared = sorted(sources_per_patient[sources_per_patient > 1].index)
    if shared:
        log.warning("POCUS: patient id(s) %s appear under several Source IDs; kept as one patient each", shared)
    return ids


def _labels(values: pd.Series, column: str) -> np.ndarray:
    text = values.str.strip()
    labels = np.where(text == "1", 1.0, np.where(text == "0", 0.0, np.nan))
    odd = text[np.isnan(labels)]
    if len(odd):
        shown = ", ".join(f"{value!r} x{count}" for value, count in odd.value_counts().items())
        log.warning("POCUS: %d clip(s) have no usable '%s' label (%s): treated as missing", len(odd), column, shown)
    return labels


def _dates(values: pd.Series) -> pd.Series:
    dates = pd.to_datetime(values.str.strip(), format="%d.%m.%y", errors="coerce")
    bad = int(dates.isna().sum())
    if bad:
        log.warning("POCUS: %d clip(s) have no valid 'Date added' (dd.mm.yy): acquired_on left empty", bad)
    return pd.Series(dates.to_numpy())
