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

def worker(started):
    started.set()  # running its own code: past the fork handlers, as a DataLoader worker would be
    time.sleep(60)

with runlock.run_lock(sys.argv[1]):
    # forked as DataLoader workers are; unlike them (torch ends its workers with their parent on
    # Linux) this one lives on after the kill, for as long as a slow worker would
    context = multiprocessing.get_context("fork")
    started = context.Event()
    child = context.Process(target=worker, args=(started,))
    child.start()
    started.wait(60)
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


# ----------------------------------------------------------------------------- part 6: one study per study folder


def test_prepare_refuses_a_study_folder_another_study_holds(tmp_path):
    from lusv import study

    with runlock.study_lock(tmp_path / "study"):  # another run_all.sh, or another `lusv prepare`
        with pytest.raises(RunLockedError, match=rf"study folder .*study is in use by process {os.getpid()} .*"
                                                 r"choose another run folder"):
            study.prepare(tmp_path / "study", profile="quick", data="synthetic", data_path=tmp_path / "never-made")
    assert not (tmp_path / "never-made").exists() and not (tmp_path / "study" / "prepare").exists()


def test_a_step_started_by_the_holder_goes_ahead_and_others_do_not(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    code = ("import os, sys, time\nfrom lusv.infra import runlock\nwith runlock.study_lock(sys.argv[1]):\n"
            "    print('held', flush=True)\n    time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"in use by process {holder.pid}"):
            with runlock.study_lock(folder):
                pass
        monkeypatch.setenv(runlock.HELD_BY_CALLER_ENV, str((folder / runlock.STUDY_LOCK_NAME).resolve()))
        with runlock.study_lock(folder):  # as notebook 01 under the run_all.sh that holds the lock
            pass
    finally:
        holder.kill()
        holder.wait()
    with runlock.study_lock(folder):  # the holder gone, the named lock is taken like any other
        assert runlock.is_held(folder / runlock.STUDY_LOCK_NAME)


def test_a_second_run_all_into_a_busy_study_folder_is_one_line(tmp_path):
    name = f"test-lock-{os.getpid()}"
    run_dir = REPO / "results" / name
    env = {**os.environ, "VIRTUAL_ENV": sys.prefix, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    try:
        with runlock.study_lock(run_dir):
            second = subprocess.run(["bash", "run_all.sh", "quick", "--run", name], cwd=REPO, env=env,
                                    capture_output=True, text=True, timeout=300)
        assert second.returncode == 3, second.stderr
        lines = [line for line in second.stderr.splitlines() if not line.startswith("lusv: using the active")]
        assert len(lines) == 1 and lines[0].startswith(f"run_all.sh: study folder {Path('results') / name} is in use "
                                                       f"by process {os.getpid()}"), second.stderr
        assert "pass --run NAME for another study" in lines[0] and "Traceback" not in second.stderr
        assert sorted(p.name for p in run_dir.iterdir()) == [".study.lock"]  # nothing of the study touched
        assert "==" not in second.stdout  # no notebook started
    finally:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
