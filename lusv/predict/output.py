"""The predictions file of ``lusv predict``: rows appended as videos finish, resumed after a kill.

``PredictionsFile(out, columns, identity)`` opens ``out`` for a batch:

* an existing file is read first. It must be a predictions file of the same model (its
  ``model`` column = ``identity``), else it is refused in one line: rows of two models never mix.
  Its finished rows (status ``ok``) are kept (``finished``: by path); rows of failed or
  skipped files are dropped so that they are tried again; a last line cut short by a kill is
  dropped. The kept rows are written back atomically before anything is appended;
* ``append(rows, window_rows)`` writes complete CSV lines in one call each and fsyncs them, so
  a batch killed at any moment keeps every row appended before;
* ``finish(order)`` rewrites the file atomically with its rows in the order of the inputs.

The file, its folder and its writability are checked when it is opened, before any video is
read: an output path that cannot be written is one clear error, not a lost batch.
"""

from __future__ import annotations

import csv
import io as text_io
import os
from pathlib import Path

import pandas as pd

from lusv.errors import LusvError
from lusv.infra.io import read_table, write_csv


class PredictionsFile:
    def __init__(self, out: Path, columns: list[str], identity: str, windows_out: Path | None = None,
                 window_columns: list[str] | None = None) -> None:
        self.out, self.columns, self.identity = Path(out), list(columns), identity
        self.windows_out, self.window_columns = windows_out, list(window_columns or [])
        kept = self._earlier(self.out, self.columns)
        kept = kept[kept["status"] == "ok"] if len(kept) else kept
        self.finished = set(kept["path"]) if len(kept) else set()
        self._start(self.out, kept, self.columns)
        if windows_out is not None:
            windows = self._earlier(windows_out, self.window_columns)
            windows = windows[windows["path"].isin(self.finished)] if len(windows) else windows
            self._start(windows_out, windows, self.window_columns)

    def append(self, rows: list[dict], window_rows: list[dict] | None = None) -> None:
        """Window rows first: a kill between the two leaves window rows of a video whose row is
        missing, which the next run drops and writes again."""
        if self.windows_out is not None and window_rows:
            self._write_lines(self.windows_out, window_rows, self.window_columns)
        if rows:
            self._write_lines(self.out, rows, self.columns)

    def finish(self, order: list[str]) -> pd.DataFrame:
        """The whole file, its rows sorted by ``order`` (paths; others after), written back atomically."""
        table = read_table(self.out)
        rank = {path: index for index, path in enumerate(order)}
        table = table.assign(_rank=table["path"].map(rank).fillna(len(rank))).sort_values("_rank", kind="stable")
        table = table.drop(columns="_rank").reset_index(drop=True)
        write_csv(self.out, table)
        return table

    # ------------------------------------------------------------------------------------------
    def _earlier(self, path: Path, columns: list[str]) -> pd.DataFrame:
        if not path.exists():
            return pd.DataFrame(columns=columns)
        if not path.is_file():
            raise LusvError(f"--out {path} is a folder: name a CSV file (e.g. {path / 'predictions.csv'})")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LusvError(f"--out {path} exists but cannot be read ({exc}): choose another --out") from None
        if text and not text.endswith("\n"):  # the last line was cut short by a kill
            text = text[: text.rfind("\n") + 1]
        if not text.strip():
            return pd.DataFrame(columns=columns)
        try:
            table = pd.read_csv(text_io.StringIO(text), dtype={"clip_id": str, "patient_id": str, "path": str,
                                                               "model": str, "reason": str})
        except (ValueError, pd.errors.ParserError) as exc:
            raise LusvError(f"--out {path} exists and is not a lusv predictions file ({exc}): choose another --out") from None
        if list(table.columns) != columns:
            raise LusvError(f"--out {path} exists and is not a lusv predictions file of this kind (its columns: "
                            f"{', '.join(map(str, table.columns[:6]))}...): choose another --out or remove it")
        others = sorted(set(table["model"].dropna()) - {self.identity})
        if others:
            raise LusvError(f"--out {path} holds predictions of another model ({others[0]}; this one is "
                            f"{self.identity}): choose another --out, or remove it to start again")
        return table[table["model"] == self.identity]

    def _start(self, path: Path, kept: pd.DataFrame, columns: list[str]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_csv(path, kept.reindex(columns=columns))
        except OSError as exc:
            raise LusvError(f"cannot write predictions to {path} ({exc.strerror or exc}): choose another --out; "
                            "nothing was predicted") from None

    def _write_lines(self, path: Path, rows: list[dict], columns: list[str]) -> None:
        buffer = text_io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        for row in rows:
            writer.writerow({name: _cell(row.get(name)) for name in columns} | {"model": self.identity})
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else repr(float(value))  # NaN -> empty; repr keeps every digit
    return str(value)
