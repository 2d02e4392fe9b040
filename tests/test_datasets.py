"""lusv.data.datasets: cache-backed dataset, collate, uint8 -> model input, batched augmentations."""

import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from lusv.data.datasets import ClipDataset, collate_clips
from lusv.data.model_input import ClipAugment, clip_augment, frame_mask, normalize, to_model_input
from lusv.errors import ConfigError, LabelsError
from lusv.data.patterns import IMAGENET_MEAN, IMAGENET_STD, PATTERNS

T, S = 6, 16


class FakeCache:
    """Stands in for lusv.data.cache.ClipCache: read-only arrays like a memory map, counts calls."""

    def __init__(self, n: int):
        rng = np.random.default_rng(0)
        self.clips = {}
        for i in range(n):
            clip = rng.integers(0, 256, size=(T, S, S, 1), dtype=np.uint8)
            length = T - (i % 3)
            clip[length:] = 0
            clip.flags.writeable = False
            self.clips[f"c{i}"] = (clip, length)
        self.load_many_calls = 0

    def load(self, clip_id):
        return self.clips[clip_id]

    def load_many(self, clip_ids):
        self.load_many_calls += 1
        clips = np.stack([self.clips[c][0] for c in clip_ids])
        return clips, np.array([self.clips[c][1] for c in clip_ids], dtype=np.int64)


def _table(n):
    labels = np.eye(4)[np.arange(n) % 4]
    table = pd.DataFrame(labels, columns=list(PATTERNS))
    table.insert(0, "clip_id", [f"c{i}" for i in range(n)])
    table.loc[1, "b_lines"] = np.nan
    return table


def test_dataset_items_and_loader_batches_use_load_many():
    cache = FakeCache(5)
    dataset = ClipDataset(cache, _table(5))
    item = dataset[1]
    assert item["clip"].dtype == torch.uint8 and item["clip"].shape == (T, S, S, 1)
    assert item["length"] == T - 1 and item["clip_id"] == "c1"
    assert math.isnan(item["labels"][1]) and item["labels"][0] == 0

    batches = list(DataLoader(dataset, batch_size=2, collate_fn=collate_clips))
    assert cache.load_many_calls == 3
    first = batches[0]
    assert first["clips"].shape == (2, T, S, S, 1) and first["clips"].dtype == torch.uint8
    assert first["lengths"].tolist() == [T, T - 1]
    assert first["clip_ids"] == ["c0", "c1"]
    assert torch.equal(first["clips"][1], item["clip"])
    assert torch.isnan(first["labels"][1, 1])


def test_collate_of_single_items_matches_batched_read():
    cache = FakeCache(4)
    dataset = ClipDataset(cache, _table(4))
    stacked = collate_clips([dataset[i] for i in range(4)])
    batched = collate_clips(dataset.__getitems__(range(4)))
    assert torch.equal(stacked["clips"], batched["clips"])
    assert torch.equal(stacked["lengths"], batched["lengths"])
    assert torch.allclose(stacked["labels"], batched["labels"], equal_nan=True)


def test_dataset_refuses_table_without_pattern_columns():
    with pytest.raises(LabelsError, match="b_lines"):
        ClipDataset(FakeCache(1), pd.DataFrame({"clip_id": ["c0"], "a_lines": [1.0]}))


def test_to_model_input_normalises_gray_to_three_imagenet_channels():
    clips = torch.zeros((2, T, S, S, 1), dtype=torch.uint8)
    clips[0, 0, 3, 4, 0] = 255
    clips[1] = 128
    x = to_model_input(clips, "cpu")
    assert x.shape == (2, T, 3, S, S) and x.dtype == torch.float32 and x.is_contiguous()
    for c in range(3):
        assert x[0, 0, c, 3, 4].item() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rel=1e-6)
        assert x[0, 1, c, 0, 0].item() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c], rel=1e-6)
        assert x[1, 2, c, 5, 5].item() == pytest.approx((128 / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rel=1e-6)


def test_channels_last_input_has_same_values_and_nhwc_frame_view():
    clips = torch.randint(0, 256, (2, T, S, S, 1), dtype=torch.uint8)
    plain = to_model_input(clips, "cpu")
    fast = to_model_input(clips, "cpu", channels_last=True)
    assert torch.equal(plain, fast)
    frames = fast.view(2 * T, 3, S, S)  # what a frame encoder does; must not need a copy
    assert frames.is_contiguous(memory_format=torch.channels_last)


def test_to_model_input_rejects_float_or_rgb_input():
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(torch.zeros((1, T, S, S, 1)), "cpu")
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(torch.zeros((1, T, S, S, 3), dtype=torch.uint8), "cpu")


def _moving_clip(b=4):
    """A bright square that moves right by one pixel per frame, on a mid-gray background."""
    x = torch.full((b, T, 1, S, S), 0.3)
    for t in range(T):
        x[:, t, 0, 5:9, 3 + t : 7 + t] = 0.9
    return x


def test_augment_is_reproducible_from_generator_seed_and_varies_by_clip():
    aug = ClipAugment()
    x = _moving_clip()
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a[0], a[1])  # each clip draws its own transform


def test_flip_alone_mirrors_every_frame_of_selected_clips():
    aug = ClipAugment(flip_p=1.0, max_rotation_deg=0, brightness=0, contrast=0, gamma=0, blur_p=0, noise_p=0)
    x = _moving_clip(2)
    out = aug(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x.flip(-1), atol=1e-5)
    # With flip_p = 0.5 each clip draws one flip for all its frames: a clip comes out wholly
    # mirrored or wholly as it was, never with some frames mirrored (the square moves, so only
    # frame 3 is symmetric), and both kinds occur among 8 clips.
    aug = ClipAugment(flip_p=0.5, max_rotation_deg=0, brightness=0, contrast=0, gamma=0, blur_p=0, noise_p=0)
    x = _moving_clip(8)
    out = aug(x, torch.Generator().manual_seed(0))
    mirrored = [torch.allclose(out[i], x[i].flip(-1), atol=1e-5) for i in range(8)]
    unchanged = [torch.allclose(out[i], x[i], atol=1e-5) for i in range(8)]
    assert all(m != u for m, u in zip(mirrored, unchanged)), (mirrored, unchanged)
    assert 0 < sum(mirrored) < 8


def test_identity_settings_leave_clip_unchanged():
    aug = ClipAugment(flip_p=0, max_rotation_deg=0, brightness=0, contrast=0, gamma=0, blur_p=0, noise_p=0)
    x = _moving_clip(2)
    assert torch.allclose(aug(x, torch.Generator().manual_seed(0)), x, atol=1e-6)


def test_rotation_is_the_same_for_all_frames_of_a_clip():
    # A clip whose frames are identical must stay identical frame to frame after augmentation
    # (same angle, flip, intensity and blur for all its frames); noise off for exact equality.
    aug = ClipAugment(flip_p=0.5, max_rotation_deg=10, blur_p=1.0, noise_p=0)
    frame = torch.rand(1, 1, 1, S, S).expand(3, T, 1, S, S).contiguous()
    out = aug(frame, torch.Generator().manual_seed(1))
    assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6)
    assert not torch.allclose(out, frame, atol=1e-3)


def test_rotation_turns_content_by_at_most_ten_degrees():
    aug = ClipAugment(flip_p=0, max_rotation_deg=10, brightness=0, contrast=0, gamma=0, blur_p=0, noise_p=0)
    # a horizontal bar through the centre: after rotation its rows stay near the centre line
    x = torch.zeros(8, 1, 1, 64, 64)
    x[..., 31:33, :] = 1.0
    out = aug(x, torch.Generator().manual_seed(0))
    rows = torch.arange(64, dtype=torch.float32).view(1, 64)
    edge = out[:, 0, 0, :, 2]  # (clips, rows) near the left border: offset = tan(angle) * 30 px
    centre = (edge * rows).sum(1) / edge.sum(1).clamp(min=1e-6)
    offsets = (centre - 31.5).abs()
    assert offsets.max() <= math.tan(math.radians(10)) * 30 + 1.5
    assert offsets.max() > 1.0  # some clip was actually rotated


def test_paper_augmentations_only_flip_and_rotate():
    # A clip of one constant gray: flip and rotation move no intensity, they only bring in black
    # (zero padding) at the rotated corners and blend it at their edges. So every value is the
    # gray or darker and the middle keeps the gray exactly; brightness/contrast/gamma, blur or
    # noise would move the middle (the extended set does, with the same draws).
    gray = 0.6
    x = torch.full((16, T, 1, 32, 32), gray)
    out = clip_augment("paper")(x, torch.Generator().manual_seed(0))
    middle = out[..., 8:24, 8:24]
    assert torch.allclose(middle, torch.full_like(middle, gray), atol=1e-6)
    assert out.max() <= gray + 1e-6
    corners_black = (out[..., 0, 0] < gray - 0.1).float().mean()
    assert 0 < corners_black < 1, "some clips were rotated (black corners), not all (angles near 0)"
    extended = clip_augment("extended")(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(extended[..., 8:24, 8:24], middle, atol=1e-3)
    assert x.eq(gray).all(), "the caller's clip is left as it was"


def test_paper_augmentations_equal_flip_and_rotation_alone_on_any_clip():
    x = torch.rand(4, T, 1, S, S)
    flip_rotate_only = ClipAugment(brightness=0, contrast=0, gamma=0, blur_p=0, noise_p=0)
    paper = clip_augment("paper")
    assert paper.max_rotation_deg == 10 and paper.flip_p == 0.5
    assert torch.equal(paper(x, torch.Generator().manual_seed(5)), flip_rotate_only(x, torch.Generator().manual_seed(5)))
    with pytest.raises(ConfigError, match="unknown augmentations 'clahe'"):
        clip_augment("clahe")


def test_augment_keeps_padding_frames_zero():
    x = torch.rand(2, T, 1, S, S)
    lengths = torch.tensor([T, 3])
    x[1, 3:] = 0
    out = ClipAugment(brightness=0.5, noise_p=1.0)(x, torch.Generator().manual_seed(0), lengths=lengths)
    assert torch.count_nonzero(out[1, 3:]) == 0
    assert torch.count_nonzero(out[1, :3]) > 0


def test_noise_touches_only_the_clips_drawn_for_it():
    x = _moving_clip(b=8)
    noisy = ClipAugment(noise_p=0.5, noise_std=0.05)(x, torch.Generator().manual_seed(1))
    clean = ClipAugment(noise_p=0.5, noise_std=0.0)(x, torch.Generator().manual_seed(1))  # same draws
    changed = [not torch.equal(noisy[i], clean[i]) for i in range(8)]
    assert 0 < sum(changed) < 8  # some clips left exactly as they were, the others noised
    assert all((noisy[i] - clean[i]).abs().max() <= 0.5 for i in range(8) if changed[i])


def test_keep_freed_cpu_buffers_is_accepted_by_glibc():
    import platform

    from lusv.data.datasets import keep_freed_cpu_buffers

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_cpu_buffers() is True

    def resident_mib() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    x = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB, touched: over glibc's default mmap threshold
    in_use = resident_mib()
    del x
    # glibc's default unmaps such a buffer on free (the resident set drops by 64 MiB); kept, it stays
    assert in_use - resident_mib() < 16


def test_frame_mask():
    assert frame_mask(torch.tensor([3, 1]), 4).tolist() == [[True, True, True, False], [True, False, False, False]]


def test_augmented_model_input_requires_generator():
    clips = torch.zeros((1, T, S, S, 1), dtype=torch.uint8)
    with pytest.raises(ValueError, match="Generator"):
        to_model_input(clips, "cpu", augment=ClipAugment())
    x = to_model_input(clips, "cpu", augment=ClipAugment(), generator=torch.Generator().manual_seed(0))
    assert x.shape == (1, T, 3, S, S)


def test_normalize_matches_torchvision_normalize():
    from torchvision.transforms.v2.functional import normalize as tv_normalize

    gray = torch.rand(2, T, 1, S, S)
    ours = normalize(gray)
    theirs = tv_normalize(gray.expand(2, T, 3, S, S).reshape(-1, 3, S, S), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(ours.reshape(-1, 3, S, S), theirs, atol=1e-6)
