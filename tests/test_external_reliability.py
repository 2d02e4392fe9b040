"""Issue 25, part 2: external validation never mixes two runs' files and never trusts an unfinished run.

One tiny study (LUV-Net on frozen features, three folds, one epoch) is validated on 8 of its own
synthetic videos under new ids; a second model key is a copy of its fold runs, which the tests
then damage, mark unfinished or lock. Kills are real SIGKILLs of a `lusv external` subprocess.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lusv.errors import CheckpointError, ConfigError, RunLockedError
from lusv.evaluation.external import external_validation, fold_models
from lusv.infra import runlock
from lusv.infra.folders import recover_folder, replaced_folder

from tiny_study import copy_of_tiny_study

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    prepared = copy_of_tiny_study(tiny_data, tmp_path_factory.mktemp("ext_rel") / "study",
                                  {"luvnet": {"model": "luvnet", "train_encoder": False, "feature_views": 1}})
    labels = pd.read_csv(tiny_data.source_dir / "labels.csv").iloc[:8]
    csv = prepared.run_dir.parent / "other" / "labels.csv"
    csv.parent.mkdir()
    pd.DataFrame({"clip_id": [f"EXT-{i}" for i in range(8)],
                  "path": [str(tiny_data.source_dir / p) for p in labels["path"]],
                  "patient_id": [f"EXT-P{i // 2}" for i in range(8)],
                  "a_lines": [0, 1] * 4, "b_lines": [1, 0] * 4, "consolidation": [""] * 8,
                  "pleural_effusion": [""] * 8}).to_csv(csv, index=False)
    return prepared, csv


@pytest.fixture
def study_copy(trained, tmp_path):
    """A fresh copy of the study with a second model, ``copy``, whose fold runs are luvnet's."""
    prepared, csv = trained
    root = tmp_path / "study"
    shutil.copytree(prepared.run_dir, root)
    for fold in range(3):
        shutil.copytree(root / "runs" / f"luvnet-fold{fold}", root / "runs" / f"copy-fold{fold}")
    shutil.copyfile(root / "oof" / "luvnet.val.csv", root / "oof" / "copy.val.csv")  # newer than the runs
    return root, csv, tmp_path / "cache"


def _validate(root, csv, cache, **kwargs):
    return external_validation(root, data="folder", data_path=csv, cache_root=cache, **kwargs)


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _set_status(run_dir: Path, status: str) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "status": status}))


def test_a_failing_rerun_leaves_the_previous_result_whole(study_copy):
    root, csv, cache = study_copy
    first = _validate(root, csv, cache)
    before = _snapshot(first.out_dir)
    assert {"external_auc.csv", "predictions_copy.csv", "predictions_luvnet.csv", "ingest_report.csv"} <= set(before)
    time.sleep(0.01)
    (root / "runs" / "copy-fold1" / "best.pt").write_bytes(b"not a checkpoint")  # damaged after the first result
    with pytest.raises(CheckpointError, match=r"copy-fold1/best\.pt"):
        _validate(root, csv, cache)
    assert _snapshot(first.out_dir) == before  # not one file rewritten, added or removed
    assert sorted(p.name for p in first.out_dir.parent.iterdir()) == sorted([first.out_dir.name,
                                                                              f".{first.out_dir.name}.lock"])


KILL_DURING_PREDICTION = """
import os, signal, sys
import lusv.evaluation.external as external
real = external.predict_with_folds
calls = []
def predict_then_die(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # after the first model's predictions are written
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
external.predict_with_folds = predict_then_die
from lusv.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_run_followed_by_a_rerun_leaves_one_consistent_result(study_copy):
    root, csv, cache = study_copy
    args = ["external", "--study", str(root), "--data-path", str(csv), "--cache-dir", str(cache)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_PREDICTION, *args], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    external = root / "external"
    published = [p.name for p in external.iterdir() if not p.name.startswith(".")]
    assert published == []  # nothing published by the killed run: its work sits in a staging folder
    assert any(".partial-" in p.name for p in external.iterdir())

    result = _validate(root, csv, cache)  # the rerun
    names = sorted(p.name for p in external.iterdir())
    assert names == sorted([result.out_dir.name, f".{result.out_dir.name}.lock"])  # the killed run's leftovers are gone
    recorded = json.loads((result.out_dir / "external.json").read_text())
    table = pd.read_csv(result.out_dir / "external_auc.csv")
    assert sorted(recorded["models"]) == sorted(table["model"].unique()) == ["copy", "luvnet"]
    assert sorted(p.name for p in result.out_dir.glob("predictions_*.csv")) == ["predictions_copy.csv",
                                                                                  "predictions_luvnet.csv"]


@pytest.mark.parametrize("damage, reason", [
    (lambda d: _set_status(d, "running"), r'fold 2 interrupted \(config.json says "running" but no process holds'),
    (lambda d: _set_status(d, "failed"), r"fold 2 failed"),
    (lambda d: shutil.rmtree(d), r"fold 2 no run folder"),
    (lambda d: (d / "best.pt").unlink(), r"fold 2 finished, but best\.pt is missing"),
])
def test_an_unfinished_fold_run_is_left_out_and_named(study_copy, caplog, damage, reason):
    root, csv, cache = study_copy
    damage(root / "runs" / "copy-fold2")
    with caplog.at_level("WARNING", logger="lusv"):
        result = _validate(root, csv, cache)
    assert sorted(result.predictions) == ["luvnet"]
    warned = [r.getMessage() for r in caplog.records if "leaves out copy" in r.getMessage()]
    assert len(warned) == 1 and re.search(reason, warned[0]), warned
    assert "copy" in json.loads((result.out_dir / "external.json").read_text())["left_out"]
    with pytest.raises(ConfigError, match=rf"no finished fold models for \['copy'\] \(copy: {reason}"):
        _validate(root, csv, cache, keys=["copy"])


def test_a_run_still_training_is_named_as_such(study_copy):
    root, csv, cache = study_copy
    _set_status(root / "runs" / "copy-fold0", "running")
    with runlock.run_lock(root / "runs" / "copy-fold0"):
        assert fold_models(root, 3)[1] == {"copy": "fold 0 still running"}


def test_thresholds_of_a_fold_retrained_since_are_not_used(study_copy):
    root, _, _ = study_copy
    retrained = root / "runs" / "copy-fold1" / "predictions_val.csv"
    table = pd.read_csv(retrained)
    table["p_a_lines"] = 1 - table["p_a_lines"]  # fold 1 trained again after oof/ was written
    table.to_csv(retrained, index=False)
    available, left_out = fold_models(root, 3)
    assert list(available) == ["luvnet"]
    assert left_out["copy"] == ("oof/copy.val.csv no longer matches its runs: its fold runs' predictions differ from "
                                "it (a fold was retrained since it was written)")


def test_a_second_writer_of_the_same_result_is_refused(study_copy):
    root, csv, cache = study_copy
    out = root / "external" / "mine"
    with runlock.folder_lock(out):
        with pytest.raises(RunLockedError, match=rf"result folder {out} is in use by process {os.getpid()}"):
            _validate(root, csv, cache, out_dir=out)
    assert not out.exists()


def test_a_kill_between_the_two_renames_restores_the_previous_result(tmp_path):
    target = tmp_path / "result"
    with replaced_folder(target) as staging:
        (staging / "a.csv").write_text("first")
    os.rename(target, tmp_path / ".result.old-deadbeef")  # killed after setting the old result aside...
    (tmp_path / ".result.partial-deadbeef").mkdir()       # ...before the new one took its place
    recover_folder(target)
    assert (target / "a.csv").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]
    with pytest.raises(ZeroDivisionError), replaced_folder(target) as staging:
        (staging / "a.csv").write_text("second")
        1 / 0
    assert (target / "a.csv").read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["result"]


# ----------------------------------------------------------------------------- the study's own oof/ files


def test_out_of_fold_files_are_refused_once_their_runs_changed_or_stopped(study_copy):
    from lusv.errors import LusvError
    from lusv.evaluation.out_of_fold import fold_model_predictions, load_out_of_fold

    root, _, _ = study_copy
    assert sorted(load_out_of_fold(root, "test")) == ["luvnet"]  # as written: accepted
    test = root / "runs" / "luvnet-fold0" / "predictions_test.csv"
    table = pd.read_csv(test)
    table["p_b_lines"] = 0.5  # fold 0 retrained, oof/ not rewritten
    table.to_csv(test, index=False)
    with pytest.raises(LusvError, match=r"oof/luvnet\.test\.csv cannot be used: its fold runs' predictions differ"):
        load_out_of_fold(root, "test")
    _set_status(root / "runs" / "luvnet-fold2", "running")  # killed while training again
    with pytest.raises(LusvError, match=r"its fold run luvnet-fold2 interrupted"):
        load_out_of_fold(root, "val")
    with pytest.raises(LusvError, match=r"cannot use the fold models of luvnet: luvnet-fold2 interrupted"):
        fold_model_predictions(root, "temporal_test", ["luvnet"])


def test_a_run_folder_of_an_earlier_preparation_with_more_folds_is_not_mixed_in(study_copy):
    from lusv.evaluation.out_of_fold import fold_model_predictions

    root, _, _ = study_copy
    shutil.copytree(root / "runs" / "luvnet-fold0", root / "runs" / "luvnet-fold3")  # the study has 3 folds
    stacked = fold_model_predictions(root, "temporal_test", ["luvnet"])["luvnet"]
    assert sorted(stacked["model_fold"].unique()) == [0, 1, 2]
