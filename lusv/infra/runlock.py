"""One process per run folder, one study per study folder: exclusive locks that name their holder
and die with it.

Two trainings into the same folder would mix: the second deletes the first's checkpoints, the
first then predicts with the second's best.pt. ``run_lock`` takes a ``flock`` on
``<folder>/.run.lock`` for the lifetime of a run; the operating system releases it when the
holder exits or is killed, so a lock left by a crashed run never blocks the next one, and a
second holder gets ``RunLockedError`` naming the first (pid, host, command, start time).

Two studies into one study folder would mix the same way at a larger scale (a second
``run_all.sh`` re-preparing the folder the first is training from): ``study_lock`` holds
``<study>/.study.lock`` while a study is prepared, and ``run_all.sh`` holds it for its whole run
(``python -m lusv.infra.runlock`` takes it on a descriptor of the shell, see ``main``). A step that
the holder itself started (notebook 01 under ``run_all.sh``) finds the lock named in the
environment variable ``LUSV_STUDY_LOCK`` and goes ahead.

Forked children (DataLoader workers) would inherit the lock's descriptor and keep the lock alive
for seconds after their parent is killed; this module gives their copies up right after the
fork (``os.register_at_fork``), so only the process that took a lock holds it. When a holder is
dead while its lock is still held, the message says so. Where ``fcntl`` is missing (Windows)
folders are not locked.
"""

from __future__ import annotations

import argparse
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
STUDY_LOCK_NAME = ".study.lock"
HELD_BY_CALLER_ENV = "LUSV_STUDY_LOCK"  # the study lock file a calling run_all.sh holds

_held_descriptors: set[int] = set()


def _give_up_locks_in_child() -> None:
    """In a forked child: point its copies of our lock descriptors at /dev/null, so the lock lives
    exactly as long as the process that took it (a flock belongs to the open file, which a fork shares)."""
    if not _held_descriptors:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        for fd in _held_descriptors:
            os.dup2(null, fd)
    finally:
        os.close(null)
    _held_descriptors.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_give_up_locks_in_child)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the exclusive lock of a run folder (created if needed) for the ``with`` block.

    The lock is a ``flock`` on ``<folder>/.run.lock``, which also records the holder (pid,
    host, command, start time). The operating system releases it when the holder exits or
    dies, so a lock left by a killed run never blocks the next one. A second holder gets a
    ``RunLockedError`` naming the first.
    """
    advice = "wait for that run to end or stop it, or train into another folder (run_name / out_dir)"
    with _exclusive(Path(folder), RUN_LOCK_NAME, "run folder", advice) as path:
        yield path


@contextlib.contextmanager
def study_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of a study folder (``<folder>/.study.lock``) for the ``with`` block, unless the
    process that started this one holds it already (``LUSV_STUDY_LOCK`` names it and it is held)."""
    folder = Path(folder)
    path = folder / STUDY_LOCK_NAME
    if os.environ.get(HELD_BY_CALLER_ENV) == str(path.resolve()) and is_held(path):
        yield path
        return
    advice = "wait for that study to end or stop it, or choose another run folder (--run NAME)"
    with _exclusive(folder, STUDY_LOCK_NAME, "study folder", advice) as path:
        yield path


@contextlib.contextmanager
def folder_lock(target: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of a result folder that is written as a whole (``lusv.infra.folders``): a
    ``.<name>.lock`` file beside ``target``, so that two writers never replace it at once."""
    target = Path(target)
    advice = "wait for it to end or stop it, or write to another folder (--out)"
    with _exclusive(target.parent, f".{target.name}.lock", "result folder", advice, shown=target) as path:
        yield path


def is_held(path: Path) -> bool:
    """Whether some process holds the flock of the lock file ``path``."""
    if fcntl is None or not path.is_file():
        return False
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


@contextlib.contextmanager
def _exclusive(folder: Path, name: str, what: str, advice: str, shown: Path | None = None) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    handle = open(path, "a+", encoding="utf-8")  # not "w": the holder's record must survive our attempt
    try:
        _take(handle.fileno(), path, shown or folder, what, advice)
        _held_descriptors.add(handle.fileno())
        _write_holder(handle.fileno(), os.getpid(), " ".join(sys.argv))
        yield path
        os.ftruncate(handle.fileno(), 0)  # a clean exit leaves no holder on record
    finally:
        _held_descriptors.discard(handle.fileno())
        handle.close()  # releases the flock


def _take(fd: int, path: Path, folder: Path, what: str, advice: str) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise RunLockedError(f"{what} {folder} is in use by {_lock_holder(path)}: {advice}") from None


def _write_holder(fd: int, pid: int, command: str) -> None:
    holder = {"pid": pid, "host": socket.gethostname(), "command": command[:500],
              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))


def _lock_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        named = f"process {holder['pid']} on {holder['host']} (since {holder['started']}: {holder['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its record in " + str(path) + " is unreadable)"
    if holder["host"] == socket.gethostname() and not _alive(int(holder["pid"])):
        return (f"{named}, which has ended; a process it started (a data-loader worker, a notebook kernel) "
                "still holds the lock: it goes when that process ends, in seconds, or stop it")
    return named


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m lusv.infra.runlock STUDY --fd N --pid P --command TEXT``: take the study lock on
    descriptor N, which the calling shell opened on ``STUDY/.study.lock`` and keeps open (a flock
    belongs to the open file, so the lock stays with the shell after this process exits), and record
    P as its holder. Exit 0 when taken, 3 with one line naming the holder when the study is busy."""
    parser = argparse.ArgumentParser(prog="python -m lusv.infra.runlock")
    parser.add_argument("study")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--command", default="")
    args = parser.parse_args(argv)
    folder = Path(args.study)
    try:
        _take(args.fd, folder / STUDY_LOCK_NAME, folder, "study folder",
              "wait for that study to end or stop it, or pass --run NAME for another study")
    except RunLockedError as exc:
        print(f"run_all.sh: {exc}", file=sys.stderr)
        return 3
    _write_holder(args.fd, args.pid, args.command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
