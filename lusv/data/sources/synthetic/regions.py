"""Where each pattern is drawn, frame by frame, in the pixels the models see.

``render_clip`` already returns each pattern's region mask (``SyntheticClip.regions``: the A-line
bands, B-line columns, consolidation, effusion, in image coordinates, shadowed parts removed).
The dataset on disk keeps only the videos and the per-frame presence, so ``region_masks``
renders a clip again from its plan (the generator is deterministic: same plan, same draws,
same pixels; nothing in the generator is changed or re-drawn for this) and maps its masks
through the clip cache's own geometry: the cache's frame sampling, the crop found on the
decoded video (``lusv.data.video.crop_box``, as ``prepare_clip`` finds it) and the resize
(``lusv.data.video.to_square``). A mask pixel counts when at least half of it is covered after the
bilinear resize.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from lusv.data.patterns import PATTERNS
from lusv.data.sources.synthetic.files import PARAMS_FILE, VIDEO_DIR
from lusv.data.sources.synthetic.plan import plan_dataset
from lusv.data.sources.synthetic.render import render_clip
from lusv.data.video import crop_box, gray_frames, read_frames, sample_indices, to_square
from lusv.errors import LabelsError


def _plans_by_clip(root: Path) -> tuple[dict, int]:
    path = root / PARAMS_FILE
    if not path.is_file():
        raise LabelsError(f"no {PARAMS_FILE} in {root}: region masks need the generation parameters of a "
                          "complete synthetic dataset (lusv.data.sources.synthetic.load_synthetic)")
    params = json.loads(path.read_text())
    plans = plan_dataset(params["n_clips"], params["n_patients"], params["num_frames"], params["seed"], params["probe"])
    return {plan.clip_id: plan for plan in plans}, int(params["frame_size"])


def region_masks(root: str | os.PathLike, clip_ids: Sequence[str], num_frames: int, image_size: int) -> np.ndarray:
    """Per-frame, per-pattern region masks (N, T, 4, S, S) bool of ``clip_ids`` in the clip
    cache's geometry (T = ``num_frames``, S = ``image_size``; padded frames are all False)."""
    import torch


    root = Path(root)
    plans, frame_size = _plans_by_clip(root)
    unknown = [cid for cid in clip_ids if cid not in plans]
    if unknown:
        raise LabelsError(f"clip(s) {unknown[:5]} are not in the synthetic dataset at {root}")
    out = np.zeros((len(clip_ids), num_frames, len(PATTERNS), image_size, image_size), dtype=bool)
    for i, clip_id in enumerate(clip_ids):
        plan = plans[clip_id]
        clip = render_clip(plan.look, plan.presence, frame_size, seed=plan.render_seed,
                           confluent_b_lines=plan.confluent_b_lines)
        decoded = read_frames(root / VIDEO_DIR / f"{clip_id}.mp4")
        keep = sample_indices(len(decoded), num_frames)
        box = crop_box(gray_frames(decoded[keep]))
        masks = np.stack([clip.regions[name][keep] for name in PATTERNS], axis=1)  # (n, 4, F, F)
        resized = to_square(torch.from_numpy(masks.astype(np.float32)), box, image_size)
        out[i, : len(keep)] = (resized >= 0.5).numpy()
    return out
