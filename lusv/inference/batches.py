"""Clips in, probabilities out: the batch loop that training, evaluation and prediction share.

* ``predict(model, clips)`` -> pattern probabilities (and attention) for cached uint8 clips;
* ``predict_batches`` is the batch loop under it, which training also uses to score its
  validation and test clips, with ``masked_bce`` (the loss of training) over the labelled entries;
* ``forward_batch`` sends one batch through the whole model, or cached frozen-encoder features
  through its heads alone.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lusv.data.model_input import to_model_input
from lusv.data.patterns import PATTERNS
from lusv.infra.devices import autocast, unwrap


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of BCE-with-logits over the labelled entries (NaN = missing) and their count.

    The loss training minimises and the validation loss early stopping watches."""
    known = ~torch.isnan(labels)
    losses = F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(labels), reduction="none")
    return (losses * known).sum(), known.sum()


def forward_batch(
    model: nn.Module, batch: Mapping[str, Any], device: torch.device, amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False, augment: Any = None, generator: Optional[torch.Generator] = None,
) -> dict[str, torch.Tensor]:
    """The model's outputs for one batch: clips (``lusv.data.datasets.collate_clips``) go through the
    whole model, optionally augmented on the device; cached frozen-encoder features
    (``lusv.data.features.collate_features``) go through its heads alone (``forward_features``)."""
    lengths = batch["lengths"].to(device, non_blocking=True)
    if "features" in batch:
        features = batch["features"].to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            return unwrap(model).forward_features(features, lengths)
    x = to_model_input(batch["clips"], device, augment=augment, generator=generator,
                       lengths=batch["lengths"], channels_last=channels_last)
    with autocast(device, amp_dtype):
        return model(x, lengths=lengths)


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """Probabilities (N, 4), summed masked BCE, label count, and attention per batch (if any).

    Batches of clips or of cached features (see ``forward_batch``)."""
    model.eval()
    probabilities, attentions = [], []
    loss_sum = torch.zeros((), device=device)
    count = torch.zeros((), device=device, dtype=torch.int64)
    for batch in batches:
        out = forward_batch(model, batch, device, amp_dtype, channels_last)
        logits = out["logits"].float()
        if "labels" in batch:
            batch_loss, batch_count = masked_bce(logits, batch["labels"].to(device))
            loss_sum += batch_loss
            count += batch_count
        probabilities.append(torch.sigmoid(logits).cpu().numpy())
        if out.get("attention") is not None:
            attentions.append(out["attention"].float().cpu().numpy())
    stacked = np.concatenate(probabilities) if probabilities else np.zeros((0, len(PATTERNS)), np.float32)
    return stacked, loss_sum, count, attentions


def predict(
    model: nn.Module,
    clips: np.ndarray | torch.Tensor,
    lengths: np.ndarray | torch.Tensor | None = None,
    *,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    return_attention: bool = False,
) -> np.ndarray | tuple[np.ndarray, Optional[np.ndarray]]:
    """Pattern probabilities (N, 4) for uint8 clips (N, T, S, S, 1), e.g. from ``ClipCache.load_many``.

    ``lengths`` (N,) gives the real frames of zero-padded clips (None = all real). Runs on the
    model's device unless ``device`` is given. With ``return_attention`` also returns the
    model's attention (N, 4, H, T) (None for models without one).
    """
    clips_t = torch.as_tensor(np.asarray(clips)) if not isinstance(clips, torch.Tensor) else clips
    n, t = clips_t.shape[:2]
    lengths_t = torch.full((n,), t, dtype=torch.int64) if lengths is None else torch.as_tensor(np.asarray(lengths), dtype=torch.int64)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    batches = (
        {"clips": clips_t[i : i + batch_size], "lengths": lengths_t[i : i + batch_size]} for i in range(0, n, batch_size)
    )
    probabilities, _, _, attentions = predict_batches(model, batches, device)
    if not return_attention:
        return probabilities
    return probabilities, (np.concatenate(attentions) if attentions else None)
