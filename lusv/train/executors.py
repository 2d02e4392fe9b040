"""Run a grid of training runs (configuration x fold): one after another, or as Ray tasks.

``run_grid(runs, executor="sequential")`` trains each run (a ``RunParams`` or its dict) with
``lusv.train.run`` and returns their run directories in the order given. Both executors give
the same files and numbers: each run is seeded from its own parameters only, whatever else
runs beside it.

``executor="ray"`` sends each run to Ray as one task with its resources: one GPU when the run
trains on CUDA (``device="auto"`` counts as CUDA when the cluster has GPUs), else
``cpus_per_run`` CPUs (default: 1 + the run's loader workers; torch uses that many threads).
Before submitting, every task is checked against the cluster's live nodes (``fit_to_cluster``):
a default CPU count more than any node offers is lowered to what one node has, with one line;
an explicit ``cpus_per_run`` or a GPU no node offers is refused, since Ray would wait forever.
A task whose worker dies (killed, out of memory, node lost) is retried up to ``max_retries``
times, and a retry resumes from the run's last checkpoint; a run that raises a lusv error is
not retried. ``address=None`` uses the Ray already initialised in this process or starts a
local one; ``address="ray://head:10001"`` (or ``"auto"``) joins a cluster. On a cluster every
node needs lusv installed and the runs' data and ``out_dir`` on storage all nodes share.

The driver's ``LUSV_*`` environment variables (e.g. the crash test hook of ``lusv.train``) are
set in each task's process for the time of the task, as they would be in the sequential path.
Ray is an optional extra: ``pip install "lusv[ray]"``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

from lusv.config import RunParams
from lusv.errors import ConfigError, LusvError
from lusv.train.runner import run

logger = logging.getLogger(__name__)

EXECUTORS = ("sequential", "ray")
RAY_MISSING = 'executor="ray" needs Ray, which is not installed: pip install "lusv[ray]" (or pip install ray)'


def run_grid(
    runs: Iterable[RunParams | Mapping[str, Any]],
    executor: str = "sequential",
    *,
    address: Optional[str] = None,
    cpus_per_run: Optional[int] = None,
    max_retries: int = 3,
) -> list[Path]:
    """Train every run (see the module docstring); returns their run directories in order."""
    params = [run if isinstance(run, RunParams) else RunParams.from_dict(run) for run in runs]
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if cpus_per_run is not None and cpus_per_run < 1:
        raise ConfigError(f"cpus_per_run={cpus_per_run} (must be >= 1)")
    if max_retries < 0:
        raise ConfigError(f"max_retries={max_retries} (must be >= 0)")
    _refuse_shared_run_dirs(params)
    if executor == "sequential":
        return [Path(run(p)) for p in params]
    return _run_on_ray(params, address, cpus_per_run, max_retries)


def _run_dir(p: RunParams) -> Path:
    return Path(p.out_dir) / p.name


def _refuse_shared_run_dirs(params: list[RunParams]) -> None:
    """Two runs writing one folder would overwrite each other's checkpoints (side by side on Ray)."""
    shared = [str(d) for d, n in Counter(_run_dir(p).resolve() for p in params).items() if n > 1]
    if shared:
        raise ConfigError(f"several runs of the grid write to the same folder {', '.join(shared)}: give them distinct run_name values")


# ----------------------------------------------------------------------------- Ray


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def connect(address: Optional[str] = None):
    """The ``ray`` module, initialised: the Ray of this process if there is one, else ``address``
    (None = start a local Ray for this process; it stops when the process exits)."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports sent anywhere unasked
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    except Exception as exc:  # Ray raises bare Exception too (e.g. a node that did not start in time)
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ConfigError(f"could not start or reach {where}: {exc}") from None
    return ray


def _resources(p: RunParams, cpus_per_run: Optional[int], cluster_gpus: float) -> dict[str, Any]:
    cpus = cpus_per_run or 1 + p.num_workers
    wants_gpu = p.device.startswith("cuda") or (p.device == "auto" and cluster_gpus > 0)
    if not wants_gpu:
        return {"num_cpus": cpus, "num_gpus": 0}
    if cluster_gpus < 1:
        raise ConfigError(f"run {p.name} asks for device={p.device!r} but the Ray cluster has no GPU: use device='cpu' or 'auto'")
    return {"num_cpus": cpus, "num_gpus": 1}


def fit_to_cluster(requests: list[dict[str, Any]], names: list[str], nodes: list[Mapping[str, Any]],
                   asked_cpus: Optional[int]) -> list[dict[str, Any]]:
    """Each task's resources made to fit one live node of the cluster (``ray.nodes()``), else
    refused: Ray would leave a task that fits no node waiting forever, without a word.

    A CPU count the runs chose themselves (1 + loader workers) is lowered to the most CPUs one
    node offers (beside the GPU the task needs), with one warning line for all the runs it
    concerns; a ``cpus_per_run`` asked for explicitly, or a GPU no node has, is a ConfigError."""
    offers = [node.get("Resources", {}) for node in nodes if node.get("Alive", True)]
    fitted, lowered = [], {}
    for request, name in zip(requests, names):
        able = [offer for offer in offers if offer.get("GPU", 0) >= request["num_gpus"]]
        most = int(max((offer.get("CPU", 0) for offer in able), default=0))
        if not able or most < 1:
            need = f"{request['num_gpus']} GPU and " if request["num_gpus"] else ""
            raise ConfigError(f"run {name} needs {need}at least 1 CPU on one node, and no node of the Ray cluster "
                              f"offers that ({_describe(offers)}): it would wait forever")
        if request["num_cpus"] > most:
            if asked_cpus is not None:
                raise ConfigError(f"cpus_per_run={asked_cpus}, but the largest Ray node offers {most} CPUs "
                                  f"({_describe(offers)}): the runs would wait forever; use cpus_per_run <= {most}")
            lowered.setdefault((request["num_cpus"], most), []).append(name)
            request = {**request, "num_cpus": most}
        fitted.append(request)
    for (wanted, most), runs in lowered.items():
        logger.warning("%d run(s) (%s) ask for %d CPUs (1 + their loader workers), more than any Ray node offers: "
                       "asking for %d instead", len(runs), ", ".join(runs[:3]) + (" ..." if len(runs) > 3 else ""),
                       wanted, most)
    return fitted


def _describe(offers: list[Mapping[str, Any]]) -> str:
    if not offers:
        return "no live node"
    return "; ".join(f"{offer.get('CPU', 0):g} CPU, {offer.get('GPU', 0):g} GPU" for offer in offers[:4])


def _for_ray_task(p: RunParams, resources: Mapping[str, Any]) -> dict[str, Any]:
    """The run's parameters as its task sees them: Ray picks the task's GPU (CUDA_VISIBLE_DEVICES
    holds just that one), so "cuda:1" becomes "cuda"; device may change on resume."""
    values = p.to_dict()
    if resources["num_gpus"]:
        values["device"] = "cuda"
    return values


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in os.environ for the block: Ray reuses worker processes between tasks."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def train_task(values: dict[str, Any], env: Mapping[str, str], attempt_marker: str, threads: int) -> tuple[str, int]:
    """Body of one Ray task: train one run; returns its run dir and this attempt's number.

    ``attempt_marker`` (a file in the run dir) counts the attempts of this task: the first
    honours the run's own ``resume`` (False = start afresh); a later one knows that an earlier
    attempt died and continues from its checkpoint.
    """
    import torch


    marker = Path(attempt_marker)
    attempt = int(marker.read_text() or 0) + 1 if marker.is_file() else 1
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(attempt))
    if attempt > 1:
        logger.warning("%s: attempt %d after a lost worker: resuming from its checkpoint", marker.parent, attempt)
        values = {**values, "resume": True}
    torch.set_num_threads(threads)
    with _environment(env):
        run_dir = run(values)
    marker.unlink(missing_ok=True)
    return str(run_dir), attempt


def _run_on_ray(params: list[RunParams], address: Optional[str], cpus_per_run: Optional[int], max_retries: int) -> list[Path]:
    ray = connect(address)
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    remote = ray.remote(train_task)
    env = {key: value for key, value in os.environ.items() if key.startswith("LUSV_")}
    attempt = uuid.uuid4().hex  # one per grid call: a stale marker of an older call means nothing
    pending = {}
    requests = fit_to_cluster([_resources(p, cpus_per_run, cluster_gpus) for p in params], [p.name for p in params],
                              ray.nodes(), cpus_per_run)
    for index, (p, resources) in enumerate(zip(params, requests)):
        values = _for_ray_task(p, resources)
        marker = str((_run_dir(p) / f".executor-attempt-{attempt}").resolve())
        task = remote.options(**resources, max_retries=max_retries, retry_exceptions=False, name=f"lusv:{p.name}")
        pending[task.remote(values, env, marker, resources["num_cpus"])] = index
    logger.info("%d run(s) submitted to Ray (%s)", len(params), ray.cluster_resources())
    results: list[Optional[Path]] = [None] * len(params)
    failures: dict[int, BaseException] = {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done[0])
            try:
                run_dir, attempts = ray.get(done[0])
                results[index] = Path(run_dir)
                retried = f" after {attempts} attempts" if attempts > 1 else ""
                logger.info("run %s finished%s (%d of %d left)", params[index].name, retried, len(pending), len(params))
            except ray.exceptions.RayError as exc:
                failures[index] = _as_lusv_error(exc, params[index], max_retries)
                logger.error("run %s failed: %s", params[index].name, failures[index])
    except KeyboardInterrupt:  # stop the remaining runs too; their checkpoints let a rerun resume
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    if failures:
        first = min(failures)
        if len(failures) > 1:
            others = ", ".join(params[i].name for i in sorted(failures) if i != first)
            logger.error("%d of %d runs failed; besides %s also %s", len(failures), len(params), params[first].name, others)
        raise failures[first]
    return [path for path in results if path is not None]


def _as_lusv_error(exc: BaseException, p: RunParams, max_retries: int) -> BaseException:
    """The run's own lusv error (one line, its type kept), or a one-line account of a lost worker."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, LusvError):
        return cause
    if cause is not None:  # a bug or library error inside the run: keep its type and message
        return LusvError(f"run {p.name} failed on Ray: {type(cause).__name__}: {cause}")
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return LusvError(
        f"run {p.name}: its Ray worker was lost {max_retries + 1} time(s) ({type(exc).__name__}: {reason}); "
        f"its last checkpoint in {_run_dir(p)} is kept: rerun to resume"
    )
