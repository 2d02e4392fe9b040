"""Smoke tests of the benchmarks at toy sizes: each core function runs and returns real figures.

No timing assertions: speed goals are printed by ``python -m benchmarks.run_all``, not tested.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks/ package at the repo root

from benchmarks import bench_attention, bench_data_path, bench_frozen_features, bench_model_step, run_all  # noqa: E402
from benchmarks.common import PeakMemory  # noqa: E402
from lusv.models.attention import AttentionPool  # noqa: E402

CPU = torch.device("cpu")
TOY_DATA = bench_data_path.DataPathSize(n_clips=2, source_frames=5, num_frames=4, image_size=32,
                                        source_sizes=((32, 32), (48, 40)), batch_size=2, warmup=1, repeats=1)


def _positive(value):
    return value is not None and math.isfinite(value) and value > 0


def test_mjpg_clips_are_written_at_each_source_size(tmp_path):
    import av

    tables = bench_data_path.write_mjpg_clips(tmp_path, n_clips=2, num_frames=5, frame_size=32,
                                              source_sizes=((32, 32), (48, 40)))
    assert set(tables) == {(32, 32), (48, 40)}
    for (width, height), table in tables.items():
        assert list(table["clip_id"]) == ["clip000", "clip001"]
        with av.open(table["path"][0]) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "mjpeg"
            frames = [frame.to_ndarray(format="gray") for frame in container.decode(stream)]
        assert len(frames) == 5 and frames[0].shape == (height, width)


def test_baseline_clip_matches_the_lusv_model_input_shape(tmp_path):
    import random

    table = bench_data_path.write_mjpg_clips(tmp_path, n_clips=1, num_frames=6, frame_size=32)[(32, 32)]
    clip = bench_data_path.baseline_clip(table["path"][0], num_frames=4, image_size=24, rng=random.Random(0))
    assert clip.shape == (4, 3, 24, 24) and clip.dtype == torch.float32
    assert torch.isfinite(clip).all()


def test_baseline_augments_one_gray_channel_and_converts_only_the_kept_frames(tmp_path, monkeypatch):
    import random

    import av
    from lusv.data.patterns import IMAGENET_MEAN, IMAGENET_STD

    table = bench_data_path.write_mjpg_clips(tmp_path, n_clips=1, num_frames=9, frame_size=32)[(32, 32)]
    converted = []
    original = av.VideoFrame.to_ndarray

    def counting(frame, *args, **kwargs):
        converted.append(kwargs.get("format"))
        return original(frame, *args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "to_ndarray", counting)
    images = bench_data_path._decode_avi(table["path"][0], num_frames=4)
    assert converted == ["gray"] * 4  # 9 frames decoded, the 4 kept ones converted
    assert [image.mode for image in images] == ["L"] * 4
    clip = bench_data_path.baseline_clip(table["path"][0], num_frames=4, image_size=24, rng=random.Random(1))
    gray = clip * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-5) and torch.allclose(gray[:, 0], gray[:, 2], atol=1e-5)
    assert gray.min() >= -1e-5 and gray.max() <= 1 + 1e-5


def test_data_path_benchmark_reports_both_paths_and_their_ratio():
    rows = bench_data_path.run(TOY_DATA, CPU)
    assert len(rows) == 6  # baseline, lusv, cache build for each source size
    for base, lusv, build in zip(rows[0::3], rows[1::3], rows[2::3]):
        assert base.baseline == "self" and lusv.baseline == base.variant
        assert all(_positive(row.value) and row.unit == "clips/s" for row in (base, lusv, build))
        assert lusv.ratio == pytest.approx(lusv.value / base.value)


def test_attention_loop_reference_equals_attention_pool():
    size = bench_attention.AttentionSize(feature_dim=48, num_heads=4, num_patterns=3, num_frames=7)
    pool = AttentionPool(48, num_heads=4, num_queries=3)
    h, lengths, mask = bench_attention.make_inputs(size, batch=3, device=CPU)
    assert bench_attention.check_equal(pool, h, lengths, mask) < 1e-5
    assert int(lengths.min()) < 7  # some clips are padded, so the check covers masking
    # The check must fail when the two disagree: here the reference ignores the padding.
    with pytest.raises(AssertionError):
        bench_attention.check_equal(pool, h, torch.full_like(lengths, 7), mask)


def test_attention_benchmark_returns_timings_and_ratios():
    size = bench_attention.AttentionSize(feature_dim=48, num_heads=4, num_patterns=4, num_frames=6,
                                         batch_sizes=(2,), warmup=1, repeats=1)
    rows = bench_attention.run(size, CPU)
    assert len(rows) == 4  # forward and fwd+bwd, loop and vectorised each
    assert all(_positive(row.value) and row.unit == "ms/call" for row in rows)
    assert all(_positive(row.ratio) for row in rows[1::2])


def test_model_step_benchmark_returns_train_and_inference_figures():
    case = bench_model_step.ModelCase("tiny", "tiny", num_frames=4, image_size=32, batch_size=2, warmup=1, repeats=1)
    train, infer = bench_model_step.run(CPU, cases=[case])
    assert train.unit == "clips/s" and infer.unit == "ms/clip"
    assert _positive(train.value) and _positive(infer.value)
    assert train.mem_kind.startswith("CPU ") and infer.mem_kind.startswith("CPU ")
    # building the model and running a step allocates memory; a field left unset would be None or NaN
    assert _positive(train.peak_mem_mib) and _positive(infer.peak_mem_mib)
    for rise in (train.rss_rise_mib, infer.rss_rise_mib):
        assert rise is not None and math.isfinite(rise) and rise >= 0


def test_frozen_features_benchmark_compares_cached_heads_with_end_to_end():
    size = bench_frozen_features.FrozenSize(encoder="tiny", weights="random", n_clips=3, num_frames=4,
                                            image_size=16, batch_size=2, num_heads=4)
    base, cached, extract = bench_frozen_features.run(size, CPU)
    assert all(_positive(row.value) and row.unit == "clips/s" for row in (base, cached, extract))
    assert base.baseline == "self" and cached.baseline == extract.baseline == base.variant
    assert cached.ratio == pytest.approx(cached.value / base.value)
    assert extract.ratio == pytest.approx(extract.value / base.value)
    assert "tiny (random), 3 clips of 4 x 16 x 16, batch 2" in cached.note
    assert cached.peak_mem_mib is not None and base.mem_kind.startswith("CPU ")


def test_peak_memory_sees_a_large_cpu_allocation():
    with PeakMemory(CPU, interval=0.001) as peak:
        block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
        block += 1
        del block
    assert peak.mib > 32


def test_peak_memory_counts_buffers_kept_from_before():
    from lusv.data.datasets import keep_freed_cpu_buffers

    if not keep_freed_cpu_buffers():  # as run_all and training set it (process-wide, glibc only)
        pytest.skip("not glibc")
    block = torch.ones(64 * 1024 * 1024 // 4)
    del block  # 64 MiB freed but kept resident by the allocator setting
    with PeakMemory(CPU, interval=0.001) as peak:
        block = torch.ones(64 * 1024 * 1024 // 4)  # reuses the kept buffer
        block += 1
        del block
    assert peak.mib > 32  # bytes in use: kept free buffers do not count
    assert peak.rss_mib > 32  # resident set: without the trim on entry this read ~0


def test_fp32_on_cuda_is_true_fp32_and_tf32_settings_are_restored():
    cases = bench_model_step.default_cases(torch.device("cuda"), quick=False)
    assert cases[0].tf32 is False and "TF32 off" in cases[0].label and cases[0].amp is None
    assert any(case.tf32 and "TF32" in case.label for case in cases[1:])
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with bench_model_step._tf32(torch.device("cuda"), False):  # flags only: no GPU needed
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_run_all_writes_json_and_csv(tmp_path, monkeypatch, capsys):
    threads_set = []  # recorded instead of applied, so this pytest process keeps its threads
    monkeypatch.setattr(torch, "set_num_threads", threads_set.append)
    monkeypatch.setattr(bench_attention, "QUICK", bench_attention.AttentionSize(
        feature_dim=48, num_heads=4, num_patterns=4, num_frames=6, batch_sizes=(2,), warmup=1, repeats=1))
    out = tmp_path / "result.json"
    rows = run_all.main(["--quick", "--device", "cpu", "--only", "attention", "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["machine"]["device"] == "cpu" and record["machine"]["cpu_cores"] >= 1
    assert threads_set == [1] and record["settings"]["threads"] == 1  # CPU default: one thread
    assert len(record["rows"]) == len(rows) == 4
    assert out.with_suffix(".csv").read_text().count("\n") == 5  # header + 4 rows
    printed = capsys.readouterr().out
    assert "| (b) attention pool |" in printed and "Machine:" in printed
