"""USVN baseline: one frame encoder, one pooling over time shared by all patterns, a linear head.

With ``pooling="attention"`` (default) the pooling is the multi-head learned-query attention of
LUV-Net with a single query set (26,483,044 parameters with DenseNet-161, H = 8); ``"mean"`` and
``"max"`` pool over the real frames of each clip and have no attention output.
"""

from __future__ import annotations

import torch
from torch import nn

from lusv.data.patterns import NUM_PATTERNS
from lusv.errors import ConfigError
from lusv.models.attention import AttentionPool, lengths_to_mask, masked_mean
from lusv.models.encoders import FrameEncoder
from lusv.models.registry import register_model

POOLINGS: tuple[str, ...] = ("attention", "mean", "max")


@register_model("usvn", pooling=POOLINGS)
class USVN(nn.Module):
    """``forward(x (B,T,3,H,W), lengths) -> {"logits": (B,P)[, "attention": (B,1,H,T)]}``."""

    def __init__(self, encoder: FrameEncoder, pooling: str = "attention", num_heads: int = 8, dropout: float = 0.5):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {pooling!r} for usvn; valid: {', '.join(POOLINGS)}")
        self.encoder = encoder
        self.pooling = pooling
        self.pool = AttentionPool(encoder.feature_dim, num_heads=num_heads, num_queries=1) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.feature_dim, NUM_PATTERNS)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.forward_features(self.encoder.encode_clips(x), lengths)

    def forward_features(self, h: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The pooling and head alone, on frame features ``h`` (B, T, F) from ``encoder.encode_clips``."""
        mask = lengths_to_mask(lengths, h.shape[1], h.shape[0], h.device)
        attention = None
        if self.pool is not None:
            pooled, attention = self.pool(h, mask)
            pooled = pooled[:, 0]
        elif self.pooling == "mean":
            pooled = masked_mean(h, mask)
        else:
            pooled = h.masked_fill(~mask.unsqueeze(-1), torch.finfo(h.dtype).min).amax(dim=1)
        out = {"logits": self.head(self.dropout(pooled))}
        if attention is not None:
            out["attention"] = attention
        return out
