"""(c) LUV-Net training step (clips/s) and inference latency (ms/clip), with peak memory.

- CUDA: DenseNet-161 LUV-Net at the paper's size (30 x 256 x 256, batch 4) in fp32, bf16
  autocast, and bf16 autocast + channels_last.
- CPU: the tiny encoder at 30 x 256 x 256 (what the quick profile trains), and DenseNet-161 at
  a reduced size (8 x 128 x 128, batch 2; its paper size takes minutes per step on a CPU).

A training step is what ``lusv.train`` does per micro-batch: forward under autocast, masked BCE,
backward, Adam step. Inputs are made once with ``to_model_input`` (so ``channels_last`` gets the
layout training gives it); the data path itself is benchmark (a). Weights are random (nothing is
downloaded; speed does not depend on the values).

Run alone: ``python -m benchmarks.bench_model_step [--quick] [--device cpu|cuda|auto]``.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from benchmarks.common import Row, measure_interleaved, resolve_device
from lusv.datasets import to_model_input
from lusv.models import build_model
from lusv.train import masked_bce


@dataclass(frozen=True)
class ModelCase:
    label: str
    encoder: str
    num_frames: int
    image_size: int
    batch_size: int
    amp: Optional[torch.dtype] = None  # autocast dtype; None = fp32
    channels_last: bool = False
    warmup: int = 1
    repeats: int = 3
    note: str = ""


def default_cases(device: torch.device, quick: bool) -> list[ModelCase]:
    """The cases to run on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        if quick:
            return [ModelCase("densenet161 fp32", "densenet161", 8, 128, 2),
                    ModelCase("densenet161 bf16", "densenet161", 8, 128, 2, amp=torch.bfloat16)]
        paper = dict(encoder="densenet161", num_frames=30, image_size=256, batch_size=4, warmup=3, repeats=10)
        return [
            ModelCase("densenet161 fp32", **paper),
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


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def run_case(case: ModelCase, device: torch.device) -> list[Row]:
    """Train-step and inference rows for one case; an out-of-memory GPU gives NaN rows that say so."""
    shape = f"{case.num_frames}x{case.image_size}x{case.image_size}, batch {case.batch_size}"
    try:
        torch.manual_seed(0)
        model = build_model("luvnet", encoder=case.encoder, weights="random", channels_last=case.channels_last)
        model = model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
        generator = torch.Generator().manual_seed(0)
        clips = torch.randint(0, 256, (case.batch_size, case.num_frames, case.image_size, case.image_size, 1),
                              dtype=torch.uint8, generator=generator)
        x = to_model_input(clips, device, channels_last=case.channels_last)
        lengths = torch.full((case.batch_size,), case.num_frames, dtype=torch.int64, device=device)
        labels = torch.randint(0, 2, (case.batch_size, 4), generator=generator).float().to(device)

        def train_step() -> None:
            model.train()
            with _autocast(device, case.amp):
                out = model(x, lengths=lengths)
            loss_sum, count = masked_bce(out["logits"], labels)
            (loss_sum / count.clamp(min=1)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # here, so inference is measured without gradients held

        def infer() -> None:
            model.eval()
            with torch.inference_mode(), _autocast(device, case.amp):
                model(x, lengths=lengths)

        seconds, memory = measure_interleaved({"train": train_step, "infer": infer}, device, case.warmup, case.repeats)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return [Row("(c) model step", f"{case.label}: train step", float("nan"), "clips/s", note=f"{shape}; out of GPU memory")]
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()

    note = f"{shape}" + (f"; {case.note}" if case.note else "")
    return [
        Row("(c) model step", f"{case.label}: train step", case.batch_size / seconds["train"], "clips/s",
            memory["train"].mib, memory["train"].kind, note=note),
        Row("(c) model step", f"{case.label}: inference", seconds["infer"] / case.batch_size * 1e3, "ms/clip",
            memory["infer"].mib, memory["infer"].kind, note=note),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    for row in run(resolve_device(args.device), args.quick):
        print(row)


if __name__ == "__main__":
    main()
