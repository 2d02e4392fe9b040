"""Fit one model on one fold: masked BCE, Adam, early stopping, atomic checkpoints, resume.

``run(**params)`` trains the model named by the ``RunParams`` and returns its run directory::

    <out_dir>/<run_name>/            run_name default: <model>-<encoder>-T<T>-S<S>-fold<f>-seed<seed>
      config.json                    params, status, git sha, versions, device, weights_source, data sizes
      log.csv                        epoch, train_loss, val_loss, val_macro_auc, lr, seconds
      checkpoint.pt                  latest epoch: model, optimizer, scaler, counters, RNG states
      best.pt                        model state dict of the epoch with the lowest validation loss
      splits.csv (+ .json)           only when no splits file was given: the folds made for this run
      predictions_val.csv            clip_id, patient_id, fold, model_fold, p_<pattern>..., <pattern>... (labels);
                                     fold = the clip's fold, model_fold = this run's fold
      predictions_test.csv
      predictions_temporal_test.csv  only with a temporal split file
      predictions_held_out.csv       only with a held-out split file

Fold roles: test = fold f, validation = fold (f + 1) % K, training = the other folds; a patient
on two sides refuses to train (``LeakageError`` naming the patient, see ``lusv.data.folds``). Clips
of the temporal and held-out test sets must not be in the folds file at all.

Reproducibility and resume: everything random is seeded from ``seed`` (``randomness``). A run
killed at any point and restarted with ``resume=True`` continues from the last finished epoch
(``checkpoint``) and produces the same numbers as an uninterrupted run (CPU; GPU kernels may
differ in the last bits). A finished run restarted with ``resume=True`` is returned as is.

Multi-GPU: under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DDP and each process
trains on its ``DistributedSampler`` shard (``batch_size`` is per process); every process
evaluates the whole validation set (identical early-stopping decisions without communication)
and rank 0 alone writes files (``lusv.infra.devices.Distributed``).

The rooms of this package:

    runner.py      run(params) -> run_dir: set-up, the epochs with early stopping, predictions
    loop.py        train_one_epoch and evaluate (gradient accumulation, AMP, DDP no_sync; kill hook)
    checkpoint.py  TrainState, atomic checkpoint save/restore, the checks before resuming
    randomness.py  seeds, per-epoch generators, RNG state save/restore, deterministic kernels
    data.py        the fold's clips checked in the cache; train and evaluation loaders
    record.py      config.json's contents, whether a run finished (and why not), the predictions tables
    progress.py    live bars on a terminal, one line per epoch elsewhere
    executors.py   a grid of (configuration, fold) runs: one after another, or as Ray tasks
    plan.py        a study's plan before training: every run, notebook by notebook, and what it costs
    step_cost.py   one training step's seconds and memory: measured at the real shapes, or estimated

Models are built and used for prediction by ``lusv.inference`` (which does not import this
package); devices, mixed precision and torchrun ranks come from ``lusv.infra.devices``.
"""

from lusv.train.data import cut_into_windows, eval_loader
from lusv.train.executors import run_grid
from lusv.train.loop import KILL_ENV
from lusv.train.plan import study_plan, StudyPlan
from lusv.train.randomness import rng_state, seed_everything, set_rng_state
from lusv.train.record import predictions_table, unfinished_reason
from lusv.train.runner import run
from lusv.train.step_cost import estimated_memory_mib, model_figures

# What the rest of lusv uses of training; nothing outside this package imports its modules.
__all__ = ["KILL_ENV", "StudyPlan", "cut_into_windows", "estimated_memory_mib", "eval_loader", "model_figures",
           "predictions_table", "rng_state", "run", "run_grid", "seed_everything", "set_rng_state", "study_plan",
           "unfinished_reason"]
