"""Issue 25, parts 4 and 6: a lock lives exactly as long as the process that took it, says when its
holder is dead, and a study folder takes one study at a time (``run_all.sh``, ``prepare``).

Kills are real SIGKILLs of subprocesses; the children are forked as DataLoader workers are.
"""

import dataclasses
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lusv.errors import RunLockedError
from lusv.infra import runlock

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)


KILLED_WITH_A_CHILD = """
import multiprocessing, os, signal, sys, time
from lusv.infra import runlock

with runlock.run_lock(sys.argv[1]):
    # forked as DataLoader workers are; unlike them (torch ends its workers with their parent on
    # Linux) this one lives on after the kill, for as long as a slow worker would
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    child.start()
    print(child.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_forked_child_of_a_killed_run_does_not_keep_its_run_lock(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # Popen, not run(): the child inherits the pipe, and run() would wait for the child's end
    holder = subprocess.Popen([sys.executable, "-c", KILLED_WITH_A_CHILD, str(tmp_path / "run")], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    child = int(holder.stdout.readline())
    try:
        assert holder.wait(timeout=60) == -signal.SIGKILL
        assert Path(f"/proc/{child}").exists()  # alive, holding what it inherited
        with runlock.run_lock(tmp_path / "run"):  # a resume right after the kill is not refused
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        holder.stdout.close()


def test_a_forked_child_holds_no_lock_and_the_parent_still_does(tmp_path):
    with runlock.run_lock(tmp_path / "run"):
        pid = os.fork()
        if pid == 0:  # the child: the lock must be free of it, yet held by the parent
            code = 2
            try:
                code = 0 if runlock.is_held(tmp_path / "run" / runlock.RUN_LOCK_NAME) else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with pytest.raises(RunLockedError):
            with runlock.run_lock(tmp_path / "run"):
                pass


def test_a_dead_holder_is_told_from_a_live_one(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    path = folder / runlock.RUN_LOCK_NAME
    path.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "command": "lusv train",
                                "started": "2026-01-01T00:00:00"}) + "\n")
    with open(path, "rb") as still_held:  # what the dead holder's child keeps open
        fcntl.flock(still_held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(RunLockedError, match=rf"in use by process {gone.pid} .*which has ended; a process it "
                                                 r"started .* still holds the lock"):
            with runlock.run_lock(folder):
                pass
    with runlock.run_lock(folder), pytest.raises(RunLockedError) as live:
        with runlock.run_lock(folder):
            pass
    assert f"process {os.getpid()}" in str(live.value) and "has ended" not in str(live.value)
