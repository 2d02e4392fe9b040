"""Errors that lusv raises on purpose: each names the file, row or column and the fix.

Catching ``LusvError`` at the command line turns them into a one-line message and a
non-zero exit instead of a traceback from deep inside a library.
"""


class LusvError(Exception):
    """Base class of every error lusv raises deliberately."""


class VideoError(LusvError):
    """A clip cannot be used: unreadable, corrupt, empty, too short, unknown format."""


class LabelsError(LusvError):
    """The labels table breaks the contract (missing column, bad value, duplicate id)."""


class LeakageError(LusvError):
    """A patient appears on both sides of a split."""


class CheckpointError(LusvError):
    """A checkpoint is missing, corrupt, or carries code we refuse to unpickle."""


class ConfigError(LusvError):
    """Run parameters are inconsistent or name something that does not exist."""


def name_a_few(values, limit: int = 10, *, sort: bool = False) -> str:
    """The first ``limit`` values, repr-quoted and comma-separated, then "and N more": how an
    error message names the clips or patients at fault without listing thousands. ``sort``
    names them as sorted strings (for a set, whose order would otherwise vary)."""
    values = sorted(map(str, values)) if sort else list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
