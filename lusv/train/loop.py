"""The epoch loop as plain functions: ``train_one_epoch`` and ``evaluate``.

``train_one_epoch`` is one pass over this process's shard of the training clips: augment on
the device, forward under autocast (or, for a frozen encoder, the heads alone on cached
features: ``lusv.inference.forward_batch``), masked BCE, backward through the AMP scaler, and an
optimizer step at the end of every group of ``grad_accum`` micro-batches
(``accumulation_group``); under DDP the gradient all-reduce runs once per step
(``Distributed.no_sync``). ``evaluate`` predicts a whole role (every clip, on every rank) and
returns its probabilities and mean masked BCE.

Test hook: the environment variable ``LUSV_TEST_KILL_AFTER_BATCHES="E:N"`` (``KILL_ENV``) makes
the process SIGKILL itself after N training batches of epoch E (1-based), to test resuming
after a crash. ``"E:N:MARKER"`` kills only the first process to get there: it creates the file
MARKER first and does not fire while MARKER exists, so a retried task (lusv.train.executors) survives
its retry.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from lusv.config import RunParams
from lusv.data.model_input import ClipAugment
from lusv.inference import forward_batch, masked_bce, predict_batches
from lusv.infra.devices import Distributed, unwrap
from lusv.train.progress import batch_bar
from lusv.train.randomness import derive_seed

logger = logging.getLogger("lusv.train")

KILL_ENV = "LUSV_TEST_KILL_AFTER_BATCHES"


def kill_point() -> Optional[tuple[int, int]]:
    """(epoch, batch) after which the test hook kills the process, or None."""
    value = os.environ.get(KILL_ENV)
    if not value:
        return None
    epoch, batches = value.split(":", 2)[:2]
    return int(epoch), int(batches)


def _kill_now() -> None:
    """SIGKILL this process (test hook), unless a "E:N:MARKER" hook has fired once already."""
    marker = os.environ.get(KILL_ENV, "").split(":", 2)[2:]
    if marker:
        try:  # O_EXCL: of all processes that reach this point, exactly one creates the marker
            os.close(os.open(marker[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)


def accumulation_group(index: int, n_batches: int, grad_accum: int) -> tuple[int, bool]:
    """(size of the group of micro-batch ``index``, whether it ends that group and steps).

    Micro-batches form groups of ``grad_accum``; the last group of an epoch may be shorter.
    Each micro-batch's loss is divided by its group's size, so a step follows the mean
    gradient of its group whatever the group's size.
    """
    group_start = index - index % grad_accum
    group_size = min(grad_accum, n_batches - group_start)
    return group_size, index + 1 == group_start + group_size


def smoothed(labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Training targets pulled towards 1/2: y * (1 - s) + s / 2 (missing labels stay NaN)."""
    return labels if smoothing == 0 else labels * (1.0 - smoothing) + smoothing / 2


def train_one_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loader: DataLoader, *,
    epoch: int, p: RunParams, device: torch.device, amp_dtype: Optional[torch.dtype],
    augment: Optional[ClipAugment], dist: Distributed, live: bool,
) -> float:
    """Train on epoch ``epoch`` (0-based) of ``loader``; the mean masked BCE over every rank's clips."""
    model.train()
    loader.sampler.set_epoch(epoch)  # the sampler reshuffles from (seed, epoch): data order needs no saved state
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)  # cached features: each clip's augmented view, drawn from (seed, epoch)
    augment_generator = torch.Generator().manual_seed(derive_seed(p.seed, epoch, dist.rank))
    n_batches = len(loader)
    if p.max_batches_per_epoch is not None:
        n_batches = min(n_batches, p.max_batches_per_epoch)
    kill = kill_point()
    loss_sum = torch.zeros((), device=device)
    count = torch.zeros((), device=device, dtype=torch.int64)
    bar = batch_bar(n_batches, epoch, live)
    optimizer.zero_grad(set_to_none=True)
    step = 0
    for index, batch in enumerate(loader):
        if index >= n_batches:
            break
        group_size, step_now = accumulation_group(index, n_batches, p.grad_accum)
        labels = smoothed(batch["labels"].to(device, non_blocking=True), p.label_smoothing)
        with dist.no_sync(model, sync=step_now):
            out = forward_batch(model, batch, device, amp_dtype, p.channels_last, augment, augment_generator)
            batch_loss, batch_count = masked_bce(out["logits"], labels)
            loss = batch_loss / batch_count.clamp(min=1) / group_size
            scaler.scale(loss).backward()
        if step_now:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if p.log_every and step % p.log_every == 0:
                logger.info("epoch %d step %d: loss %.4f", epoch + 1, step, float(loss.detach()) * group_size)
        loss_sum += batch_loss.detach()
        count += batch_count
        bar.update(1)
        if kill is not None and kill == (epoch + 1, index + 1):
            _kill_now()  # test hook: simulate a crash mid-epoch
    bar.close()
    loss_sum, count = dist.sum_over_ranks(loss_sum, count)  # the logged loss covers every rank's shard
    return float(loss_sum / count.clamp(min=1))


def evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: Optional[torch.dtype], channels_last: bool
) -> tuple[np.ndarray, float]:
    """Probabilities (N, 4) of the loader's clips in order, and their mean masked BCE."""
    # The unwrapped module: evaluation needs no DDP communication (every rank sees all clips).
    probabilities, loss_sum, count, _ = predict_batches(unwrap(model), loader, device, amp_dtype, channels_last)
    return probabilities, float(loss_sum / count.clamp(min=1))
