"""One process per run folder: an exclusive lock that names its holder and dies with it.

Two trainings into the same folder would mix: the second deletes the first's checkpoints, the
first then predicts with the second's best.pt. ``run_lock`` takes a ``flock`` on
``<folder>/.run.lock`` for the lifetime of a run; the operating system releases it when the
holder exits or is killed, so a lock left by a crashed run never blocks the next one, and a
second holder gets ``RunLockedError`` naming the first (pid, host, command, start time).
Where ``fcntl`` is missing (Windows) the folder is not locked.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

try:  # POSIX; where it is missing (Windows) the lock is not taken
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

from lusv.errors import RunLockedError


RUN_LOCK_NAME = ".run.lock"


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the exclusive lock of a run folder (created if needed) for the ``with`` block.

    The lock is a ``flock`` on ``<folder>/.run.lock``, which also records the holder (pid,
    host, command, start time). The operating system releases it when the holder exits or
    dies, so a lock left by a killed run never blocks the next one. A second holder gets a
    ``RunLockedError`` naming the first.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RUN_LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")  # not "w": the holder's record must survive our attempt
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise RunLockedError(
                    f"run folder {folder} is in use by {_lock_holder(path)}: wait for that run to end or "
                    "stop it, or train into another folder (run_name / out_dir)"
                ) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:500],
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder) + "\n")
        handle.flush()
        yield path
        handle.seek(0)
        handle.truncate()  # a clean exit leaves no holder on record
    finally:
        handle.close()  # releases the flock


def _lock_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"process {holder['pid']} on {holder['host']} (since {holder['started']}: {holder['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its record in " + str(path) + " is unreadable)"
