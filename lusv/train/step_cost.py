"""What one training step of a run costs: seconds and peak memory, measured on the device at the
run's own shapes, or estimated from counts where a few steps cannot run here.

``model_figures(p)`` counts, on the meta device (no memory, no weights): parameters, the
multiply-accumulates of one clip (``lusv.models.cost``; the paper's Table 4 figure) and of one
training step's forward per clip (for a frozen encoder, ``train_encoder=False``, the heads on
cached features alone), and the activations a training step keeps for its backward pass
(``saved_activation_bytes``: every tensor autograd saves, counted once per storage).

``measure_step(p, device)`` runs what ``lusv.train.loop.train_one_epoch`` runs per micro-batch,
at the run's batch size, frames, size, augmentation and precision: a warm-up step, then timed
steps (median), and one evaluation batch; random weights and random clips (speed does not depend
on their values). Peak memory is ``lusv.infra.memory.PeakMemory`` over building the model and
the warm-up step: on CUDA ``max_memory_allocated``, on the CPU the peak of the bytes in use.

``estimate_step(figures, p, throughput)`` is the stand-in where a measurement cannot run (the
paper profile's DenseNet-161 steps take minutes and ~40 GB on a CPU): a training step is taken
as 3x its forward multiply-accumulates (forward + a backward of twice the forward) at a stated
throughput, an evaluation batch as 1x; memory as weights, gradients and Adam's two moments
(16 bytes per trained parameter, 4 per frozen one) plus the saved activations, halved under
bf16/fp16 autocast. ``GPU_THROUGHPUT`` comes from the paper's own Table 4.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from lusv.config import RunParams
from lusv.data.model_input import clip_augment, to_model_input
from lusv.inference import build_run_model, forward_batch, masked_bce
from lusv.infra.devices import resolve_amp
from lusv.infra.memory import MIB, PeakMemory, synchronize
from lusv.models import count_parameters, frame_models
from lusv.models.cost import count_macs
from lusv.models.encoders import build_encoder

# The paper's Table 4: LUV-Net (DenseNet-161) takes 0.065 s per 304.68-GMAC clip on one A100,
# i.e. 4.7 TMAC/s effective. Training steps are assumed to run at the same rate.
GPU_THROUGHPUT = ("one A100-class GPU", 304.68 / 0.065)
# A training step = its forward + a backward of about twice the forward's multiply-accumulates.
STEP_MACS_PER_FORWARD = 3.0
# On a CPU a few steps are measured when one step is below this many GMAC (~10 s on 2 cores);
# bigger steps (the paper profile's) are estimated for a GPU instead.
CPU_MEASURE_LIMIT_GMAC = 250.0
BYTES_PER_TRAINED_PARAMETER = 16  # fp32 weight, gradient and Adam's two moments
BYTES_PER_FROZEN_PARAMETER = 4


@dataclass(frozen=True)
class ModelFigures:
    """Counts of one run's model, from shapes alone."""

    parameters: int
    trained_parameters: int
    state_numel: int  # every tensor of the state dict (parameters and buffers): what a checkpoint stores
    gmac_per_clip: float  # the whole model on one clip (the paper's Table 4 figure)
    step_gmac_per_clip: float  # what a training step runs forward per clip (heads alone for a frozen encoder)
    encoder_gmac_per_clip: float  # frozen encoder: one clip's feature extraction (0 when the encoder trains)
    saved_activation_bytes: int  # what one training micro-batch keeps for backward (fp32)


@dataclass(frozen=True)
class StepCost:
    """Seconds per training step and per evaluation batch, and peak memory, on ``device``."""

    seconds: float
    eval_seconds: float
    peak_mib: float
    device: str
    measured: bool
    how: str  # what the figures are: "measured: ..." or "estimated: ..."


def _run_model(p: RunParams) -> nn.Module:
    """The run's model with random weights (nothing read, nothing warned), its encoder frozen
    when the run freezes it."""
    model = build_run_model(dataclasses.replace(p, weights="random"))
    if not p.train_encoder:
        model.encoder.requires_grad_(False)
    return model


def _frozen_input(model: nn.Module, p: RunParams, batch: int, device) -> dict[str, torch.Tensor]:
    """A batch of cached frame features (B, T, F), as the feature loader gives it."""
    return {"features": torch.randn((batch, p.num_frames, model.encoder.feature_dim), device=device),
            "lengths": torch.full((batch,), p.num_frames, dtype=torch.int64, device=device)}


def _clip_input(p: RunParams, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A batch as the clip loader gives it: uint8 (B, T, S, S, 1), on the CPU."""
    shape = (batch, p.num_frames, p.image_size, p.image_size, 1)
    return {"clips": torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator),
            "lengths": torch.full((batch,), p.num_frames, dtype=torch.int64)}


def saved_activation_bytes(forward: Callable[[], object], parameters: Iterable[torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for backward while ``forward()`` runs (on the meta
    device), each storage counted once, the ``parameters`` not."""
    owned = {q.untyped_storage()._cdata for q in parameters}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in owned:
            saved[storage._cdata] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(saved.values())


def _gmac(forward: Callable[[], object]) -> float:
    """GMACs of ``forward()`` (``torch.utils.flop_counter`` counts a multiply-add as 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward()
    return counter.get_total_flops() / 2e9


@functools.lru_cache(maxsize=None)
def _encoder_figures(encoder: str, num_frames: int, image_size: int, batch: int, trained: bool) -> tuple[float, int]:
    """(GMACs of one clip, bytes saved for backward by a batch) of a frame encoder, counted once
    per shape: the 2-D models of a study share their encoder, and DenseNet-161 takes seconds to count."""
    with torch.device("meta"):
        frames = build_encoder(encoder, "random").eval()
        gmac = _gmac(lambda: frames.encode_clips(torch.empty((1, num_frames, 3, image_size, image_size))))
        if not trained:
            return gmac, 0
        frames.train()
        clips = torch.empty((batch, num_frames, 3, image_size, image_size))
        return gmac, saved_activation_bytes(lambda: frames.encode_clips(clips), frames.parameters())


def model_figures(p: RunParams) -> ModelFigures:
    """Parameters, GMACs and saved activations of ``p``'s model at its frames, size and batch.

    A 2-D model is counted as its frame encoder (``_encoder_figures``, once per shape) plus its
    heads on the encoder's features, which is what its forward is; a 3-D CNN as a whole."""
    with torch.device("meta"):
        model = _run_model(p)
        parameters = count_parameters(model)
        trained = sum(q.numel() for q in model.parameters() if q.requires_grad)
        state = sum(t.numel() for t in model.state_dict().values())
        if p.model not in frame_models():
            gmac = count_macs(model, p.num_frames, p.image_size)
            model.train()
            clips = torch.empty((p.batch_size, p.num_frames, 3, p.image_size, p.image_size))
            saved = saved_activation_bytes(lambda: model(clips), model.parameters())
            return ModelFigures(parameters, trained, state, gmac, gmac, 0.0, saved)
        encoder_gmac, encoder_saved = _encoder_figures(p.encoder, p.num_frames, p.image_size, p.batch_size,
                                                       p.train_encoder)
        width = model.encoder.feature_dim
        model.eval()
        heads_gmac = _gmac(lambda: model.forward_features(torch.empty((1, p.num_frames, width)), None))
        model.train()
        features = torch.empty((p.batch_size, p.num_frames, width), requires_grad=p.train_encoder)
        heads_saved = saved_activation_bytes(lambda: model.forward_features(features, None), model.parameters())
    if p.train_encoder:
        gmac = encoder_gmac + heads_gmac
        return ModelFigures(parameters, trained, state, gmac, gmac, 0.0, encoder_saved + heads_saved)
    return ModelFigures(parameters, trained, state, encoder_gmac + heads_gmac, heads_gmac, encoder_gmac, heads_saved)


def estimated_memory_mib(figures: ModelFigures, p: RunParams, amp: bool) -> float:
    """Training memory of one micro-batch: weights, gradients and Adam state of the trained
    parameters, the frozen weights, and the saved activations (about half under autocast)."""
    frozen = figures.parameters - figures.trained_parameters
    weights = BYTES_PER_TRAINED_PARAMETER * figures.trained_parameters + BYTES_PER_FROZEN_PARAMETER * frozen
    activations = figures.saved_activation_bytes / (2 if amp else 1)
    return (weights + activations) / MIB


def estimate_step(figures: ModelFigures, p: RunParams, throughput: tuple[str, float] = GPU_THROUGHPUT) -> StepCost:
    """Seconds per training step and evaluation batch at ``throughput`` (where, GMAC per second),
    and the estimated memory (autocast as the profile has it on a GPU)."""
    where, gmac_per_second = throughput
    forward = figures.step_gmac_per_clip * p.batch_size / gmac_per_second
    amp = p.amp != "off"
    how = (f"estimated: {STEP_MACS_PER_FORWARD:g}x the forward multiply-accumulates at {gmac_per_second / 1000:.1f} "
           f"TMAC/s ({where}, the paper's Table 4 rate); memory = weights, gradients and Adam state + the "
           f"activations saved for backward, counted on the meta device{', halved for bf16 autocast' if amp else ''}")
    return StepCost(STEP_MACS_PER_FORWARD * forward * p.grad_accum, forward, estimated_memory_mib(figures, p, amp),
                    where, False, how)


def can_measure(figures: ModelFigures, p: RunParams, device: torch.device) -> bool:
    """Whether a few training steps of ``p`` fit in a plan's time here: always on a GPU; on the
    CPU when a step is below ``CPU_MEASURE_LIMIT_GMAC``."""
    if device.type == "cuda":
        return True
    return STEP_MACS_PER_FORWARD * figures.step_gmac_per_clip * p.batch_size <= CPU_MEASURE_LIMIT_GMAC


def measure_step(p: RunParams, device: torch.device, steps: int = 2) -> StepCost:
    """Seconds per training step (median of ``steps`` after a warm-up step), seconds per evaluation
    batch, and peak memory of building the model and its first step, on ``device``.

    A step is one optimizer step of ``grad_accum`` micro-batches of ``batch_size`` clips (or
    cached features), forward under the run's autocast, masked BCE, backward, Adam."""
    amp_dtype = resolve_amp(p.amp, device)
    generator = torch.Generator().manual_seed(0)
    augment = clip_augment(p.augmentations) if p.augment and p.train_encoder else None
    with PeakMemory(device) as peak:
        torch.manual_seed(0)
        model = _run_model(p).to(device)
        trained = [q for q in model.parameters() if q.requires_grad]
        optimizer = torch.optim.Adam(trained, lr=p.lr, weight_decay=p.weight_decay,
                                     **({} if p.train_encoder else {"fused": True}))
        if p.train_encoder:
            batch = _clip_input(p, p.batch_size, generator)
        else:
            batch = _frozen_input(model, p, p.batch_size, device)
        labels = torch.randint(0, 2, (p.batch_size, 4), generator=generator).float().to(device)

        def step() -> None:
            model.train()
            for _ in range(p.grad_accum):
                out = forward_batch(model, batch, device, amp_dtype, p.channels_last, augment, generator)
                loss_sum, count = masked_bce(out["logits"], labels)
                (loss_sum / count / p.grad_accum).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()
        synchronize(device)
    seconds = statistics.median(_timed(step, device) for _ in range(max(steps, 1)))
    model.eval()
    with torch.no_grad():
        eval_seconds = _timed(lambda: forward_batch(model, batch, device, amp_dtype, p.channels_last), device)
    kind = "max_memory_allocated" if device.type == "cuda" else "peak bytes in use"
    how = f"measured: {max(steps, 1)} steps after a warm-up on {device} (median); memory: {kind}"
    if device.type == "cpu" and hasattr(os, "getloadavg"):  # wall seconds on a shared CPU grow with its load
        how += f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores while measuring"
    return StepCost(seconds, eval_seconds, peak.mib, str(device), True, how)


def _timed(fn, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - started


def feature_seconds_per_clip(figures: ModelFigures, p: RunParams, device: torch.device, measured: bool,
                             throughput: tuple[str, float] = GPU_THROUGHPUT) -> Optional[float]:
    """A frozen encoder's seconds per clip of feature extraction (None when the encoder trains):
    one batch of clips measured on ``device``, or ``encoder_gmac_per_clip`` at ``throughput``."""
    if p.train_encoder:
        return None
    if not measured:
        return figures.encoder_gmac_per_clip / throughput[1]
    encoder = _run_model(p).encoder.to(device).eval()
    inputs = _clip_input(p, min(p.batch_size, 4), torch.Generator().manual_seed(0))
    clips = to_model_input(inputs["clips"], device, channels_last=p.channels_last)
    with torch.no_grad():
        encoder.encode_clips(clips)  # warm-up
        seconds = _timed(lambda: encoder.encode_clips(clips), device)
    return seconds / clips.shape[0]


def checkpoint_bytes(figures: ModelFigures) -> int:
    """Disk of one finished run: checkpoint.pt (the state dict and Adam's two moments of the
    trained parameters, fp32) and best.pt (the state dict)."""
    return 4 * (2 * figures.state_numel + 2 * figures.trained_parameters)


def ceil_div(a: float, b: float) -> int:
    return int(math.ceil(a / b)) if a > 0 else 0
