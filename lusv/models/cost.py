"""Size and cost of a model per clip, the paper's Table 4: parameters, multiply-accumulates and
inference time.

Multiply-accumulates are counted with ``torch.utils.flop_counter`` on the meta device (shapes
only, no memory, no weights): its FLOPs count a multiply-add as 2, and the paper's "GFLOPs" are
multiply-accumulates (its LUV-Net 304.68 G equals our count / 2 = 304.67 G), so we halve.
Inference time is measured on real tensors on the device at hand, after warm-up, in eval mode.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import torch
from torch import nn


class ModelCost(NamedTuple):
    parameters: int
    gmac: float  # multiply-accumulates per clip, in units of 1e9


def count_macs(model: nn.Module, num_frames: int, image_size: int) -> float:
    """GMACs of one forward pass of one clip (1, T, 3, S, S) in eval mode, counted on meta tensors.

    Build the model on the meta device (``with torch.device("meta"): build_model(...)``);
    lengths are not passed (every frame real), which is how a fixed-length window is run.
    """
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    was_training = model.training
    model.eval()
    clip = torch.empty((1, num_frames, 3, image_size, image_size), device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(clip)
    model.train(was_training)
    return counter.get_total_flops() / 2e9


def model_cost(build: Callable[[], nn.Module], num_frames: int, image_size: int) -> ModelCost:
    """Parameters and GMACs of the model ``build()`` makes, built on the meta device."""
    from lusv.models import count_parameters  # noqa: PLC0415 - the registry imports this module's siblings

    with torch.device("meta"):
        model = build()
        return ModelCost(count_parameters(model), count_macs(model, num_frames, image_size))


def inference_seconds(model: nn.Module, num_frames: int, image_size: int, device: torch.device | str = "cpu",
                      repeats: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of one eval-mode forward pass of one random clip on ``device``."""
    device = torch.device(device)
    model = model.to(device).eval()
    clip = torch.randn((1, num_frames, 3, image_size, image_size), device=device)
    times = []
    with torch.no_grad():
        for index in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            model(clip)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if index >= warmup:
                times.append(time.perf_counter() - started)
    return float(sorted(times)[len(times) // 2])
