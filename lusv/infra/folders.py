"""A result folder replaced as a whole: readers see the previous result or the new one, never a mix.

``replaced_folder(target)`` yields an empty staging folder beside ``target``
(``.<name>.partial-<id>``) to write the new result into. When the block ends without an error, the
staging folder takes ``target``'s place: the previous folder is renamed aside
(``.<name>.old-<id>``), the staging folder renamed to ``target``, and the previous one removed.
When the block raises (a damaged checkpoint, a full disk, Ctrl-C), the staging folder is removed
and ``target`` is left exactly as it was. A writer killed outright leaves its staging folder, or,
killed between the two renames, the previous folder set aside: the next ``replaced_folder`` (or
``recover_folder``) removes the first and puts the second back before it starts.

Two writers of one target would still race: hold ``lusv.infra.runlock.folder_lock(target)``
around the block.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


def _leftovers(target: Path, kind: str) -> list[Path]:
    prefix = f".{target.name}.{kind}-"
    if not target.parent.is_dir():
        return []
    return sorted((p for p in target.parent.iterdir() if p.name.startswith(prefix)), key=lambda p: p.stat().st_mtime)


def recover_folder(target: str | os.PathLike) -> None:
    """Undo what a killed ``replaced_folder`` left: staging folders go, a previous result set aside
    comes back when ``target`` itself is missing (the kill fell between the renames)."""
    target = Path(target)
    for partial in _leftovers(target, "partial"):
        log.warning("removing %s, the unfinished result of an interrupted run", partial)
        shutil.rmtree(partial, ignore_errors=True)
    olds = _leftovers(target, "old")
    if olds and not target.exists():
        log.warning("restoring %s from %s: an interrupted run had set it aside", target, olds[-1].name)
        os.rename(olds.pop(), target)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def replaced_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces ``target`` as a whole (see the module docstring)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(target)
    token = uuid.uuid4().hex[:8]
    staging = target.parent / f".{target.name}.partial-{token}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = target.parent / f".{target.name}.old-{token}"
    if target.exists():
        os.rename(target, old)
    os.rename(staging, target)
    _fsync_directory(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
