"""Tests that need a CUDA device (``pytest -m gpu``; skipped without one). ``scripts/gpu_check.sh``
runs them on a GPU; on a machine without one they are collected and skipped.

They cover what only a GPU exercises: bf16/fp16 autocast and channels_last in a real training
run, CUDA inference against the CPU, and the CUDA paths of the benchmarks.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks/ package at the repo root

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")
TINY_RUN = {"epochs": 2, "max_batches_per_epoch": 2, "batch_size": 2, "device": "cuda"}


@pytest.mark.parametrize(("amp", "channels_last"), [("bf16", False), ("fp16", False), ("bf16", True), ("off", True)])
def test_training_runs_on_cuda_with_each_precision(tiny_data, tmp_path, amp, channels_last):
    from lusv.train import run

    run_dir = run(tiny_data.params(tmp_path, amp=amp, channels_last=channels_last, **TINY_RUN))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "finished" and config["device"].startswith("cuda")
    assert config["amp_dtype"] == {"bf16": "bfloat16", "fp16": "float16", "off": "off"}[amp]
    probabilities = pd.read_csv(run_dir / "predictions_test.csv").filter(regex="^p_").to_numpy()
    assert probabilities.size and np.isfinite(probabilities).all()
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_cuda_inference_matches_the_cpu(tiny_data):
    from lusv.data.cache import ClipCache
    from lusv.models import build_model
    from lusv.inference import predict

    torch.manual_seed(0)
    model = build_model("luvnet", encoder="tiny", weights="random", num_frames=8, image_size=32, kernel_size=5).eval()
    clips, lengths = ClipCache(tiny_data.cache_dir, 8, 32).load_many(tiny_data.labels()["clip_id"][:6].tolist())
    on_cpu = predict(model, clips, lengths, device="cpu")
    on_cuda = predict(model, clips, lengths, device="cuda")
    # cuDNN convolutions run in TF32 by default: equal to ~1e-3, not to the last bit
    np.testing.assert_allclose(on_cuda, on_cpu, atol=2e-3)


def test_benchmark_cuda_paths_give_finite_figures():
    from benchmarks import bench_data_path, bench_model_step

    rows = bench_model_step.run(CUDA, quick=True)
    assert rows and all(math.isfinite(r.value) and r.value > 0 and r.peak_mem_mib > 0 for r in rows)
    assert any(r.ratio is not None and r.ratio > 0 for r in rows[2:])
    toy = bench_data_path.DataPathSize(n_clips=2, source_frames=5, num_frames=4, image_size=32,
                                       source_sizes=((32, 32),), batch_size=2, warmup=1, repeats=1)
    data_rows = bench_data_path.run(toy, CUDA)
    assert all(math.isfinite(r.value) and r.value > 0 for r in data_rows)
