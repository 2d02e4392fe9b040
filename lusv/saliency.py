"""Where in the image: Grad-CAM maps of one pattern's logit on the frame encoder's last feature map.

The paper shows, beside its attention-over-time figure, the image regions the model attends to
on the most-attended frames. Attention pooling only says *which frames*; this room answers
*where in those frames*, with Grad-CAM (Selvaraju et al. 2017): the encoder's last spatial
feature map A (per frame, C x h x w), the gradient of the pattern's logit with respect to it,
channel weights = the gradient averaged over the map, map = ReLU(sum_c weight_c A_c), upsampled
to the frame and scaled to [0, 1] per frame (a frame whose map is all zero stays zero).

The whole clip goes through the model (the pattern's logit depends on every frame through
attention and the temporal branch); the maps of the chosen frames are returned.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lusv.errors import ConfigError


def _last_spatial_activation(encoder: nn.Module):
    """Forward hooks that keep the output of the last module (in execution order) giving a
    4-D map larger than 1 x 1: the encoder's last feature map, whatever the backbone."""
    kept: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1:
            kept["map"] = output

    leaves = [m for m in encoder.modules() if not list(m.children())]
    return kept, [m.register_forward_hook(keep) for m in leaves]


def grad_cam(model: nn.Module, clip: torch.Tensor, pattern: int, frames: Sequence[int],
             length: int | None = None) -> np.ndarray:
    """Grad-CAM maps (len(frames), S, S) in [0, 1] of logit ``pattern`` for one clip.

    ``clip`` is the model input of one clip, float (T, 3, S, S) (``lusv.datasets.to_model_input``
    of the cached uint8 clip); ``length`` its real frames. Models without a 2-D frame encoder
    (C3D, R(2+1)D, the video transformers) have no per-frame map: ``ConfigError``.
    """
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise ConfigError(f"{type(model).__name__} has no 2-D frame encoder: Grad-CAM maps are made for frame-encoder models")
    model.eval()
    kept, hooks = _last_spatial_activation(encoder)
    try:
        with torch.enable_grad():
            x = clip[None].detach().requires_grad_(False)
            lengths = None if length is None else torch.tensor([int(length)], device=clip.device)
            logit = model(x, lengths=lengths)["logits"][0, pattern]
            if "map" not in kept:
                raise ConfigError("the frame encoder has no spatial feature map larger than 1 x 1")
            activation = kept["map"]  # (T, C, h, w)
            (gradient,) = torch.autograd.grad(logit, activation)
    finally:
        for hook in hooks:
            hook.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activation).sum(dim=1, keepdim=True)).detach()  # (T, 1, h, w)
    cam = F.interpolate(cam[list(frames)], size=clip.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp(min=torch.finfo(cam.dtype).tiny)
    return (cam / peak[:, None, None]).cpu().numpy()
