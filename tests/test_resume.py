"""Reliability #1: a run killed mid-epoch (SIGKILL) and resumed equals an uninterrupted run.

Training runs in subprocesses so that the kill is real: ``LUSV_TEST_KILL_AFTER_BATCHES=E:N``
makes lusv.train SIGKILL its own process after N training batches of epoch E.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lusv.infra import io
from lusv.errors import CheckpointError
from lusv.data.patterns import PATTERNS
from lusv.train import KILL_ENV, run

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
# Augmentation, dropout and shuffling all on: each random stream must be restored on resume.
RUN = {"epochs": EPOCHS, "max_batches_per_epoch": 3, "batch_size": 2, "patience": 10, "augment": True}


def _train_in_subprocess(params: dict, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop(KILL_ENV, None)
    if kill_at:
        env[KILL_ENV] = kill_at
    code = (
        "import json, sys, torch; torch.set_num_threads(1); "
        "from lusv.train import run; run(**json.loads(sys.argv[1]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, json.dumps(params)], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )


def _probabilities(run_dir: Path, role: str) -> pd.DataFrame:
    table = pd.read_csv(run_dir / f"predictions_{role}.csv", dtype={"clip_id": str, "patient_id": str})
    return table.set_index("clip_id")


def test_killed_and_resumed_run_equals_uninterrupted_run(tiny_data, tmp_path):
    full = _train_in_subprocess(tiny_data.params(tmp_path, run_name="uninterrupted", **RUN))
    assert full.returncode == 0, full.stderr

    interrupted = tiny_data.params(tmp_path, run_name="interrupted", **RUN)
    killed = _train_in_subprocess(interrupted, kill_at="2:2")  # mid-way through epoch 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_dir = tmp_path / "interrupted"
    assert io.torch_load(run_dir / "checkpoint.pt")["epoch"] == 1
    assert not (run_dir / "predictions_test.csv").exists()
    assert len(pd.read_csv(run_dir / "log.csv")) == 1
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))

    resumed = _train_in_subprocess({**interrupted, "resume": True})
    assert resumed.returncode == 0, resumed.stderr
    # the resumed process trained epochs 2 and 3 only
    assert [line.split(" epoch ")[1].split()[0] for line in resumed.stdout.splitlines() if " epoch " in line] == ["2/3", "3/3"]

    a, b = tmp_path / "uninterrupted", run_dir
    config_a, config_b = (json.loads((d / "config.json").read_text()) for d in (a, b))
    assert config_a["best_epoch"] == config_b["best_epoch"]
    assert config_a["best_val_loss"] == pytest.approx(config_b["best_val_loss"], abs=1e-6)
    log_a, log_b = (pd.read_csv(d / "log.csv").drop(columns="seconds") for d in (a, b))
    assert log_a["epoch"].tolist() == log_b["epoch"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(log_a.to_numpy(), log_b.to_numpy(), atol=1e-6)
    for role in ("val", "test", "temporal_test"):
        pa, pb = _probabilities(a, role), _probabilities(b, role)
        assert list(pa.index) == list(pb.index)
        columns = [f"p_{p}" for p in PATTERNS]
        np.testing.assert_allclose(pa[columns].to_numpy(), pb[columns].to_numpy(), atol=1e-6)
    state_a, state_b = io.torch_load(a / "best.pt"), io.torch_load(b / "best.pt")
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], atol=1e-6, rtol=0)


def _test_probabilities(run_dir: Path) -> np.ndarray:
    return _probabilities(run_dir, "test")[[f"p_{p}" for p in PATTERNS]].to_numpy()


def test_same_predictions_with_0_1_2_loader_workers_and_after_kill_and_resume(tiny_data, tmp_path):
    # Dropout and augmentation on, several epochs: before each loader had its own generator,
    # every new loader iterator drew its workers' base seed from the global generator that
    # dropout uses (per epoch with 0 workers, once with persistent workers): |dp| up to 0.1.
    common = {"epochs": 3, "max_batches_per_epoch": 3, "batch_size": 2, "patience": 10, "augment": True}
    reference = None
    for workers in (0, 1, 2):
        params = tiny_data.params(tmp_path, run_name=f"workers{workers}", num_workers=workers, **common)
        done = _train_in_subprocess(params)
        assert done.returncode == 0, done.stderr
        probabilities = _test_probabilities(tmp_path / f"workers{workers}")
        if reference is None:
            reference = probabilities
        else:
            np.testing.assert_array_equal(probabilities, reference, err_msg=f"num_workers={workers}")

    params = tiny_data.params(tmp_path, run_name="workers2-killed", num_workers=2, **common)
    killed = _train_in_subprocess(params, kill_at="2:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = _train_in_subprocess({**params, "resume": True})
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_array_equal(_test_probabilities(tmp_path / "workers2-killed"), reference)


def test_kill_before_first_checkpoint_then_resume_starts_afresh(tiny_data, tmp_path):
    params = tiny_data.params(tmp_path, run_name="early", epochs=1, max_batches_per_epoch=2)
    killed = _train_in_subprocess(params, kill_at="1:1")
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "early" / "checkpoint.pt").exists()
    run_dir = run(**{**params, "resume": True})
    assert json.loads((run_dir / "config.json").read_text())["status"] == "finished"


class Payload:
    """A custom class: torch.save must pickle a reference to code to store it."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_with_pickled_code_is_refused_on_resume(tiny_data, tmp_path):
    params = tiny_data.params(tmp_path, run_name="tampered", epochs=1)
    run_dir = tmp_path / "tampered"
    run_dir.mkdir()
    torch.save({"format": 1, "model": Payload()}, run_dir / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*weights_only"):
        run(**{**params, "resume": True})
    with pytest.raises(CheckpointError, match="refusing to load"):
        io.torch_load(run_dir / "checkpoint.pt")


def test_checkpoint_holds_only_plain_data(tiny_data, tmp_path):
    run_dir = run(**tiny_data.params(tmp_path, epochs=1))
    # weights_only loading succeeds and yields the resume state
    state = io.torch_load(run_dir / "checkpoint.pt")
    assert state["epoch"] == 1 and state["training_done"] is True
    assert {"model", "optimizer", "scaler", "rng", "history", "best_val_loss", "bad_epochs"} <= set(state)
    assert isinstance(state["rng"]["torch"], torch.Tensor)
