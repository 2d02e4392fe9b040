"""The paper's Appendix B attention figure (head-summed, min-max normalised, top-3 frames) and the
Grad-CAM maps of lusv.explain.saliency, on hand-known arrays and a tiny model."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from lusv.errors import ConfigError
from lusv.explain.attention import appendix_b_curves, plot_appendix_b, top_frames
from lusv.models import build_model
from lusv.explain.saliency import grad_cam


def test_curves_sum_heads_then_min_max_over_real_frames():
    # one pattern, two heads, five frames, the fifth is padding
    attention = np.array([[[0.1, 0.2, 0.3, 0.4, 0.0], [0.3, 0.3, 0.1, 0.3, 0.0]]])
    curves = appendix_b_curves(attention, length=4)
    # head sums 0.4, 0.5, 0.4, 0.7 -> (x - 0.4) / 0.3
    np.testing.assert_allclose(curves, [[0.0, 1 / 3, 0.0, 1.0]])
    flat = appendix_b_curves(np.full((1, 2, 3), 1 / 3))
    np.testing.assert_array_equal(flat, np.zeros((1, 3)))
    with pytest.raises(ConfigError, match="length must be in 1..5"):
        appendix_b_curves(attention, length=6)


def test_top_three_frames_highest_first_ties_to_the_earlier_frame():
    curves = np.array([[0.2, 1.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0, 0.9]])
    np.testing.assert_array_equal(top_frames(curves, 3), [[1, 2, 3], [3, 4, 0]])
    assert top_frames(curves[:, :2], 3).shape == (2, 2)


def test_appendix_b_figure_marks_the_top_frames_and_shows_them(tmp_path):
    rng = np.random.default_rng(0)
    attention = rng.random((4, 2, 6))
    frames = rng.integers(0, 255, (6, 16, 16, 1), dtype=np.uint8)
    truth = np.zeros((6, 4))
    truth[2:4, 1] = 1
    saliency = {p: rng.random((3, 16, 16)) for p in range(4)}
    fig = plot_appendix_b(attention, frames, frame_truth=truth, saliency=saliency, title="clip")
    titles = [ax.get_title() for ax in fig.axes]
    expected = [f"{rank}. frame {i}" for rank, i in enumerate(top_frames(appendix_b_curves(attention), 3)[0], start=1)]
    assert titles[1:4] == expected  # the first pattern's thumbnails are its top-3 frames, in rank order
    assert [ax.get_xlabel() for ax in fig.axes].count("frame") == 1, "the frame axis is labelled once, at the bottom"
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 3
    fig.savefig(tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 10_000


def test_grad_cam_gives_one_non_constant_map_per_requested_frame():
    torch.manual_seed(0)
    model = build_model("luvnet", encoder="tiny", weights="random", num_heads=8, kernel_size=3)
    clip = torch.randn(5, 3, 32, 32)
    maps = grad_cam(model, clip, pattern=1, frames=[0, 3], length=4)
    assert maps.shape == (2, 32, 32)
    assert maps.min() >= 0 and maps.max() == pytest.approx(1.0)
    assert maps[0].std() > 0.01  # not a constant map


def test_grad_cam_refuses_models_without_a_frame_encoder():
    model = build_model("r2plus1d", weights="random", width=0.125)
    with pytest.raises(ConfigError, match="no 2-D frame encoder"):
        grad_cam(model, torch.randn(4, 3, 32, 32), pattern=0, frames=[0])
