"""LUV-Net (Lee et al., MIDL 2025) and its ablation without the temporal branch.

Shapes: B clips, T frames, F encoder features, H heads, P = 4 patterns.
LUV-Net = frame encoder -> [pattern attention pooling -> MLP P*F -> 4096 -> F]
                         + [Conv1d over time (K, 'same', no bias) -> BN -> ReLU -> mean over time]
          -> sum -> MLP F -> 512 -> P.
With DenseNet-161 and H = 8 this has 136,222,884 parameters at K = 13 and 97,220,772 at K = 5,
the published figures (see tests/test_models.py).

``forward(x, lengths)`` = ``forward_features(encoder.encode_clips(x), lengths)``: the heads can be
trained on frame features computed once by a frozen encoder (``lusv.features``).
"""

from __future__ import annotations

import torch
from torch import nn

from lusv.errors import ConfigError
from lusv.models.attention import AttentionPool, lengths_to_mask, masked_mean
from lusv.models.encoders import FrameEncoder
from lusv.models.registry import register_model
from lusv.patterns import NUM_PATTERNS


class PatternAttention(nn.Module):
    """Pattern-specific attention pooling followed by an MLP on the P*F concatenation.

    Shared by LUV-Net (MLP P*F -> 4096 -> F) and the no-temporal ablation (P*F -> 4096 -> P).
    """

    def __init__(self, feature_dim: int, num_heads: int, out_dim: int, hidden_dim: int = 4096, dropout: float = 0.0):
        super().__init__()
        self.pool = AttentionPool(feature_dim, num_heads=num_heads, num_queries=NUM_PATTERNS)
        self.mlp = nn.Sequential(
            nn.Linear(NUM_PATTERNS * feature_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, attention = self.pool(h, mask)  # (B, P, F), (B, P, H, T)
        return self.mlp(pooled.flatten(1)), attention


class TemporalConv(nn.Module):
    """1-D convolution over time on the frame features, BN, ReLU, mean over real frames."""

    def __init__(self, feature_dim: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ConfigError(f"kernel_size must be >= 1, got {kernel_size}")
        self.conv = nn.Conv1d(feature_dim, feature_dim, kernel_size, padding="same", bias=False)
        self.norm = nn.BatchNorm1d(feature_dim)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Zero the padded frames so that real outputs see the same zero padding as at a clip's
        # end and never depend on what padding frames contain. (BatchNorm batch statistics in
        # training do include padded positions; the paper used fixed-length clips.)
        h = h * mask.unsqueeze(-1).to(h.dtype)
        y = torch.relu(self.norm(self.conv(h.transpose(1, 2))))  # (B, F, T)
        return masked_mean(y.transpose(1, 2), mask)


@register_model("luvnet")
class LUVNet(nn.Module):
    """LUV-Net: ``forward(x (B,T,3,H,W), lengths (B,) | None) -> {"logits": (B,P), "attention": (B,P,H,T)}``."""

    def __init__(
        self, encoder: FrameEncoder, num_heads: int = 8, kernel_size: int = 13, dropout: float = 0.5
    ) -> None:
        super().__init__()
        features = encoder.feature_dim
        self.encoder = encoder
        self.spatial = PatternAttention(features, num_heads, out_dim=features)
        self.temporal = TemporalConv(features, kernel_size)
        self.classifier = nn.Sequential(
            nn.Linear(features, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(512, NUM_PATTERNS),
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.forward_features(self.encoder.encode_clips(x), lengths)

    def forward_features(self, h: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The heads alone, on frame features ``h`` (B, T, F) from ``encoder.encode_clips``."""
        mask = lengths_to_mask(lengths, h.shape[1], h.shape[0], h.device)
        spatial, attention = self.spatial(h, mask)
        fused = spatial + self.temporal(h, mask)
        return {"logits": self.classifier(fused), "attention": attention}


@register_model("luvnet_no_temporal")
class LUVNetNoTemporal(nn.Module):
    """Temporal ablation: pattern attention pooling and an MLP P*F -> 4096 -> P, nothing else."""

    def __init__(self, encoder: FrameEncoder, num_heads: int = 8, dropout: float = 0.5) -> None:
        super().__init__()
        self.encoder = encoder
        self.spatial = PatternAttention(encoder.feature_dim, num_heads, out_dim=NUM_PATTERNS, dropout=dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.forward_features(self.encoder.encode_clips(x), lengths)

    def forward_features(self, h: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The heads alone, on frame features ``h`` (B, T, F) from ``encoder.encode_clips``."""
        mask = lengths_to_mask(lengths, h.shape[1], h.shape[0], h.device)
        logits, attention = self.spatial(h, mask)
        return {"logits": logits, "attention": attention}
