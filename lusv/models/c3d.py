"""C3D (Tran et al., 2015): the classic 3-D CNN comparator.

Eight 3x3x3 convolutions (64, 128, 256, 256, 512, 512, 512, 512 channels), five max-pools (the
first spatial only, the last padded by one pixel in space), then fc6 4096 -> fc7 4096 -> fc8 P
with dropout. Layer names follow the widely used PyTorch port of C3D (conv1, conv2, conv3a, ...,
fc6, fc7, fc8), so a converted Sports-1M state dict can be passed as ``weights=<file>`` (its
convolutions load; fc layers whose size differs are skipped and reported).

fc6's input size depends on T and the frame size; it is computed from them, which is why the
model is built for one ``num_frames`` x ``image_size`` and checks its input against them.
At 30 x 256 x 256 it has 214,327,044 parameters. ``width`` scales every channel count and the
fc sizes (1.0 = the published network); the quick CPU profile uses a narrow C3D so that the
comparison runs in minutes. Padded frames of short clips are fed as they
are (``lengths`` is accepted and ignored): a 3-D CNN has no notion of clip length.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from lusv.data.patterns import NUM_PATTERNS
from lusv.errors import ConfigError
from lusv.models.encoders import apply_weights
from lusv.models.registry import register_model

# (name, input channels, output channels) of the convolutions and the pool after each group.
_CONVS = (
    ("conv1", 3, 64), ("conv2", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
    ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512),
)  # fmt: skip
# pool name -> (kernel, stride, padding) as (T, H, W); placed after the named conv.
_POOLS = {
    "conv1": ("pool1", (1, 2, 2), (1, 2, 2), (0, 0, 0)),
    "conv2": ("pool2", (2, 2, 2), (2, 2, 2), (0, 0, 0)),
    "conv3b": ("pool3", (2, 2, 2), (2, 2, 2), (0, 0, 0)),
    "conv4b": ("pool4", (2, 2, 2), (2, 2, 2), (0, 0, 0)),
    "conv5b": ("pool5", (2, 2, 2), (2, 2, 2), (0, 1, 1)),
}


def _pooled_size(size: int, axis: int) -> int:
    """Size along one axis (0 = time, 1/2 = space) after the five pools (convs keep sizes)."""
    for _, kernel, stride, padding in _POOLS.values():
        size = (size + 2 * padding[axis] - kernel[axis]) // stride[axis] + 1
    return size


def _scaled(channels: int, width: float) -> int:
    return max(4, round(channels * width))


class C3D(nn.Module):
    """``forward(x (B,T,3,S,S), lengths ignored) -> {"logits": (B,P)}`` for the T, S it was built for."""

    def __init__(self, num_frames: int, image_size: int, dropout: float = 0.5, width: float = 1.0) -> None:
        super().__init__()
        time, space = _pooled_size(num_frames, 0), _pooled_size(image_size, 1)
        if time < 1 or space < 1:
            raise ConfigError(
                f"c3d needs num_frames >= 16 and image_size >= 16 to survive its five pools; "
                f"got num_frames={num_frames}, image_size={image_size}"
            )
        self.num_frames, self.image_size = num_frames, image_size
        self.channels_last = False  # set by build_model(channels_last=True): NDHWC activations
        # Layers are attributes named like the C3D port (state-dict keys 'conv1.weight', ...);
        # `_order` is the sequence in which forward applies them.
        self._order: list[str] = []
        for name, cin, cout in _CONVS:
            cin = 3 if name == "conv1" else _scaled(cin, width)
            self.add_module(name, nn.Conv3d(cin, _scaled(cout, width), kernel_size=3, padding=1))
            self._order.append(name)
            if name in _POOLS:
                pool_name, kernel, stride, padding = _POOLS[name]
                self.add_module(pool_name, nn.MaxPool3d(kernel, stride, padding))
                self._order.append(pool_name)
        self.fc_input = _scaled(512, width) * time * space * space
        hidden = _scaled(4096, width)
        self.fc6 = nn.Linear(self.fc_input, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.fc8 = nn.Linear(hidden, NUM_PATTERNS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.ndim != 5 or x.shape[1:] != (self.num_frames, 3, self.image_size, self.image_size):
            raise ValueError(
                f"c3d was built for clips (B, {self.num_frames}, 3, {self.image_size}, {self.image_size}) "
                f"(its fc6 size depends on them), got {tuple(x.shape)}"
            )
        volume = x.transpose(1, 2)  # (B, 3, T, S, S)
        if self.channels_last:
            volume = volume.contiguous(memory_format=torch.channels_last_3d)
        for name in self._order:
            layer = getattr(self, name)
            volume = torch.relu(layer(volume)) if isinstance(layer, nn.Conv3d) else layer(volume)
        features = volume.flatten(1)
        hidden = self.dropout(torch.relu(self.fc6(features)))
        hidden = self.dropout(torch.relu(self.fc7(hidden)))
        return {"logits": self.fc8(hidden)}


@register_model("c3d")
def build_c3d(
    num_frames: int | None = None, image_size: int | None = None, weights: str | os.PathLike = "imagenet",
    strict_weights: bool = False, dropout: float = 0.5, width: float = 1.0,
) -> C3D:  # fmt: skip
    """Build C3D for clips of ``num_frames`` x ``image_size`` (both required); apply the weights policy."""
    if num_frames is None or image_size is None:
        raise ConfigError("c3d needs num_frames and image_size (its fc6 size depends on them)")
    model = C3D(int(num_frames), int(image_size), dropout=dropout, width=width)
    # No ImageNet weights exist for C3D: 'imagenet' falls back to random with a warning.
    model.weights_source = apply_weights(model, weights, strict=strict_weights, name="c3d")
    return model
