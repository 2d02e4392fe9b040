"""Attention scoring against per-frame truth on hand-made arrays with known answers."""

import matplotlib
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from lusv.explain import attention as explain  # noqa: E402
from lusv.errors import ConfigError  # noqa: E402
from lusv.data.patterns import PATTERNS  # noqa: E402

T = 6


def _normalised(weights, lengths):
    """Zero the padded frames and make each (clip, pattern, head) sum to 1 over real frames."""
    weights = np.array(weights, dtype=float)
    for i, n in enumerate(lengths):
        weights[i, ..., n:] = 0
    return weights / weights.sum(axis=-1, keepdims=True)


def _case():
    """Two clips of 6 frames; clip 1 has 4 real frames. Every pattern present in frames 0-1."""
    lengths = np.array([6, 4])
    truth = np.zeros((2, T, 4))
    truth[:, :2, :] = 1
    truth[1, 5, :] = 1  # junk in a padded frame: must be ignored
    labels = np.ones((2, 4))
    return lengths, truth, labels


def test_frame_attention_averages_heads_and_accepts_tensors():
    attention = np.random.default_rng(0).random((3, 4, 2, T))
    np.testing.assert_allclose(explain.frame_attention(attention), attention.mean(axis=2))
    np.testing.assert_allclose(explain.frame_attention(attention, reduce="max"), attention.max(axis=2))
    np.testing.assert_allclose(explain.frame_attention(torch.tensor(attention, requires_grad=True)),
                               attention.mean(axis=2), rtol=1e-6)
    per_frame = attention.mean(axis=2)
    np.testing.assert_array_equal(explain.frame_attention(per_frame), per_frame)  # already one weight per frame
    with pytest.raises(ConfigError, match="reduce"):
        explain.frame_attention(attention, reduce="median")
    with pytest.raises(ConfigError, match="shape"):
        explain.frame_attention(attention[0, 0])


def test_perfect_attention_scores_one_and_padding_is_ignored():
    lengths, truth, labels = _case()
    weights = np.zeros((2, 4, 3, T))
    weights[:, :, :, :2] = 1  # all heads on the present frames
    weights[:, :, :, 2:] = 0.01
    attention = _normalised(weights, lengths)
    scores = explain.score_attention_against_truth(attention, lengths, truth, labels)
    assert list(scores.pattern) == list(PATTERNS)
    assert (scores.n_scored == 2).all()
    np.testing.assert_allclose(scores.attention_auc, 1.0)
    np.testing.assert_allclose(scores.pointing_game, 1.0)
    # chance = fraction of present REAL frames: 2/6 and 2/4 (frame 5 of clip 1 is padding)
    np.testing.assert_allclose(scores.pointing_chance, (2 / 6 + 2 / 4) / 2)
    # peak: clip a has 6 real frames, 2 at weight 1 and 4 at 0.01 -> 6 / 2.04; clip b 4 / 2.02
    np.testing.assert_allclose(scores.peak, (6 / 2.04 + 4 / 2.02) / 2)
    per_clip = explain.attention_scores_per_clip(attention, lengths, truth, labels, clip_ids=["a", "b"])
    assert set(per_clip.n_frames[per_clip.clip_id == "b"]) == {4}


def test_uniform_attention_is_chance_and_inverted_attention_scores_zero():
    lengths, truth, labels = _case()
    uniform = _normalised(np.ones((2, 4, 2, T)), lengths)
    scores = explain.score_attention_against_truth(uniform, lengths, truth, labels)
    np.testing.assert_allclose(scores.attention_auc, 0.5)
    np.testing.assert_allclose(scores.pointing_game, scores.pointing_chance)  # ties split evenly
    np.testing.assert_allclose(scores.pointing_lift, 0.0, atol=1e-12)
    np.testing.assert_allclose(scores.peak, 1.0)  # uniform: max weight x real frames = 1

    inverted = np.ones((2, 4, T))
    inverted[:, :, :2] = 0.01
    scores = explain.score_attention_against_truth(_normalised(inverted, lengths), lengths, truth, labels)
    np.testing.assert_allclose(scores.attention_auc, 0.0)
    np.testing.assert_allclose(scores.pointing_game, 0.0)


def test_padding_would_change_the_answer_if_it_were_counted():
    # clip 1: pattern in all 4 real frames -> nothing to rank, so it is not scored;
    # its padded frames (absent, attention 0) must not make it scoreable.
    lengths = np.array([6, 4])
    truth = np.zeros((2, T, 4))
    truth[0, :3] = 1
    truth[1, :4] = 1
    attention = _normalised(np.ones((2, 4, 1, T)), lengths)
    attention[0, :, 0] = _normalised(np.array([[[3, 3, 3, 1, 1, 1]]]), [6])[0]
    scores = explain.score_attention_against_truth(attention, lengths, truth, np.ones((2, 4)))
    assert (scores.n_scored == 1).all() and (scores.n_positive == 2).all()
    np.testing.assert_allclose(scores.attention_auc, 1.0)
    # without lengths the padded frames count and clip 1 becomes scoreable (AUC 1 there too,
    # but the chance rate moves): the scores depend on lengths
    unpadded = explain.score_attention_against_truth(attention, None, truth, np.ones((2, 4)))
    assert (unpadded.n_scored == 2).all()


def test_negative_and_missing_labels_are_not_scored():
    lengths, truth, _ = _case()
    labels = np.array([[1, 0, np.nan, 1], [0, 0, np.nan, 1]])
    attention = _normalised(np.ones((2, 4, T)), lengths)
    scores = explain.score_attention_against_truth(attention, lengths, truth, labels).set_index("pattern")
    assert scores.n_scored.to_dict() == {"a_lines": 1, "b_lines": 0, "consolidation": 0, "pleural_effusion": 2}
    assert np.isnan(scores.loc["b_lines", "attention_auc"]) and np.isnan(scores.loc["b_lines", "pointing_game"])


def test_shared_attention_is_scored_against_every_pattern():
    lengths, truth, labels = _case()
    truth[:, :, 1] = 0
    truth[:, 2:4, 1] = 1  # B-lines in frames 2-3, the others in frames 0-1
    shared = np.zeros((2, 1, 2, T))
    shared[..., :2] = 1
    shared[..., 2:] = 0.1
    scores = explain.score_attention_against_truth(_normalised(shared, lengths), lengths, truth, labels)
    auc = scores.set_index("pattern").attention_auc
    assert auc["a_lines"] == 1.0 and auc["b_lines"] < 0.5


def test_p_value_detects_attention_better_than_chance():
    rng = np.random.default_rng(1)
    n = 20
    truth = np.zeros((n, T, 4))
    truth[:, :3] = 1
    attention = rng.random((n, 4, T)) + 2 * truth.transpose(0, 2, 1)
    scores = explain.score_attention_against_truth(attention, None, truth, np.ones((n, 4)))
    assert (scores.auc_p_value < 0.01).all()
    for p in range(4):  # mean and sample sd of the per-clip AUCs, computed here with sklearn
        aucs = [roc_auc_score(truth[i, :, p], attention[i, p]) for i in range(n)]
        assert scores.attention_auc[p] == pytest.approx(np.mean(aucs))
        assert scores.attention_auc_sd[p] == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)


def test_attention_auc_sd_is_the_sample_sd_of_the_per_clip_aucs():
    # clip 0 attends to the present frames only (AUC 1), clip 1 uniformly (AUC 0.5):
    # mean 0.75, sample sd sqrt(2 * 0.25**2 / 1) = 0.353553
    truth = np.zeros((2, T, 4))
    truth[:, :3] = 1
    attention = np.ones((2, 4, T)) / T
    attention[0, :, :3], attention[0, :, 3:] = 0.3, 0.1 / 3
    scores = explain.score_attention_against_truth(attention, None, truth, np.ones((2, 4)))
    np.testing.assert_allclose(scores.attention_auc, 0.75)
    np.testing.assert_allclose(scores.attention_auc_sd, 0.353553, atol=1e-6)


def test_shape_mismatches_are_config_errors():
    lengths, truth, labels = _case()
    attention = np.ones((2, 4, T)) / T
    with pytest.raises(ConfigError, match="frame_truth"):
        explain.score_attention_against_truth(attention, lengths, truth[:, :4], labels)
    with pytest.raises(ConfigError, match="clip_labels"):
        explain.score_attention_against_truth(attention, lengths, truth, labels[:, :3])
    with pytest.raises(ConfigError, match="lengths"):
        explain.score_attention_against_truth(attention, [7, 4], truth, labels)
    with pytest.raises(ConfigError, match="pattern sets"):
        explain.score_attention_against_truth(np.ones((2, 3, T)), lengths, truth, labels)


def test_attention_over_time_figure():
    attention = _normalised(np.random.default_rng(2).random((1, 4, 3, T)), [T])[0]
    truth = np.zeros((T, 4))
    truth[1:3, 1] = 1
    frames = np.zeros((T, 16, 16, 1), np.uint8)
    fig = explain.plot_attention_over_time(attention, frames=frames, frame_truth=truth,
                                           probabilities=[0.1, 0.9, 0.2, 0.3], length=5)
    curves = [ax for ax in fig.axes if ax.lines]
    assert len(curves) == 4 and len(fig.axes) == 4 + 5  # 4 patterns + 5 thumbnails (length 5)
    assert curves[1].get_title(loc="left") == "B-lines   p = 0.90"
    assert len(curves[1].patches) == 1 and not curves[0].patches  # shaded only where present
    mean_line = curves[0].lines[3]  # 3 head lines, then the mean
    np.testing.assert_allclose(mean_line.get_ydata(), attention[0, :, :5].mean(axis=0))
    plt.close(fig)
    fig = explain.plot_attention_over_time(attention.mean(axis=1))  # (4, T), no extras
    assert len(fig.axes) == 4
    plt.close(fig)
    with pytest.raises(ConfigError, match=r"must be \(P, H, T\) or \(P, T\) with P in \(1, 4\), got \(3, "):
        explain.plot_attention_over_time(np.ones((3, T)))


def test_attention_summary_figure_shows_the_scores():
    lengths, truth, labels = _case()
    scores = explain.score_attention_against_truth(_normalised(np.ones((2, 4, T)), lengths), lengths, truth, labels)
    fig = explain.plot_attention_summary(scores)
    left, right = fig.axes
    heights = [patch.get_height() for patch in left.patches]
    np.testing.assert_allclose(heights, scores.attention_auc)
    assert len(right.patches) == 8
    plt.close(fig)
    with pytest.raises(ConfigError, match="lacks"):
        explain.plot_attention_summary(scores.drop(columns="pointing_game"))
