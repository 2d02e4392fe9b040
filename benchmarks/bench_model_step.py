"""(c) LUV-Net training step (clips/s) and inference latency (ms/clip), with peak memory.

- CUDA: DenseNet-161 LUV-Net at the paper's size (30 x 256 x 256, batch 4) in true fp32 (TF32
  off for convolutions and matmuls: the baseline of the ratios), fp32 with TF32 on, bf16
  autocast, and bf16 autocast + channels_last (these two with torch's TF32 defaults, as
  ``lusv.train`` runs).
- CPU: the tiny encoder at 30 x 256 x 256 (what the quick profile trains), and DenseNet-161 at
  a reduced size (8 x 128 x 128, batch 2; its paper size takes minutes per step on a CPU).

A training step is what ``lusv.train`` does per micro-batch: forward under autocast, masked BCE,
backward, Adam step. Inference is timed after training, on a fresh model in eval mode with the
training model and optimizer freed, so its peak memory is its own (weights and activations);
each peak includes building the model (and, for training, the gradients and Adam state).
Inputs are made once with ``to_model_input`` (so ``channels_last`` gets the
layout training gives it); the data path itself is benchmark (a). Weights are random (nothing is
downloaded; speed does not depend on the values).

Run alone: ``python -m benchmarks.bench_model_step [--quick] [--device cpu|cuda|auto]``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from benchmarks.common import PeakMemory, Row, bench_main, measure, median, release_memory
from lusv.data.model_input import to_model_input
from lusv.infra.devices import autocast
from lusv.inference import masked_bce
from lusv.models import build_model


@dataclass(frozen=True)
class ModelCase:
    label: str
    encoder: str
    num_frames: int
    image_size: int
    batch_size: int
    amp: Optional[torch.dtype] = None  # autocast dtype; None = fp32
    channels_last: bool = False
    # CUDA only: TF32 for cuDNN convolutions and matmuls during this case (True/False), or None
    # for torch's defaults (cuDNN convolutions TF32, matmuls not), which lusv.train runs with.
    tf32: Optional[bool] = None
    compile: bool = False  # torch.compile the model (its compilation falls in the warm-up calls)
    warmup: int = 1
    repeats: int = 3
    note: str = ""


def default_cases(device: torch.device, quick: bool) -> list[ModelCase]:
    """The cases to run on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        if quick:
            return [ModelCase("densenet161 fp32 (TF32 off)", "densenet161", 8, 128, 2, tf32=False),
                    ModelCase("densenet161 bf16", "densenet161", 8, 128, 2, amp=torch.bfloat16)]
        paper = dict(encoder="densenet161", num_frames=30, image_size=256, batch_size=4, warmup=3, repeats=10)
        return [
            ModelCase("densenet161 fp32 (TF32 off)", tf32=False, **paper),
            ModelCase("densenet161 fp32/TF32 (convolutions and matmuls in TF32)", tf32=True, **paper),
            ModelCase("densenet161 bf16 autocast", amp=torch.bfloat16, **paper),
            ModelCase("densenet161 bf16 autocast + channels_last", amp=torch.bfloat16, channels_last=True, **paper),
        ]
    if quick:
        return [ModelCase("tiny encoder fp32", "tiny", 8, 64, 2)]
    return [
        ModelCase("tiny encoder fp32", "tiny", 30, 256, 4),
        ModelCase("densenet161 fp32 (reduced size, CPU)", "densenet161", 8, 128, 2, repeats=2,
                  note="CPU stand-in for the GPU paper size"),
    ]


@contextlib.contextmanager
def _tf32(device: torch.device, enabled: Optional[bool]):
    """TF32 for cuDNN convolutions and CUDA matmuls set to ``enabled`` inside, restored after
    (nothing to set for None or off CUDA)."""
    if device.type != "cuda" or enabled is None:
        yield
        return
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _fresh_model(case: ModelCase, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("luvnet", encoder=case.encoder, weights="random", channels_last=case.channels_last)
    model = model.to(device)
    return torch.compile(model) if case.compile else model


def _time_and_memory(setup: Callable[[], Callable[[], None]], device: torch.device, warmup: int,
                     repeats: int) -> tuple[float, PeakMemory]:
    """Median seconds per call of the step that ``setup`` builds, and the peak memory of building
    it plus its warm-up calls (so weights, gradients and optimizer state are in the figure)."""
    with PeakMemory(device) as peak:
        step = setup()
        for _ in range(max(warmup, 1)):
            step()
    return median(measure(step, device, warmup=0, repeats=repeats)), peak


def run_case(case: ModelCase, device: torch.device) -> list[Row]:
    """Train-step and inference rows for one case; an out-of-memory GPU gives NaN rows that say so.

    Training and inference are measured one after the other, each on its own model: the training
    model, its optimizer state and gradients are freed before inference is measured on a fresh
    model in eval mode, so the inference peak memory holds only the weights and activations.
    Longer than most functions here: the two step builders are closures over this case's inputs,
    kept next to the measurement that uses them.
    """
    shape = f"{case.num_frames}x{case.image_size}x{case.image_size}, batch {case.batch_size}"
    generator = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (case.batch_size, case.num_frames, case.image_size, case.image_size, 1),
                          dtype=torch.uint8, generator=generator)
    labels_cpu = torch.randint(0, 2, (case.batch_size, 4), generator=generator).float()

    def inputs():
        x = to_model_input(clips, device, channels_last=case.channels_last)
        lengths = torch.full((case.batch_size,), case.num_frames, dtype=torch.int64, device=device)
        return x, lengths

    def train_setup() -> Callable[[], None]:
        model = _fresh_model(case, device)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
        x, lengths = inputs()
        labels = labels_cpu.to(device)

        def train_step() -> None:
            with autocast(device, case.amp):
                out = model(x, lengths=lengths)
            loss_sum, count = masked_bce(out["logits"], labels)
            (loss_sum / count.clamp(min=1)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return train_step

    def infer_setup() -> Callable[[], None]:
        model = _fresh_model(case, device)
        model.eval()
        x, lengths = inputs()

        def infer() -> None:
            with torch.inference_mode(), autocast(device, case.amp):
                model(x, lengths=lengths)

        return infer

    try:
        with _tf32(device, case.tf32):
            # Nothing keeps the training step (model, optimizer, gradients, inputs) once the
            # first call returns; the second call's PeakMemory entry collects it (gc.collect,
            # CUDA empty_cache) before resetting the peak.
            train_s, train_mem = _time_and_memory(train_setup, device, case.warmup, case.repeats)
            infer_s, infer_mem = _time_and_memory(infer_setup, device, case.warmup, case.repeats)
    except torch.cuda.OutOfMemoryError:
        release_memory(device)
        return [Row("(c) model step", f"{case.label}: train step", float("nan"), "clips/s", note=f"{shape}; out of GPU memory")]
    finally:
        release_memory(device)

    note = f"{shape}" + (f"; {case.note}" if case.note else "")
    return [
        Row("(c) model step", f"{case.label}: train step", case.batch_size / train_s, "clips/s",
            train_mem.mib, train_mem.kind, note=note, rss_rise_mib=train_mem.rss_mib),
        Row("(c) model step", f"{case.label}: inference", infer_s / case.batch_size * 1e3, "ms/clip",
            infer_mem.mib, infer_mem.kind, note=note + "; fresh model in eval mode, no optimizer",
            rss_rise_mib=infer_mem.rss_mib),
    ]


def run(device: torch.device, quick: bool = False, cases: Optional[list[ModelCase]] = None) -> list[Row]:
    """All cases; on CUDA each variant's speed-up over the first (fp32) case goes in ``ratio``."""
    cases = cases if cases is not None else default_cases(device, quick)
    per_case = [run_case(case, device) for case in cases]
    if device.type == "cuda" and per_case:
        # Keyed by "train step" / "inference"; NaN (out of memory) figures get no ratio.
        reference = {row.variant.rsplit(": ", 1)[1]: row for row in per_case[0] if row.value == row.value}
        for row in reference.values():
            row.ratio, row.baseline = 1.0, "self"
        for row in (row for rows in per_case[1:] for row in rows):
            kind = row.variant.rsplit(": ", 1)[1]
            base = reference.get(kind)
            if base is None or row.value != row.value:
                continue
            row.ratio = row.value / base.value if kind == "train step" else base.value / row.value
            row.baseline = base.variant
    return [row for rows in per_case for row in rows]


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main(__doc__, lambda quick, device: run(device, quick), argv)


if __name__ == "__main__":
    main()
