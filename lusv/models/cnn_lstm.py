"""CNN-LSTM baseline: frame encoder -> LSTM over time (batch_first) -> last real frame's state -> linear.

Clips shorter than T are packed (``pack_padded_sequence``), so the LSTM stops at each clip's
last real frame and padded frames cannot influence the output.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from lusv.data.patterns import NUM_PATTERNS
from lusv.models.attention import check_lengths
from lusv.models.encoders import FrameEncoder
from lusv.models.registry import register_model


@register_model("cnn_lstm")
class CNNLSTM(nn.Module):
    """``forward(x (B,T,3,H,W), lengths (B,) | None) -> {"logits": (B,P)}``."""

    def __init__(self, encoder: FrameEncoder, hidden_size: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        self.encoder = encoder
        self.lstm = nn.LSTM(encoder.feature_dim, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, NUM_PATTERNS)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.forward_features(self.encoder.encode_clips(x), lengths)

    def forward_features(self, h: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The LSTM and head alone, on frame features ``h`` (B, T, F) from ``encoder.encode_clips``."""
        if lengths is None:
            _, (last, _) = self.lstm(h)
        else:
            check_lengths(lengths, h.shape[1], h.shape[0])
            # pack_padded_sequence wants lengths on the CPU; with packing, h_n is the state after
            # each clip's own last real frame.
            packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (last, _) = self.lstm(packed)
        return {"logits": self.head(self.dropout(last[-1]))}
