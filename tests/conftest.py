"""Shared pytest set-up: seeded, single-threaded tests; the tiny study; the ``gpu`` marker.

Tiny synthetic data only, never a download. ``tiny_data`` (the tiny study of ``tiny_study.py``,
prepared once per session) is the fixture of the training, resume and CLI tests. Tests marked
``@pytest.mark.gpu`` are skipped automatically where CUDA is not available.
"""

import os

import pytest

# Tests must be deterministic and light on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items):
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return  # no torch import (and no CUDA probe) for runs without GPU tests
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_tests:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from tiny_study import build_tiny_data

    return build_tiny_data(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(autouse=True)
def _seed_everything():
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run faster on one thread than with OpenMP's start-up and spinning, and the
    numbers of a test do not depend on the machine's core count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
