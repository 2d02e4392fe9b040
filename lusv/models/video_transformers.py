"""MViT-B and Swin3D-B comparators: torchvision's video transformers with a P-way head.

Both are defined on 16 frames of 224 x 224 (their position embeddings and windows are sized for
it). A clip of another shape is fed to the published-size models as the paper's comparison
implies: 16 frames taken evenly over its real frames (a 30-frame window -> frames 0, 2, ..., 29
rounded) and each frame resized to 224 x 224 (bilinear, antialiased). ``lengths`` choose the
real frames; padding is never sampled.

Sizes: torchvision's ``mvit_v1_b`` has 36.31 M parameters with a 4-way head (the paper: 36.00 M);
``swin3d_b`` has 87.64 M (the paper's 58.72 M matches no torchvision Swin3D: its size lies
between swin3d_s, 49.8 M, and swin3d_b; we keep the B variant the paper names). They are trained
from scratch, as in the paper. ``width`` < 1 builds a small CPU variant (two stages, narrow,
fed ``num_frames`` frames spread over the clip's real frames, at the clip's own size: a clip
without padding as it is) so that the quick profile can train them in minutes; it is not the
published model and the study says so.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from lusv.data.patterns import NUM_PATTERNS
from lusv.errors import ConfigError
from lusv.models.attention import check_lengths
from lusv.models.encoders import apply_weights
from lusv.models.registry import register_model

PUBLISHED_FRAMES, PUBLISHED_SIZE = 16, 224


def sample_frames(x: torch.Tensor, lengths: torch.Tensor | None, num_frames: int) -> torch.Tensor:
    """``num_frames`` frames spread evenly over each clip's real frames: (B, T, C, H, W) -> (B, num_frames, C, H, W)."""
    batch, total = x.shape[:2]
    if lengths is None:
        lengths = torch.full((batch,), total, dtype=torch.int64, device=x.device)
    else:
        check_lengths(lengths, total, batch)
    steps = torch.linspace(0, 1, num_frames, device=x.device, dtype=torch.float64)
    index = torch.round(steps[None, :] * (lengths.to(x.device, torch.float64)[:, None] - 1)).long()  # (B, n)
    return torch.gather(x, 1, index[:, :, None, None, None].expand(-1, -1, *x.shape[2:]))


class VideoTransformer(nn.Module):
    """``forward(x (B,T,3,H,W), lengths) -> {"logits": (B,P)}`` around a torchvision video model
    that takes (B, 3, frames, size, size)."""

    def __init__(self, backbone: nn.Module, frames: int | None, size: int | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.frames, self.size = frames, size  # None: feed the clip's own frame count / size

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"expected clips shaped (B, T, 3, H, W), got {tuple(x.shape)}")
        if self.frames is not None:
            x = sample_frames(x, lengths, self.frames)
        if self.size is not None and x.shape[-1] != self.size:
            b, t = x.shape[:2]
            x = F.interpolate(x.flatten(0, 1), size=(self.size, self.size), mode="bilinear",
                              antialias=True, align_corners=False).unflatten(0, (b, t))
        return {"logits": self.backbone(x.transpose(1, 2))}


@register_model("mvit_b")
def build_mvit_b(num_frames: int | None = None, image_size: int | None = None, weights: str | os.PathLike = "imagenet",
                 strict_weights: bool = False, width: float = 1.0) -> VideoTransformer:
    """MViT-B (torchvision ``mvit_v1_b``) with a P-way head, trained from scratch; ``width`` < 1:
    a two-stage CPU variant sized for ``num_frames`` x ``image_size`` clips."""
    model = _mvit_b(width, num_frames, image_size)
    model.weights_source = apply_weights(model.backbone, weights, strict=strict_weights, name="mvit_b")
    return model


def _mvit_b(width: float, num_frames: int | None, image_size: int | None) -> VideoTransformer:
    from torchvision.models.video import mvit_v1_b  # noqa: PLC0415 - heavy import only when built
    from torchvision.models.video.mvit import MViT  # noqa: PLC0415

    if width >= 1.0:
        return VideoTransformer(mvit_v1_b(weights=None, num_classes=NUM_PATTERNS), PUBLISHED_FRAMES, PUBLISHED_SIZE)
    dim = max(8, round(96 * width)) // 4 * 4
    settings = {
        "num_heads": [1, 2], "input_channels": [dim, dim], "output_channels": [dim, 2 * dim],
        "kernel_q": [[], [3, 3, 3]], "kernel_kv": [[3, 3, 3], [3, 3, 3]],
        "stride_q": [[], [1, 2, 2]], "stride_kv": [[1, 4, 4], [1, 2, 2]],
    }
    from torchvision.models.video.mvit import MSBlockConfig  # noqa: PLC0415

    blocks = [MSBlockConfig(**{k: v[i] for k, v in settings.items()}) for i in range(2)]
    if num_frames is None or image_size is None:
        raise ConfigError("the small mvit_b (width < 1) needs num_frames and image_size (its position embedding depends on them)")
    frames = max(2, num_frames // 2 * 2)  # the 3-D patch embedding halves time
    net = MViT(spatial_size=(image_size, image_size), temporal_size=frames, block_setting=blocks,
               residual_pool=True, residual_with_cls_embed=False, rel_pos_embed=False, proj_after_attn=False,
               stochastic_depth_prob=0.0, num_classes=NUM_PATTERNS)
    return VideoTransformer(net, frames, image_size)


@register_model("swin_b")
def build_swin_b(num_frames: int | None = None, weights: str | os.PathLike = "imagenet", strict_weights: bool = False,
                 width: float = 1.0) -> VideoTransformer:
    """Swin3D-B (torchvision ``swin3d_b``) with a P-way head, trained from scratch; ``width`` < 1:
    a two-stage CPU variant fed ``num_frames`` frames spread over the clip's real frames (all of
    a clip's frames when ``num_frames`` is None, padding included) at the clip's own size."""
    model = _swin_b(width, num_frames)
    model.weights_source = apply_weights(model.backbone, weights, strict=strict_weights, name="swin_b")
    return model


def _swin_b(width: float, num_frames: int | None = None) -> VideoTransformer:
    from torchvision.models.video import swin3d_b  # noqa: PLC0415
    from torchvision.models.video.swin_transformer import SwinTransformer3d  # noqa: PLC0415

    if width >= 1.0:
        return VideoTransformer(swin3d_b(weights=None, num_classes=NUM_PATTERNS), PUBLISHED_FRAMES, PUBLISHED_SIZE)
    dim = max(8, round(128 * width)) // 4 * 4
    net = SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=dim, depths=[1, 1], num_heads=[1, 2],
                            window_size=[4, 4, 4], stochastic_depth_prob=0.0, num_classes=NUM_PATTERNS)
    return VideoTransformer(net, num_frames, None)  # frames sampled over the real ones: padding never seen
