"""scripts/paper_shape_check.sh keeps working: its --smoke run takes every Table 1 row through
prepare, two optimizer steps, predictions and notebook 06, reports each, and fails when a model fails."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lusv.models.roster import TABLE_1

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _environment() -> dict:
    # The active interpreter's environment, so that the script does not build ./.venv.
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "VIRTUAL_ENV": sys.prefix, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "OMP_NUM_THREADS": "1"}


def test_smoke_run_takes_every_table_1_row_through_the_study(tmp_path):
    done = subprocess.run(["bash", "scripts/paper_shape_check.sh", "--smoke", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=1200, env=_environment())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "paper_shape_check.csv")
    assert table["configuration"].tolist() == list(TABLE_1)
    assert (table["status"] == "ok").all()
    assert (table["s per step"] > 0).all() and (table["peak memory in use (GB)"] > 0).all()
    for key in TABLE_1:  # two optimizer steps, then the predictions of fold 0's validation and test folds
        run = tmp_path / "study" / "runs" / f"{key}-fold0"
        assert (run / "predictions_test.csv").is_file() and (run / "predictions_val.csv").is_file(), key
    assert (tmp_path / "study" / "tables" / "paper_paper_table1.csv").is_file(), "notebook 06's tables"
    assert "notebook 06 on the study: ok" in done.stdout
    assert (tmp_path / "paper_shape_check.md").read_text().startswith("| configuration | model | encoder |")


def test_a_model_whose_process_dies_is_a_failed_row_not_the_end_of_the_check(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_shape_check", REPO / "scripts" / "paper_shape_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    # No study there: the child process ends with an error and writes no row.
    row = check.check_in_own_process(tmp_path / "no-study", "usvn", True, tmp_path)
    assert row["configuration"] == "usvn"
    assert row["status"] == "FAILED: its process ended without a result, exit status 1"
