"""Everything random in a run comes from its seed, and can be saved and restored exactly.

* ``seed_everything`` seeds python, numpy and torch (weights init, dropout).
* ``derive_seed(seed, epoch, rank)`` gives the per-epoch generators their seeds: the training
  order of epoch e comes from (seed, e) (``DistributedSampler.set_epoch``) and its
  augmentations from (seed, e, rank), so restoring the epoch counter restores both.
* ``loader_generator`` keeps every DataLoader off the global torch generator.
* ``rng_state`` / ``set_rng_state`` save and restore the global generators in a checkpoint
  (tensors and numbers only, so it loads with ``weights_only=True``).
* ``make_deterministic`` picks deterministic kernels on the CPU.
"""

from __future__ import annotations

import random
from typing import Any, Mapping

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (seed, epoch, rank...), independent of PYTHONHASHSEED."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def loader_generator(seed: int, rank: int = 0) -> torch.Generator:
    """A DataLoader's own generator, seeded from the run seed.

    Without one, every new loader iterator draws its workers' base seed from the global torch
    generator that dropout also uses: once per process with persistent workers, once per epoch
    with none, so results depended on ``num_workers`` and on where a run was resumed. Our
    datasets draw nothing at random in the workers (augmentation runs in the main process), so
    this generator only keeps the loaders off the global stream.
    """
    return torch.Generator().manual_seed(derive_seed(seed, rank, 0x10ADE5))


def make_deterministic(device: torch.device) -> None:
    """Deterministic kernels on the CPU (what the CPU kernels lusv uses already are, so it
    costs nothing measurable there); on CUDA the fast non-deterministic kernels stay (see docs/reliability.md)."""
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


def rng_state() -> dict[str, Any]:
    """python/numpy/torch(/cuda) RNG states as tensors and numbers (weights_only-loadable)."""
    py_version, py_keys, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python_version": int(py_version),
        "python_keys": torch.tensor(py_keys, dtype=torch.int64),
        "python_gauss": py_gauss,
        "numpy_kind": str(np_kind),
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``rng_state`` saved (CUDA states only on a machine with as many GPUs)."""
    random.setstate((state["python_version"], tuple(int(k) for k in state["python_keys"].tolist()), state["python_gauss"]))
    np.random.set_state(
        (
            state["numpy_kind"],
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
