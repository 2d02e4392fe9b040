"""Read and validate the labels table (the "labels contract" every data source produces).

Columns (see ``lusv.data.patterns``):

- ``clip_id`` (str, unique), ``path`` (str; a relative path is resolved against the CSV's
  folder, or ``base_dir``, and returned absolute), ``patient_id`` (str, never empty);
- ``a_lines``, ``b_lines``, ``consolidation``, ``pleural_effusion``: 0/1 labels returned as
  float 0.0/1.0, NaN = missing label (masked in loss and metrics). Accepted spellings:
  ``0``, ``1``, ``0.0``, ``1.0``, ``true``, ``false`` (any case); missing: an empty cell or
  one of ``MISSING_TOKENS``. Anything else (``yes``, ``2``, a URL) is an error;
- optional ``acquired_on``: ISO 8601 dates (``2020-04-20``, ``2020-04-20T13:05``) by default;
  ``dayfirst=True`` instead reads day-first dates such as ``20.04.20`` or ``20/04/2020``.
  Empty = NaT. Returned as pandas datetime64;
- optional ``probe``, ``source`` (str, empty string when absent). Other columns are kept.

Every problem raises ``LabelsError`` naming the CSV line (header = line 1) or DataFrame
row, the column, the offending value and the fix.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from lusv.data.patterns import OPTIONAL_COLUMNS, PATTERNS, REQUIRED_COLUMNS
from lusv.errors import LabelsError

log = logging.getLogger(__name__)

TRUE_TOKENS = frozenset({"1", "1.0", "true"})
FALSE_TOKENS = frozenset({"0", "0.0", "false"})
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "none", "null"})


def read_labels(
    csv_path_or_df: str | os.PathLike | pd.DataFrame,
    base_dir: str | os.PathLike | None = None,
    *,
    dayfirst: bool = False,
) -> pd.DataFrame:
    """Validate a labels CSV (or DataFrame) and return it in the contract's types.

    ``base_dir`` resolves relative clip paths; it defaults to the CSV's folder (or the
    current directory for a DataFrame). ``dayfirst`` selects the ``acquired_on`` format.
    """
    if isinstance(csv_path_or_df, pd.DataFrame):
        raw = csv_path_or_df.copy()
        where = _RowNamer(None)
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        csv_path = Path(csv_path_or_df)
        raw, lines = _read_csv(csv_path)
        where = _RowNamer(csv_path, lines)
        base = Path(base_dir) if base_dir is not None else csv_path.parent
    raw.columns = [str(column).strip() for column in raw.columns]
    raw = raw.reset_index(drop=True)

    missing = [column for column in REQUIRED_COLUMNS if column not in raw.columns]
    if missing:
        raise LabelsError(
            f"{where.source} lacks column(s) {missing}; it has {list(raw.columns)}. "
            f"A labels table needs {list(REQUIRED_COLUMNS)} (optional: {list(OPTIONAL_COLUMNS)})"
        )

    out = pd.DataFrame(index=raw.index)
    out["clip_id"] = _required_text(raw, "clip_id", where)
    _check_unique_ids(out["clip_id"], where)
    out["path"] = [str(_absolute(text, base)) for text in _required_text(raw, "path", where)]
    out["patient_id"] = _required_text(raw, "patient_id", where)
    for pattern in PATTERNS:
        out[pattern] = _binary_labels(raw[pattern], pattern, where)
    if "acquired_on" in raw.columns:
        out["acquired_on"] = _dates(raw["acquired_on"], where, dayfirst)
    for column in ("probe", "source"):
        if column in raw.columns:
            out[column] = raw[column].map(lambda value: "" if _is_missing(value) else str(value).strip())
    extra = [column for column in raw.columns if column not in out.columns]
    for column in extra:
        out[column] = raw[column]

    unlabelled = int(out[list(PATTERNS)].isna().all(axis=1).sum())
    if unlabelled:
        log.warning("%s: %d clip(s) have no label at all (all four patterns missing)", where.source, unlabelled)
    return out


class _RowNamer:
    """Names a row the way a user finds it: CSV line number, or DataFrame row position."""

    def __init__(self, csv_path: Path | None, lines: list[int] | None = None):
        self.csv_path = csv_path
        self.lines = lines  # file line of each row (blank lines are skipped)
        self.source = f"labels CSV {csv_path}" if csv_path else "labels table"

    def __call__(self, position: int) -> str:
        if self.csv_path is None:
            return f"labels table row {position}"
        line = self.lines[position] if self.lines is not None else position + 2  # header is line 1
        return f"{self.csv_path} line {line}"


def _read_csv(csv_path: Path) -> tuple[pd.DataFrame, list[int]]:
    """The CSV as text, without its blank lines, and the file line on which each row starts.

    One pass with the csv module: every value stays text, so validation rather than a parser's
    guessing decides what it means; a row with more non-empty values than the header has
    columns is refused (pandas would shift every column of a file whose rows end in a comma,
    or drop the extra values); short rows are padded with empty (= missing) values.
    """
    if not csv_path.is_file():
        raise LabelsError(f"labels CSV {csv_path} does not exist: check the path")
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet exports add.
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            start = reader.line_num + 1
            for fields in reader:
                if any(value.strip() for value in fields):
                    extra = [value for value in fields[len(header):] if value.strip()]
                    if extra:
                        raise LabelsError(
                            f"{csv_path} line {start}: {len(fields)} fields but the header has {len(header)} "
                            f"columns (extra value(s) {extra[:3]}): quote values that contain commas or add "
                            "the column's name"
                        )
                    rows.append((fields + [""] * len(header))[: len(header)])
                    lines.append(start)
                start = reader.line_num + 1
    except (csv.Error, UnicodeDecodeError) as exc:
        raise LabelsError(f"labels CSV {csv_path} is not a readable CSV ({exc}): save it as UTF-8 CSV") from None
    if not header or not any(name.strip() for name in header):
        raise LabelsError(f"labels CSV {csv_path} is empty: it needs a header line naming its columns")
    _refuse_other_delimiters(csv_path, header)
    header, rows = _drop_unnamed_empty_columns(csv_path, header, rows, lines)
    names = [name.strip() for name in header]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise LabelsError(f"labels CSV {csv_path} names column(s) {repeated} more than once in its header")
    if not rows:
        raise LabelsError(f"labels CSV {csv_path} has a header but no clip rows")
    return pd.DataFrame(rows, columns=names), lines


def _refuse_other_delimiters(csv_path: Path, header: list[str]) -> None:
    """A semicolon- or tab-separated export reads as one long column name: say so."""
    if any(column in header for column in REQUIRED_COLUMNS):
        return
    joined = ",".join(header)
    for delimiter, name in ((";", "semicolon"), ("\t", "tab")):
        if sum(column in joined.split(delimiter) for column in REQUIRED_COLUMNS) >= 2:
            raise LabelsError(
                f"labels CSV {csv_path} looks {name}-delimited: export it with commas as the separator "
                f"(its header reads {joined[:120]!r})"
            )


def _drop_unnamed_empty_columns(
    csv_path: Path, header: list[str], rows: list[list[str]], lines: list[int]
) -> tuple[list[str], list[list[str]]]:
    """Spreadsheets export trailing columns without a name and without values (",,"): drop
    them; an unnamed column that holds a value is refused, naming the line."""
    unnamed = [index for index, name in enumerate(header) if not name.strip()]
    for index in unnamed:
        for row, line in zip(rows, lines):
            if row[index].strip():
                raise LabelsError(
                    f"{csv_path} line {line}: column {index + 1} has no name but holds {row[index]!r}: "
                    "name the column in the header or remove the value"
                )
    keep = [index for index in range(len(header)) if index not in set(unnamed)]
    return [header[i] for i in keep], [[row[i] for i in keep] for row in rows]


def _is_missing(value) -> bool:
    try:
        if pd.isna(value):
            return True
    except (TypeError, ValueError):
        pass
    return str(value).strip().lower() in MISSING_TOKENS


def _required_text(raw: pd.DataFrame, column: str, where: _RowNamer) -> list[str]:
    values = []
    for position, value in enumerate(raw[column]):
        if _is_missing(value):
            raise LabelsError(f"{where(position)}: column '{column}' is empty; every clip needs a {column}")
        values.append(str(value).strip())
    return values


def _check_unique_ids(clip_ids: pd.Series, where: _RowNamer) -> None:
    duplicated = clip_ids[clip_ids.duplicated(keep=False)]
    if duplicated.empty:
        return
    clip_id = duplicated.iloc[0]
    rows = [where(int(position)) for position in np.flatnonzero(clip_ids.to_numpy() == clip_id)]
    raise LabelsError(
        f"clip_id '{clip_id}' appears more than once ({' and '.join(rows)}); clip ids must be unique: "
        f"remove or rename the duplicate ({duplicated.nunique()} duplicated id(s) in total)"
    )


def _absolute(text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _binary_labels(values: pd.Series, column: str, where: _RowNamer) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for position, value in enumerate(values):
        if isinstance(value, (bool, np.bool_)):
            out[position] = float(value)
            continue
        if _is_missing(value):
            out[position] = np.nan
            continue
        token = str(value).strip().lower()
        if token in TRUE_TOKENS:
            out[position] = 1.0
        elif token in FALSE_TOKENS:
            out[position] = 0.0
        else:
            raise LabelsError(
                f"{where(position)}: column '{column}' has value {str(value)!r}; labels must be 0 or 1 "
                "(also 0.0/1.0/true/false) or empty for a missing label: fix or empty that cell"
            )
    return out


def _dates(values: pd.Series, where: _RowNamer, dayfirst: bool) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    style = "day-first dates (e.g. 20.04.2020)" if dayfirst else "ISO dates YYYY-MM-DD"
    parsed = []
    for position, value in enumerate(values):
        if _is_missing(value):
            parsed.append(pd.NaT)
            continue
        try:
            if dayfirst:
                parsed.append(pd.to_datetime(str(value).strip(), dayfirst=True))
            else:
                parsed.append(pd.to_datetime(str(value).strip(), format="ISO8601"))
        except (ValueError, TypeError, OverflowError):
            raise LabelsError(
                f"{where(position)}: column 'acquired_on' has {str(value)!r}, which is not one of the "
                f"{style} expected here: fix the date, empty the cell, or, if the file uses the other "
                f"format, read it with dayfirst={not dayfirst}"
                f"{' (lusv prepare --dayfirst)' if not dayfirst else ' (lusv prepare without --dayfirst)'}"
            ) from None
    return pd.Series(pd.to_datetime(parsed), index=values.index)
