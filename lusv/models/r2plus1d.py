"""R(2+1)D comparator: torchvision's ``r2plus1d_18`` (layer sizes 2, 2, 2, 2) with a P-way head.

We use torchvision's implementation rather than a hand-written one (same family as the paper's
comparator, 31.3 M parameters with the 4-way head). It takes (B, 3, T, H, W), so clips are
permuted from the project's (B, T, 3, H, W). ``weights="imagenet"`` means "the pretrained weights
torchvision offers for this network", i.e. Kinetics-400, and only when that file is already in
the torch hub cache (never downloaded); the 400-way head is always replaced. ``lengths`` is
accepted and ignored: padded frames are fed as they are.

``width`` scales the channel counts (1.0 = r2plus1d_18 as torchvision builds it); the quick CPU
profile uses a narrow network so that the comparison runs in minutes.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from lusv.data.patterns import NUM_PATTERNS
from lusv.models.encoders import apply_weights, hub_cache_file
from lusv.models.registry import register_model


def _narrow(net: nn.Module, width: float, layers: tuple[int, ...] = (2, 2, 2, 2)) -> None:
    """Rebuild torchvision's stem and four stages with ``width`` times the channels, in place.

    torchvision hard-codes the widths (45/64 in the stem, 64..512 in the stages), so the stem is
    restated here and the stages are remade with torchvision's own ``_make_layer`` and blocks.
    """
    from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D  # noqa: PLC0415

    planes = [max(4, round(p * width)) for p in (64, 128, 256, 512)]
    stem_mid = max(4, round(45 * width))
    net.stem = nn.Sequential(
        nn.Conv3d(3, stem_mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(stem_mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(stem_mid, planes[0], kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(planes[0]),
        nn.ReLU(inplace=True),
    )
    net.inplanes = planes[0]
    for index, (stage_planes, stride) in enumerate(zip(planes, (1, 2, 2, 2)), start=1):
        setattr(net, f"layer{index}", net._make_layer(BasicBlock, Conv2Plus1D, stage_planes, layers[index - 1], stride=stride))
    net.fc = nn.Linear(planes[-1], NUM_PATTERNS)


class R2Plus1D(nn.Module):
    """``forward(x (B,T,3,H,W), lengths ignored) -> {"logits": (B,P)}``."""

    def __init__(self, width: float = 1.0, layers: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        import torchvision  # noqa: PLC0415 - heavy import only when a model is built
        from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet  # noqa: PLC0415

        # Keep torchvision's module names (stem, layer1.., fc) so its checkpoints load as-is.
        if tuple(layers) == (2, 2, 2, 2):
            self.backbone = torchvision.models.video.r2plus1d_18(weights=None)
        else:  # torchvision's own blocks, stem and (2+1)-D convolutions, deeper stages
            self.backbone = VideoResNet(BasicBlock, [Conv2Plus1D] * 4, list(layers), R2Plus1dStem)
        if width != 1.0:
            _narrow(self.backbone, width, tuple(layers))
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, NUM_PATTERNS)
        self.channels_last = False  # set by build_model(channels_last=True): NDHWC activations

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"expected clips shaped (B, T, 3, H, W), got {tuple(x.shape)}")
        volume = x.transpose(1, 2)  # (B, 3, T, H, W)
        if self.channels_last:
            volume = volume.contiguous(memory_format=torch.channels_last_3d)
        return {"logits": self.backbone(volume)}


@register_model("r2plus1d")
def build_r2plus1d(
    weights: str | os.PathLike = "imagenet", strict_weights: bool = False, width: float = 1.0
) -> R2Plus1D:
    """Build R(2+1)D-18 with a P-way head and apply the weights policy (Kinetics-400 for 'imagenet')."""
    import torchvision  # noqa: PLC0415

    model = R2Plus1D(width=width)
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


@register_model("r2plus1d_34")
def build_r2plus1d_34(
    weights: str | os.PathLike = "imagenet", strict_weights: bool = False, width: float = 1.0
) -> R2Plus1D:
    """R(2+1)D-34, the paper's Table 4 comparator: layer sizes (3, 4, 6, 3) with torchvision's
    blocks (61.63 M parameters with the 4-way head; the paper reports 63.51 M, a difference its
    text does not explain). No pretrained weights are known: trained from scratch, as in the paper."""
    model = R2Plus1D(width=width, layers=(3, 4, 6, 3))
    model.weights_source = apply_weights(model.backbone, weights, strict=strict_weights, name="r2plus1d_34")
    return model
