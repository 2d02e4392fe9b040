"""R(2+1)D comparator: torchvision's ``r2plus1d_18`` (layer sizes 2, 2, 2, 2) with a P-way head.

We use torchvision's implementation rather than a hand-written one (same family as the paper's
comparator, 31.3 M parameters with the 4-way head). It takes (B, 3, T, H, W), so clips are
permuted from the project's (B, T, 3, H, W). ``weights="imagenet"`` means "the pretrained weights
torchvision offers for this network", i.e. Kinetics-400, and only when that file is already in
the torch hub cache (never downloaded); the 400-way head is always replaced. ``lengths`` is
accepted and ignored: padded frames are fed as they are.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from lusv.models.encoders import apply_weights, hub_cache_file
from lusv.patterns import NUM_PATTERNS


class R2Plus1D(nn.Module):
    """``forward(x (B,T,3,H,W), lengths ignored) -> {"logits": (B,P)}``."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision  # noqa: PLC0415 - heavy import only when a model is built

        # Keep torchvision's module names (stem, layer1.., fc) so its checkpoints load as-is.
        self.backbone = torchvision.models.video.r2plus1d_18(weights=None)
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, NUM_PATTERNS)
        self.channels_last = False  # set by build_model(channels_last=True): NDHWC activations

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"expected clips shaped (B, T, 3, H, W), got {tuple(x.shape)}")
        volume = x.transpose(1, 2)  # (B, 3, T, H, W)
        if self.channels_last:
            volume = volume.contiguous(memory_format=torch.channels_last_3d)
        return {"logits": self.backbone(volume)}


def build_r2plus1d(weights: str | os.PathLike = "random", strict_weights: bool = False) -> R2Plus1D:
    """Build R(2+1)D-18 with a P-way head and apply the weights policy (Kinetics-400 for 'imagenet')."""
    import torchvision  # noqa: PLC0415

    model = R2Plus1D()
    url = torchvision.models.video.R2Plus1D_18_Weights.KINETICS400_V1.url
    model.weights_source = apply_weights(
        model.backbone,
        weights,
        strict=strict_weights,
        name="r2plus1d (Kinetics-400)",
        pretrained_file=hub_cache_file(url),
        ignore_prefixes=("fc.",) if os.fspath(weights) == "imagenet" else (),
    )
    return model
