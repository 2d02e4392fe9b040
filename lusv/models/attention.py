"""Multi-head attention pooling over frames with learned queries (LUV-Net step 2, USVN).

For query set p and head k, frame t scores ``<h[t, k], q[p, k]> / sqrt(F/H)`` where h[t, k] is
the k-th of H equal slices of the frame's F-vector; a softmax over the clip's real frames gives
the weights, and the pooled vector is the weighted sum of h[:, k]. LUV-Net uses one query set
per pattern (P = 4), USVN a single shared set (P = 1). Everything is one einsum over clips,
query sets and heads.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lusv.errors import ConfigError


def check_lengths(lengths: torch.Tensor, num_frames: int, batch_size: int) -> None:
    """Raise ``ValueError`` unless ``lengths`` is (B,) with every value in [1, T].

    A clip without real frames is a data bug upstream; silently pooling nothing would hide it.
    """
    if lengths.shape != (batch_size,):
        raise ValueError(f"lengths must have shape ({batch_size},), got {tuple(lengths.shape)}")
    if bool(((lengths < 1) | (lengths > num_frames)).any()):
        raise ValueError(f"lengths must lie in [1, {num_frames}] (the clip length T), got {lengths.tolist()}")


def lengths_to_mask(lengths: torch.Tensor | None, num_frames: int, batch_size: int, device) -> torch.Tensor:
    """Boolean (B, T) mask, True on real frames; ``None`` means every frame is real."""
    if lengths is None:
        return torch.ones(batch_size, num_frames, dtype=torch.bool, device=device)
    check_lengths(lengths, num_frames, batch_size)
    return torch.arange(num_frames, device=device) < lengths.to(device)[:, None]


def masked_mean(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, T, F) features over the real frames of each clip -> (B, F)."""
    weights = mask.to(features.dtype).unsqueeze(-1)
    return (features * weights).sum(1) / weights.sum(1).clamp(min=1)


class AttentionPool(nn.Module):
    """Learned-query multi-head attention pooling over time.

    ``forward(h (B, T, F), mask (B, T) bool or None) -> (pooled (B, P, F), attention (B, P, H, T))``.
    Attention is float32, sums to 1 over each clip's real frames and is exactly 0 on padding;
    a clip with no real frame gets zero attention and a zero pooled vector (never NaN).
    """

    def __init__(self, feature_dim: int, num_heads: int = 8, num_queries: int = 1) -> None:
        super().__init__()
        if num_heads < 1 or feature_dim % num_heads:
            raise ConfigError(
                f"num_heads={num_heads} must divide the encoder feature size {feature_dim} "
                "(each head attends over an equal slice of the features)"
            )
        self.num_heads = num_heads
        self.head_dim = feature_dim // num_heads
        # One query per (query set, head): P * F parameters in all. Normal init as in the paper.
        self.queries = nn.Parameter(torch.randn(num_queries, num_heads, self.head_dim))

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        batch, frames, features = h.shape
        heads = h.reshape(batch, frames, self.num_heads, self.head_dim)
        scores = torch.einsum("bthd,phd->bpht", heads, self.queries.to(h.dtype)) / math.sqrt(self.head_dim)
        # Softmax in float32 (AMP-safe); padded frames get the most negative finite value rather
        # than -inf so that a clip with no real frame yields a finite (then zeroed) row, not NaN.
        scores = scores.float()
        if mask is not None:
            real = mask[:, None, None, :]
            scores = scores.masked_fill(~real, torch.finfo(scores.dtype).min)
        attention = scores.softmax(dim=-1)
        if mask is not None:
            attention = attention * real  # exact zeros on padding, also for all-padding clips
        pooled = torch.einsum("bpht,bthd->bphd", attention.to(h.dtype), heads)
        return pooled.reshape(batch, -1, features), attention
