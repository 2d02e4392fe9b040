"""Human names of the study's model configurations: the one mapping from study keys (the names
in ``oof/``, ``runs/`` and every table) to what a reader sees (``USVN``, ``LUV-Net K=13``).

The paper's own row names are in ``lusv/paper_tables/table1.csv`` (``paper_model``); these are
shorter and name lusv's variants too (sweep points, the 18-layer R(2+1)D). What each key trains
is in ``lusv.models.roster``.
"""

from __future__ import annotations

import re
from typing import Iterable

import pandas as pd
from lusv.data.patterns import DISPLAY_NAMES

MODEL_NAMES: dict[str, str] = {
    "luvnet": "LUV-Net",
    "luvnet_no_temporal": "LUV-Net without temporal module",
    "luvnet_resnet50": "LUV-Net (ResNet-50)",
    "luvnet_random_init": "LUV-Net (DenseNet-161), no pretraining",
    "usvn": "USVN",
    "c3d": "C3D",
    "r2plus1d": "R(2+1)D-18",
    "r2plus1d_34": "R(2+1)D-34",
    "cnn_lstm": "CNN-LSTM",
    "frame_based": "Frame-based",
    "mvit_b": "MViT-B",
    "swin_b": "Swin-B",
    "linear_probe": "Linear probe",  # lusv.evaluation.linear_probe: logistic regression on mean-pooled frozen features
}

# Sweep points of LUV-Net: luvnet_k13 (temporal kernel), luvnet_h4 (attention heads).
_SWEEP = re.compile(r"^luvnet_([kh])(\d+)$")


def model_name(key: str) -> str:
    """The reader's name of a study key; an unknown key is shown as it is."""
    if key in MODEL_NAMES:
        return MODEL_NAMES[key]
    sweep = _SWEEP.match(key)
    if sweep:
        return f"LUV-Net {sweep.group(1).upper()}={int(sweep.group(2))}"
    return key


def model_names(keys: Iterable[str]) -> list[str]:
    return [model_name(key) for key in keys]


def with_model_names(table: pd.DataFrame, column: str | None = None) -> pd.DataFrame:
    """A copy of ``table`` whose model column (``column``, else the first of Model, model, key)
    holds human names instead of study keys."""
    if column is None:
        column = next((c for c in ("Model", "model", "key") if c in table.columns), None)
        if column is None:
            raise KeyError(f"no model column (Model, model or key) in {list(table.columns)}")
    out = table.copy()
    out[column] = out[column].map(lambda key: model_name(str(key)))
    return out


# Column headers of the paper-vs-lusv tables (lusv.report.paper, lusv.report.sweeps) as a reader says them.
HEADERS: dict[str, str] = {
    "key": "Model", "paper_model": "paper's name", "kernel_size": "K", "num_heads": "H",
    "params_m_paper": "parameters (M), paper", "params_m_lusv": "parameters (M), lusv",
    "params_m_diff": "parameters (M), difference", "gmac_paper": "GMAC, paper", "gmac_lusv": "GMAC, lusv",
    "gmac_diff": "GMAC, difference",
}
_STATISTICS = {"paper": "paper", "lusv": "lusv", "diff": "difference", "mean": "mean", "sd": "sd",
               "pooled": "pooled", "ci_low": "CI low", "ci_high": "CI high"}


def _header(column: str, names: dict[str, str]) -> str:
    """'a_lines_paper' -> 'A-lines, paper'; the names in HEADERS; anything else unchanged."""
    if column in HEADERS:
        return HEADERS[column]
    for key, name in names.items():
        statistic = column[len(key) + 1:] if column.startswith(f"{key}_") else None
        if statistic in _STATISTICS:
            return f"{name}, {_STATISTICS[statistic]}"
    return column


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of a result table for reading: study keys in its model column (Model, model or
    key) become model names, pattern keys in its pattern column (pattern or column) become
    display names (A-lines, ..., Macro, Micro), and the paper-vs-lusv headers are spelled out
    ('a_lines_diff' -> 'A-lines, difference', 'key' -> 'Model'). Numbers are left as they are."""
    out = table.copy()
    model_column = next((c for c in ("Model", "model", "key") if c in out.columns), None)
    if model_column is not None:
        out[model_column] = out[model_column].map(lambda key: model_name(str(key)))
    names = {**DISPLAY_NAMES, "macro": "Macro", "micro": "Micro"}
    for column in ("pattern", "column"):
        if column in out.columns:
            out[column] = out[column].map(lambda value: names.get(value, value))
    return out.rename(columns=lambda column: _header(str(column), names))
