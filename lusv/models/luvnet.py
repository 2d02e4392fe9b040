"""LUV-Net (Lee et al., MIDL 2025) and its ablation without the temporal branch.

Shapes: B clips, T frames, F encoder features, H heads, P = 4 patterns.
LUV-Net = frame encoder -> [pattern attention pooling -> MLP P*F -> 4096 -> F]
                         + [Conv1d over time (K, 'same', no bias) -> BN -> ReLU -> mean over time]
          -> sum -> MLP F -> 512 -> P.
With DenseNet-161 and H = 8 this has 136,222,884 parameters at K = 13 and 97,220,772 at K = 5,
the published figures (see tests/test_models.py).

``forward(x, lengths)`` = ``forward_features(encoder.encode_clips(x), lengths)``: the heads can be
trained on frame features computed once by a frozen encoder (``lusv.data.features``).
"""

from __future__ import annotations

import torch
from torch import nn

from lusv.data.patterns import NUM_PATTERNS
from lusv.errors import ConfigError
from lusv.models.attention import AttentionPool, lengths_to_mask, masked_mean
from lusv.models.encoders import FrameEncoder
from lusv.models.registry import register_model


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
        if h.device.type == "cpu":
            conv = same_conv_as_one_matmul(h, self.conv.weight)
        else:
            conv = self.conv(h.transpose(1, 2))  # cuDNN is fast at this shape
        y = torch.relu(self.norm(conv))  # (B, F, T)
        return masked_mean(y.transpose(1, 2), mask)


def same_conv_as_one_matmul(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Conv1d(padding="same", bias=False)`` of ``h`` (B, T, F) with ``weight`` (F_out, F, K) as one
    matrix product of the K-frame windows -> (B, F_out, T), equal to the convolution to float rounding.

    Why: on a CPU, oneDNN's convolution is slow at this shape (few frames, many channels): for
    LUV-Net's F = 1280, K = 13, T = 16, batch 16 the forward took 0.55 s and the weight gradient
    1.3 s, about 3/4 of a heads-only training step; the window matrix (B*T, K*F) times the weight
    is one GEMM forward and one for the weight gradient, 2-4x faster there (measured)."""
    batch, frames, features = h.shape
    kernel = weight.shape[-1]
    left = (kernel - 1) // 2  # PyTorch's "same": the extra frame of an even K goes after the clip
    padded = torch.nn.functional.pad(h, (0, 0, left, kernel - 1 - left))  # (B, T + K - 1, F)
    windows = padded.unfold(1, kernel, 1)  # (B, T, F, K), matching the weight's (F, K) order
    out = windows.reshape(batch * frames, features * kernel) @ weight.reshape(weight.shape[0], -1).t()
    return out.reshape(batch, frames, -1).transpose(1, 2)


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
