"""What a full disk looks like to a writer, and what it needs back to report itself.

``is_disk_full`` recognises a write that failed for lack of space anywhere in the error's
cause/context chain: ``ENOSPC``/``EDQUOT``, or torch's C++ stream failure ("iostream error"),
which on a real full disk arrives wrapped in a second RuntimeError ("unexpected pos ...").
``release_frames`` drops the frames of such an error's traceback, which hold the failed writer and
with it the deleted temporary file's space; ``free_space`` words what is left for the message.
``lusv.infra.io.atomic_path`` turns all this into one ``DiskFullError`` line.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or any error in its cause/context chain is a full disk.

    On a real full disk torch raises "iostream error" and then, while closing the archive, a
    second RuntimeError ("unexpected pos ...") whose context is the first: the outer error alone
    does not say why."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _says_disk_full(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def release_frames(exc: BaseException | None) -> None:
    """Clear the frames of ``exc``'s traceback and of its causes: the writer that failed (torch's
    archive) is held by them, and with it the deleted temporary file, whose space a full disk
    needs back to record the failure in config.json."""
    import traceback

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def _says_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    # torch.save writes through a C++ stream whose failure on a full disk reads only so.
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("basic_ios::clear", "iostream error", "No space left on device")
    )


def free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB"
    except OSError:
        return "unknown"
