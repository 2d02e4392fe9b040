"""Every error lusv raises on purpose, each naming the file, row or column and the fix.

Catching ``LusvError`` at the command line turns them into a one-line message and a
non-zero exit instead of a traceback from deep inside a library. An error that callers need
more from than its message carries that data through its constructor (``VideoError.reason``,
``IngestError.report``), so no caller attaches attributes after raising or probes for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class LusvError(Exception):
    """Base class of every error lusv raises deliberately."""


class VideoError(LusvError):
    """A clip cannot be used: unreadable, corrupt, empty, too short, unknown format.

    ``reason`` is a short cause shared by alike clips ("missing file", "too few frames"), which
    the ingest report counts; the message is the full explanation naming the file.
    """

    def __init__(self, message: str, reason: str = "unusable clip") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep the reason when the error crosses a process boundary
        return type(self), (str(self), self.reason)


class IngestError(LusvError):
    """No clip of a labels table is usable: carries the ``IngestReport`` with every clip's reason
    and, once it is saved, ``report_path``, so that the user can fix the data clip by clip."""

    def __init__(self, message: str, report: Any, report_path: Path | None = None) -> None:
        super().__init__(message)
        self.report = report
        self.report_path = report_path

    def __reduce__(self):
        return type(self), (str(self), self.report, self.report_path)


class CacheError(LusvError):
    """A clip cache entry asked for is missing or damaged; ``ClipCache.build`` rebuilds it."""


class LabelsError(LusvError):
    """The labels table breaks the contract (missing column, bad value, duplicate id)."""


class PredictionsError(LusvError):
    """A predictions table breaks the contract or two tables cannot be compared."""


class LeakageError(LusvError):
    """A patient appears on both sides of a split."""


class CheckpointError(LusvError):
    """A checkpoint is missing, corrupt, or carries code we refuse to unpickle."""


class ConfigError(LusvError):
    """Run parameters are inconsistent or name something that does not exist."""


class TooFewPatientsError(IngestError, ConfigError):
    """Too few patients are left after ingestion for the patient-level folds asked for; carries
    the ingest report like ``IngestError`` so that ``lusv prepare`` shows the skipped clips."""


class RunLockedError(LusvError):
    """Another process is working in the same run folder."""


class DiskFullError(LusvError):
    """A write failed because the disk (or quota) is full; the previous file is unchanged."""


def name_a_few(values, limit: int = 10, *, sort: bool = False) -> str:
    """The first ``limit`` values, repr-quoted and comma-separated, then "and N more": how an
    error message names the clips or patients at fault without listing thousands. ``sort``
    names them as sorted strings (for a set, whose order would otherwise vary)."""
    values = sorted(map(str, values)) if sort else list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
