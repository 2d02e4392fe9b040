"""The paper's frame-based comparator: a 2-D classifier on every frame, pooled over the clip.

Frame encoder (DenseNet-161 in the paper) -> dropout -> linear F -> P on every frame; the clip's
logit for each pattern is the mean (default) or the max of its real frames' logits. Pooling
logits rather than probabilities keeps the model's output a logit like the others' (the
sigmoid of a mean logit is the geometric-mean odds of the frames). Padded frames are ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from lusv.data.patterns import NUM_PATTERNS
from lusv.errors import ConfigError
from lusv.models.attention import lengths_to_mask, masked_mean
from lusv.models.encoders import FrameEncoder
from lusv.models.registry import register_model

FRAME_POOLINGS: tuple[str, ...] = ("mean", "max")


@register_model("frame_based", frame_pooling=FRAME_POOLINGS)
class FrameBased(nn.Module):
    """``forward(x (B,T,3,H,W), lengths) -> {"logits": (B,P), "frame_logits": (B,T,P)}``."""

    def __init__(self, encoder: FrameEncoder, frame_pooling: str = "mean", dropout: float = 0.5) -> None:
        super().__init__()
        if frame_pooling not in FRAME_POOLINGS:
            raise ConfigError(f"unknown frame_pooling {frame_pooling!r} for frame_based; valid: {', '.join(FRAME_POOLINGS)}")
        self.encoder = encoder
        self.pooling = frame_pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.feature_dim, NUM_PATTERNS)

    def forward_features(self, h: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The head on per-frame features h (B, T, F)."""
        mask = lengths_to_mask(lengths, h.shape[1], h.shape[0], h.device)
        frame_logits = self.head(self.dropout(h))  # (B, T, P)
        if self.pooling == "mean":
            logits = masked_mean(frame_logits, mask)
        else:
            logits = frame_logits.masked_fill(~mask.unsqueeze(-1), torch.finfo(frame_logits.dtype).min).amax(dim=1)
        return {"logits": logits, "frame_logits": frame_logits}

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.forward_features(self.encoder.encode_clips(x), lengths)
