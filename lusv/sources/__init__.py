"""Readers that turn a dataset into the labels table (see ``lusv.labels``).

``load_source(name, **kwargs)`` picks one by name; each reader is imported only when
asked for, so a missing optional dependency of one source never breaks the others.
"""

from __future__ import annotations

import importlib

import pandas as pd

from lusv.errors import ConfigError

# name -> (module, function); kwargs go to the function unchanged.
SOURCES: dict[str, tuple[str, str]] = {
    "synthetic": ("lusv.sources.synthetic", "load_synthetic"),
    "pocus": ("lusv.sources.pocus", "load_pocus"),
    "folder": ("lusv.sources.folder", "load_folder"),
}


def load_source(name: str, **kwargs) -> pd.DataFrame:
    """Labels table of dataset ``name`` (one of ``SOURCES``); ``kwargs`` go to its reader.

    synthetic: ``load_synthetic(root, n_clips=..., ...)``; pocus: ``load_pocus(root)``;
    folder: ``load_folder(csv_path)``.
    """
    if name not in SOURCES:
        raise ConfigError(f"unknown data source '{name}': choose one of {sorted(SOURCES)}")
    module_name, function_name = SOURCES[name]
    reader = getattr(importlib.import_module(module_name), function_name)
    return reader(**kwargs)
