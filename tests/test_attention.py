"""Pattern attention pooling: vectorised result equals a plain loop; masking is exact and NaN-free."""

import math

import pytest
import torch

from lusv.errors import ConfigError
from lusv.models.attention import AttentionPool, lengths_to_mask, masked_mean


def loop_reference(h, queries, lengths):
    """Per clip, per query set, per head: score, softmax over real frames, weighted sum."""
    batch, frames, features = h.shape
    sets, heads, dim = queries.shape
    pooled = torch.zeros(batch, sets, features)
    attention = torch.zeros(batch, sets, heads, frames)
    for b in range(batch):
        n = int(lengths[b])
        for p in range(sets):
            for k in range(heads):
                slice_ = h[b, :n, k * dim : (k + 1) * dim]  # (n, dim)
                scores = torch.stack([torch.dot(slice_[t], queries[p, k]) for t in range(n)]) / math.sqrt(dim)
                weights = torch.exp(scores - scores.max())
                weights = weights / weights.sum()
                attention[b, p, k, :n] = weights
                pooled[b, p, k * dim : (k + 1) * dim] = (weights[:, None] * slice_).sum(0)
    return pooled, attention


@pytest.mark.parametrize("num_queries", [4, 1])
def test_vectorised_attention_equals_loop_for_unequal_lengths(num_queries):
    pool = AttentionPool(feature_dim=32, num_heads=8, num_queries=num_queries)
    h = torch.randn(3, 7, 32)
    lengths = torch.tensor([7, 4, 2])
    pooled, attention = pool(h, lengths_to_mask(lengths, 7, 3, h.device))
    ref_pooled, ref_attention = loop_reference(h, pool.queries.detach(), lengths)
    assert pooled.shape == (3, num_queries, 32) and attention.shape == (3, num_queries, 8, 7)
    torch.testing.assert_close(attention, ref_attention, atol=1e-6, rtol=0)
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-6, rtol=0)


def test_attention_sums_to_one_on_real_frames_and_is_exactly_zero_on_padding():
    pool = AttentionPool(feature_dim=16, num_heads=4, num_queries=4)
    lengths = torch.tensor([5, 3])
    mask = lengths_to_mask(lengths, 5, 2, "cpu")
    _, attention = pool(torch.randn(2, 5, 16) * 10, mask)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 4, 4))
    assert torch.all(attention[1, :, :, 3:] == 0)
    assert torch.all(attention[1, :, :, :3] > 0)


def test_padded_frame_content_does_not_change_the_result():
    pool = AttentionPool(feature_dim=16, num_heads=2, num_queries=4)
    h = torch.randn(1, 6, 16)
    mask = lengths_to_mask(torch.tensor([3]), 6, 1, "cpu")
    changed = h.clone()
    changed[:, 3:] = 1e4  # huge values in padding must not leak into the pooled vector
    torch.testing.assert_close(pool(h, mask)[0], pool(changed, mask)[0])


def test_all_masked_clip_gives_zeros_not_nan():
    pool = AttentionPool(feature_dim=16, num_heads=4, num_queries=4)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    pooled, attention = pool(torch.randn(2, 3, 16), mask)
    assert torch.isfinite(pooled).all() and torch.isfinite(attention).all()
    assert torch.all(attention[1] == 0) and torch.all(pooled[1] == 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_masking_is_safe_in_half_precision(dtype):
    pool = AttentionPool(feature_dim=16, num_heads=4, num_queries=4).to(dtype)
    mask = lengths_to_mask(torch.tensor([4, 1]), 4, 2, "cpu")
    pooled, attention = pool(torch.randn(2, 4, 16, dtype=dtype) * 100, mask)
    assert pooled.dtype == dtype and torch.isfinite(pooled).all()
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 4, 4))
    assert torch.all(attention[1, :, :, 1:] == 0)


def test_heads_must_divide_features():
    with pytest.raises(ConfigError, match="num_heads=5 must divide"):
        AttentionPool(feature_dim=32, num_heads=5)


def test_lengths_are_validated():
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        lengths_to_mask(torch.tensor([5, 2]), 4, 2, "cpu")
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        lengths_to_mask(torch.tensor([0, 2]), 4, 2, "cpu")
    with pytest.raises(ValueError, match="shape"):
        lengths_to_mask(torch.tensor([2]), 4, 2, "cpu")
    assert lengths_to_mask(None, 3, 2, "cpu").all()


def test_masked_mean_ignores_padding():
    h = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(masked_mean(h, mask), torch.tensor([[2.0]]))
