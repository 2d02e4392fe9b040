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


class RunLockedError(LusvError):
    """Another process is working in the same run folder."""


class DiskFullError(LusvError):
    """A write failed because the disk (or quota) is full; the previous file is unchanged."""
