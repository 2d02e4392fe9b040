"""Where the numbers are computed: the device, mixed precision, and this process's place in a launch.

One definition each, shared by training, inference and the benchmarks:

* ``resolve_device("auto")`` -> the process's GPU when CUDA is available, else the CPU.
* ``resolve_amp`` -> the autocast dtype a run's ``amp`` setting means on a device (mixed
  precision is CUDA-only); ``autocast`` -> the matching context (a no-op for full precision).
* ``Distributed`` / ``init_distributed`` -> world size and ranks under ``torchrun``
  (``WORLD_SIZE`` > 1) with the process group set up, and the three things DDP training needs
  from it: wrapping the model, skipping the gradient all-reduce between accumulated
  micro-batches, and summing a figure over the ranks. ``unwrap`` gives the model inside DDP.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import ContextManager, Optional

import torch
from torch import nn

from lusv.errors import ConfigError

# The amp warning is about a training run's settings: it goes where the other training messages go.
logger = logging.getLogger("lusv.train")


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto" -> the process's GPU when CUDA is available, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device={name!r} is not a torch device (use auto, cpu, cuda, cuda:1): {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here: use device='auto' or 'cpu'")
    return device


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype for ``amp`` on ``device``; None = full precision. AMP is CUDA-only."""
    if device.type != "cuda" or amp == "off":
        if amp in ("bf16", "fp16"):
            logger.warning("amp=%s ignored: mixed precision is only used on CUDA (device %s)", amp, device)
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """Autocast to ``dtype`` on ``device``; nothing for ``dtype`` None (full precision)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun launch (world_size 1 = plain single process)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model in DDP when distributed (one GPU per process on CUDA), else as it is."""
        if not self.enabled:
            return model
        return nn.parallel.DistributedDataParallel(model, device_ids=[self.local_rank] if device.type == "cuda" else None)

    def no_sync(self, model: nn.Module, sync: bool) -> ContextManager:
        """Skip DDP's gradient all-reduce for this backward unless ``sync`` (the micro-batch
        that ends an accumulation group): the gradients then add up locally and are averaged
        across ranks once per optimizer step."""
        return model.no_sync() if self.enabled and not sync else contextlib.nullcontext()

    def sum_over_ranks(self, total: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``total`` and ``count`` summed over every rank (as they are in a single process)."""
        if not self.enabled:
            return total, count
        totals = torch.stack([total, count.to(total.dtype)])
        torch.distributed.all_reduce(totals)
        return totals[0], totals[1]


def init_distributed() -> Distributed:
    """Read torchrun's environment; with ``WORLD_SIZE`` > 1 pick this process's GPU and join
    the process group (NCCL on CUDA, gloo on the CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(world_size, rank, local_rank)


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, out of its DDP wrapper if it has one."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
