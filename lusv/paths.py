"""Where the repository keeps its data: the one place that knows the folder layout.

Relative study folders are relative to the repository root (notebooks run from notebooks/,
the command line from anywhere); generated datasets and the clip cache live under ``data/``;
datasets shared between checkouts (the public POCUS clips) lie beside the repository in
``../shared/data``. Standard library only: ``run_all.sh`` reads it before an environment exists.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO_ROOT / "data"
SHARED_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"


def in_repository(path: str | os.PathLike) -> Path:
    """``path`` as is when absolute, else relative to the repository root."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def default_cache_root(dataset_name: str) -> Path:
    """The clip cache of a dataset when the caller names none: ``data/cache/<dataset name>``."""
    return DATA_ROOT / "cache" / dataset_name
