"""(b) Pattern attention pooling: lusv's one-einsum ``AttentionPool`` vs a per-pattern loop.

The reference is the direct reading of the paper: for every clip, every pattern and every head,
score the clip's real frames against that head's query, softmax, and pool. Both produce the
pooled features (B, P, F) and the attention (B, P, H, T); the benchmark asserts they agree
(``torch.testing.assert_close``) before timing anything, at the paper's sizes (DenseNet-161
F = 2208, H = 8 heads, P = 4 patterns, T = 30) with clips of random lengths.

Run alone: ``python -m benchmarks.bench_attention [--quick] [--device cpu|cuda|auto]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from benchmarks.common import Row, bench_main, measure_interleaved
from lusv.models.attention import AttentionPool, lengths_to_mask


@dataclass(frozen=True)
class AttentionSize:
    feature_dim: int = 2208
    num_heads: int = 8
    num_patterns: int = 4
    num_frames: int = 30
    batch_sizes: tuple[int, ...] = (4, 16)
    warmup: int = 1
    repeats: int = 5


QUICK = AttentionSize(batch_sizes=(4,), warmup=1, repeats=3)


def loop_reference(pool: AttentionPool, h: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip, per pattern, per head pooling over the clip's first ``length`` frames: the same
    outputs as ``pool(h, mask)``, one small matrix-vector product at a time."""
    batch, frames, features = h.shape
    d = pool.head_dim
    patterns, heads = pool.queries.shape[:2]
    pooled = h.new_zeros(batch, patterns, features)
    attention = h.new_zeros(batch, patterns, heads, frames)
    for b, length in enumerate(lengths.tolist()):
        for p in range(patterns):
            for k in range(heads):
                head = h[b, :length, k * d:(k + 1) * d]  # (real frames, d)
                weights = torch.softmax(head @ pool.queries[p, k] / math.sqrt(d), dim=0)
                attention[b, p, k, :length] = weights
                pooled[b, p, k * d:(k + 1) * d] = weights @ head
    return pooled, attention


def make_inputs(size: AttentionSize, batch: int, device: torch.device, seed: int = 0):
    """Frame features h (B, T, F), clip lengths (B,) in [2, T] (one full clip) and their mask."""
    generator = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, size.num_frames, size.feature_dim, generator=generator).to(device)
    lengths = torch.randint(2, size.num_frames + 1, (batch,), generator=generator)
    lengths[0] = size.num_frames
    return h, lengths, lengths_to_mask(lengths, size.num_frames, batch, device)


def check_equal(pool: AttentionPool, h: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> float:
    """Assert the vectorised and loop outputs agree; return the largest absolute difference."""
    with torch.no_grad():
        fast_pooled, fast_attention = pool(h, mask)
        ref_pooled, ref_attention = loop_reference(pool, h, lengths)
    torch.testing.assert_close(fast_attention, ref_attention, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_pooled, ref_pooled, rtol=1e-5, atol=1e-5)
    return max(float((fast_pooled - ref_pooled).abs().max()), float((fast_attention - ref_attention).abs().max()))


def _no_grad(fn):
    def call():
        with torch.no_grad():
            return fn()
    return call


def _with_backward(fn, h: torch.Tensor, pool: AttentionPool):
    def call():
        pooled, attention = fn()
        (pooled.sum() + attention.sum()).backward()
        h.grad = None
        pool.zero_grad(set_to_none=True)
    return call


def run(size: AttentionSize, device: torch.device) -> list[Row]:
    """Forward (no grad) at each batch size, plus forward+backward at the largest; ms per call."""
    torch.manual_seed(0)
    pool = AttentionPool(size.feature_dim, num_heads=size.num_heads, num_queries=size.num_patterns).to(device)
    name = "(b) attention pool"
    rows: list[Row] = []
    cases = [("forward", batch) for batch in size.batch_sizes] + [("fwd+bwd", max(size.batch_sizes))]
    for mode, batch in cases:
        h, lengths, mask = make_inputs(size, batch, device, seed=batch)
        max_diff = check_equal(pool, h, lengths, mask)
        fns = {"loop": lambda: loop_reference(pool, h, lengths), "vectorised": lambda: pool(h, mask)}
        if mode == "forward":
            fns = {key: _no_grad(fn) for key, fn in fns.items()}
        else:  # training also runs the backward pass through the pooling
            h.requires_grad_(True)
            fns = {key: _with_backward(fn, h, pool) for key, fn in fns.items()}
        seconds, memory = measure_interleaved(fns, device, size.warmup, size.repeats)
        shape = f"B={batch} T={size.num_frames} F={size.feature_dim} H={size.num_heads} P={size.num_patterns}"
        loop_label = f"{mode} B={batch}: per clip/pattern/head loop"
        rows.append(Row(name, loop_label, seconds["loop"] * 1e3, "ms/call", memory["loop"].mib, memory["loop"].kind,
                        1.0, "self", shape, memory["loop"].rss_mib))
        rows.append(Row(name, f"{mode} B={batch}: AttentionPool (one einsum)", seconds["vectorised"] * 1e3, "ms/call",
                        memory["vectorised"].mib, memory["vectorised"].kind, seconds["loop"] / seconds["vectorised"],
                        loop_label, f"{shape}; allclose, max abs diff {max_diff:.1e}",
                        memory["vectorised"].rss_mib))
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main(__doc__, lambda quick, device: run(QUICK if quick else AttentionSize(), device), argv)


if __name__ == "__main__":
    main()
