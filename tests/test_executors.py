"""The run grid: sequential and Ray executors give the same runs; a killed Ray worker is retried
and its run resumes from its checkpoint.

One local Ray with 2 CPUs serves the whole module (starting Ray costs seconds); two tiny runs
(2 epochs of 2 batches) train side by side on it.
"""

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lusv.config import RunParams
from lusv.errors import ConfigError
from lusv.train.executors import _resources, fit_to_cluster, run_grid
from lusv.data.patterns import PATTERNS
from lusv.train import KILL_ENV

ROLES = ("val", "test", "temporal_test")
# Augmentation and dropout on: both must come from each run's own seed, not from its neighbour.
RUN = {"epochs": 2, "max_batches_per_epoch": 2, "batch_size": 2, "patience": 5, "augment": True}


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is part of the test extra: pip install -e .[test]")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    options = dict(
        num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=100 * 1024**2,
        log_to_driver=False, logging_level=logging.WARNING,
        # the workers import lusv from this checkout, like the test process
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}},
    )
    try:
        ray.init(**options)
    except Exception:  # Ray gives its node 30 s to start, which a machine under heavy load can miss
        ray.shutdown()
        ray.init(**options)
    yield ray
    ray.shutdown()


def _grid(data, out_dir: Path) -> list[dict]:
    return [data.params(out_dir, fold=fold, run_name=f"fold{fold}", **RUN) for fold in (0, 1)]


def _assert_same_runs(dirs_a: list[Path], dirs_b: list[Path]) -> None:
    columns = [f"p_{p}" for p in PATTERNS]
    for a, b in zip(dirs_a, dirs_b):
        assert a.name == b.name
        for role in ROLES:
            pa, pb = (pd.read_csv(d / f"predictions_{role}.csv", dtype={"clip_id": str}) for d in (a, b))
            assert pa["clip_id"].tolist() == pb["clip_id"].tolist()
            np.testing.assert_allclose(pa[columns].to_numpy(), pb[columns].to_numpy(), rtol=0, atol=1e-6)
        log_a, log_b = (pd.read_csv(d / "log.csv").drop(columns="seconds") for d in (a, b))
        np.testing.assert_allclose(log_a.to_numpy(), log_b.to_numpy(), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def sequential_runs(tiny_data, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("sequential")
    return run_grid(_grid(tiny_data, out_dir), executor="sequential")


def test_sequential_grid_trains_each_run_in_order(sequential_runs, tmp_path):
    assert [d.name for d in sequential_runs] == ["fold0", "fold1"]
    for run_dir in sequential_runs:
        assert len(pd.read_csv(run_dir / "log.csv")) == RUN["epochs"]
        assert pd.read_csv(run_dir / "predictions_test.csv")["model_fold"].nunique() == 1
    # the two folds differ: a grid that trained one run twice would pass the comparisons below
    test_a, test_b = (pd.read_csv(d / "predictions_test.csv") for d in sequential_runs)
    assert set(test_a["clip_id"]).isdisjoint(test_b["clip_id"])


def test_ray_grid_equals_sequential_grid(local_ray, sequential_runs, tiny_data, tmp_path):
    ray_runs = run_grid(_grid(tiny_data, tmp_path), executor="ray")
    assert ray_runs == [tmp_path / "fold0", tmp_path / "fold1"]
    _assert_same_runs(sequential_runs, ray_runs)
    assert not list(tmp_path.glob("*/.executor-attempt-*")), "attempt markers are removed after success"


def test_killed_ray_worker_is_retried_and_resumes(local_ray, sequential_runs, tiny_data, tmp_path, monkeypatch, caplog):
    marker = tmp_path / "killed-once"
    # the first run to reach batch 1 of epoch 2 SIGKILLs its Ray worker (after epoch 1's checkpoint)
    monkeypatch.setenv(KILL_ENV, f"2:1:{marker}")
    with caplog.at_level(logging.INFO, logger="lusv.train.executors"):
        ray_runs = run_grid(_grid(tiny_data, tmp_path / "runs"), executor="ray", max_retries=2)
    assert marker.is_file(), "the kill hook never fired"
    retried = [r.getMessage() for r in caplog.records if "after 2 attempts" in r.getMessage()]
    assert len(retried) == 1, [r.getMessage() for r in caplog.records]
    _assert_same_runs(sequential_runs, ray_runs)


def test_lusv_error_inside_a_ray_task_is_raised_as_itself(local_ray, tiny_data, tmp_path):
    broken = tiny_data.params(tmp_path, splits=str(tmp_path / "no-such-folds.csv"), **RUN)
    with pytest.raises(ConfigError, match=r"splits file .*no-such-folds.csv does not exist"):
        run_grid([broken], executor="ray", max_retries=0)


def test_ray_not_installed_is_one_clear_line(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError, match=r'needs Ray, which is not installed: pip install "lusv\[ray\]"'):
        run_grid([tiny_data.params(tmp_path)], executor="ray")


def test_grid_refuses_unknown_executor_and_shared_run_folders(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown executor 'dask'; choose one of sequential, ray"):
        run_grid([tiny_data.params(tmp_path)], executor="dask")
    twice = [tiny_data.params(tmp_path, fold=0, run_name="same"), tiny_data.params(tmp_path, fold=1, run_name="same")]
    with pytest.raises(ConfigError, match=r"several runs of the grid write to the same folder .*same"):
        run_grid(twice)
    assert not (tmp_path / "same").exists()
    with pytest.raises(ConfigError, match=r"max_retries=-1 \(must be >= 0\)"):
        run_grid([], executor="ray", max_retries=-1)


def test_resources_follow_the_device():
    cpu = RunParams(device="cpu", num_workers=2)
    assert _resources(cpu, None, cluster_gpus=4) == {"num_cpus": 3, "num_gpus": 0}
    assert _resources(cpu, 6, cluster_gpus=0) == {"num_cpus": 6, "num_gpus": 0}
    assert _resources(RunParams(device="auto", num_workers=0), None, cluster_gpus=1) == {"num_cpus": 1, "num_gpus": 1}
    assert _resources(RunParams(device="auto", num_workers=0), None, cluster_gpus=0)["num_gpus"] == 0
    with pytest.raises(ConfigError, match=r"asks for device='cuda:1' but the Ray cluster has no GPU"):
        _resources(RunParams(device="cuda:1"), None, cluster_gpus=0)


def test_study_trains_several_configurations_as_one_ray_grid(local_ray, tiny_data, tmp_path):
    from lusv import study

    prepared = study.Prepared(
        run_dir=tmp_path, labels_csv=tiny_data.labels_csv, folds_csv=tiny_data.folds_csv,
        temporal_csv=tiny_data.temporal_csv, cache_root=tiny_data.cache_dir, num_frames=8, image_size=32,
        num_folds=3, dataset="tiny", profile="quick",
    )
    configurations = {"luvnet_k3": {"model": "luvnet", "kernel_size": 3}, "no_temporal": {"model": "luvnet_no_temporal"}}
    run_dirs = study.train_configurations(prepared, configurations, folds=[0], executor="ray", **RUN)
    assert run_dirs == {"luvnet_k3": [tmp_path / "runs" / "luvnet_k3-fold0"], "no_temporal": [tmp_path / "runs" / "no_temporal-fold0"]}
    for key, (run_dir,) in run_dirs.items():
        saved = json.loads((run_dir / "config.json").read_text())
        assert saved["status"] == "finished"
        assert saved["params"]["model"] == configurations[key]["model"]
        oof = pd.read_csv(tmp_path / "oof" / f"{key}.test.csv", dtype={"clip_id": str})
        expected = pd.read_csv(run_dir / "predictions_test.csv", dtype={"clip_id": str})
        pd.testing.assert_frame_equal(oof, expected)
    assert json.loads((run_dirs["luvnet_k3"][0] / "config.json").read_text())["params"]["kernel_size"] == 3


# ----------------------------------------------------------------------------- issue 25.5: never wait forever


def _node(cpus, gpus=0, alive=True):
    return {"Alive": alive, "Resources": {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus else {})}}


def test_a_cpu_request_no_node_can_meet_is_lowered_in_one_line(caplog):
    requests = [{"num_cpus": 3, "num_gpus": 0}, {"num_cpus": 3, "num_gpus": 0}, {"num_cpus": 1, "num_gpus": 0}]
    with caplog.at_level(logging.WARNING, logger="lusv.train.executors"):
        fitted = fit_to_cluster(requests, ["a", "b", "c"], [_node(2), _node(8, alive=False)], asked_cpus=None)
    assert fitted == [{"num_cpus": 2, "num_gpus": 0}, {"num_cpus": 2, "num_gpus": 0}, {"num_cpus": 1, "num_gpus": 0}]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "2 run(s) (a, b) ask for 3 CPUs" in lines[0] and "asking for 2 instead" in lines[0]
    # a GPU run fits the node that has the GPU, with that node's CPUs
    assert fit_to_cluster([{"num_cpus": 5, "num_gpus": 1}], ["g"], [_node(16), _node(4, gpus=1)], None) == [
        {"num_cpus": 4, "num_gpus": 1}]


def test_requests_the_cluster_can_never_meet_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"cpus_per_run=4, but the largest Ray node offers 2 CPUs .*use cpus_per_run <= 2"):
        fit_to_cluster([{"num_cpus": 4, "num_gpus": 0}], ["a"], [_node(2)], asked_cpus=4)
    with pytest.raises(ConfigError, match=r"run g needs 1 GPU and at least 1 CPU on one node, .*\(16 CPU, 0 GPU\)"):
        fit_to_cluster([{"num_cpus": 1, "num_gpus": 1}], ["g"], [_node(16), _node(2, gpus=1, alive=False)], None)


def test_two_loader_workers_on_a_two_cpu_ray_do_not_wait_forever(local_ray, tiny_data, tmp_path, caplog):
    """The issue's case: 1 + 2 workers = 3 CPUs asked of a 2-CPU Ray; it used to wait silently."""
    import threading

    grid = [tiny_data.params(tmp_path, fold=0, run_name="workers2", **{**RUN, "epochs": 1, "num_workers": 2})]
    finished = []
    with caplog.at_level(logging.WARNING, logger="lusv.train.executors"):
        worker = threading.Thread(target=lambda: finished.extend(run_grid(grid, executor="ray", max_retries=0)),
                                  daemon=True)
        worker.start()
        worker.join(timeout=240)
    assert finished == [tmp_path / "workers2"], "the grid is still waiting for CPUs the cluster does not have"
    assert any("ask for 3 CPUs" in r.getMessage() and "asking for 2 instead" in r.getMessage() for r in caplog.records)
