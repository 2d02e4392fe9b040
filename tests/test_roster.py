"""The paper's Table 1 roster: every model registered, counted exactly in the paper setting
(30 frames of 256 x 256, DenseNet-161 where the paper used it) on the meta device, with its
multiply-accumulates beside the paper's Table 4, and trainable at the quick profile's size."""

import pytest
import torch

from lusv.errors import ConfigError
from lusv.models import build_model, list_models
from lusv.models.cost import count_macs, model_cost
from lusv.report.paper import published_table

PAPER_SETTING = {"weights": "random", "num_frames": 30, "image_size": 256}

# key -> (model, options, parameters, GMAC per 30 x 256 x 256 clip). Parameter counts of the
# LUV-Net family, USVN and C3D are the paper's; the others are torchvision's networks with a
# 4-way head (checked against torchvision's own 400-way models below).
ROSTER = {
    "frame_based": ("frame_based", {}, 26_480_836, 302.72),
    "mvit_b": ("mvit_b", {}, 36_306_148, 70.60),
    "swin_b": ("swin_b", {}, 87_643_084, 140.67),
    "c3d": ("c3d", {}, 214_327_044, 369.14),
    "r2plus1d": ("r2plus1d", {}, 31_302_177, 401.29),
    "r2plus1d_34": ("r2plus1d_34", {}, 61_628_513, 749.18),
    "cnn_lstm": ("cnn_lstm", {}, 32_048_708, 302.89),
    "usvn": ("usvn", {}, 26_483_044, 302.72),
    "luvnet_resnet50": ("luvnet", {"encoder": "resnet50"}, 121_046_596, 161.83),
    "luvnet": ("luvnet", {}, 136_222_884, 304.67),
    "luvnet_random_init": ("luvnet", {"encoder": "densenet161"}, 136_222_884, 304.67),
    "luvnet_no_temporal": ("luvnet_no_temporal", {}, 62_677_188, 302.76),
}


def test_every_table_1_model_is_registered():
    assert {"frame_based", "mvit_b", "swin_b", "c3d", "r2plus1d_34", "cnn_lstm", "usvn", "luvnet"} <= set(list_models())


def test_every_row_of_the_papers_table_1_is_a_named_configuration_of_the_right_model():
    from lusv.models import roster

    assert list(roster.TABLE_1) == published_table(1)["key"].tolist(), "the published rows, in their order"
    for key in roster.TABLE_1:
        name, options, *_ = ROSTER[key]
        entry = roster.configuration(key)
        assert entry.pop("model") == name, key
        assert {k: v for k, v in entry.items() if k != "weights"} == options, key
    assert roster.configuration("luvnet_resnet50")["weights"] == "imagenet"  # the paper's dagger
    assert roster.configuration("luvnet_random_init")["weights"] == "random"  # "no pretraining"
    with pytest.raises(ConfigError, match="unknown model configuration 'luvnet_resnet51'"):
        roster.configuration("luvnet_resnet51")


def test_paper_profile_trains_the_whole_table_1_and_quick_a_cpu_subset():
    from lusv.models import roster
    from lusv.report.names import model_name

    assert set(roster.baselines("paper")) | {"luvnet"} == set(published_table(1)["key"])  # notebook 02 trains luvnet
    quick = roster.baselines("quick")
    assert {"usvn", "c3d", "r2plus1d", "cnn_lstm", "frame_based"} == set(quick)
    assert not {"mvit_b", "swin_b"} & set(quick), "the video transformers are left to the paper profile"
    for key in roster.CONFIGURATIONS:
        assert model_name(key) != key, f"{key} has a reader's name in lusv.report.names"
    with pytest.raises(ConfigError, match="no roster for profile 'fast'"):
        roster.baselines("fast")


def test_pretrained_roster_trains_every_2d_comparator_and_the_probe_where_the_encoder_is_frozen():
    from lusv.models import roster

    assert set(roster.baselines("pretrained")) == {"usvn", "cnn_lstm", "frame_based"}
    assert {"c3d", "r2plus1d"} <= set(roster.opt_in("pretrained")), "the 3-D CNNs from scratch: opt-in (--models)"
    assert roster.with_linear_probe("pretrained") is True  # heads on frozen Lite0 features
    assert roster.with_linear_probe("quick") is False  # the tiny encoder trains: no fixed features to probe
    assert roster.with_linear_probe("paper") is False
    assert roster.with_linear_probe("pretrained", False) is False
    assert roster.with_linear_probe("quick", True) is True


@pytest.mark.parametrize("key", sorted(ROSTER))
def test_parameters_and_macs_in_the_paper_setting(key):
    name, options, parameters, gmac = ROSTER[key]
    cost = model_cost(lambda: build_model(name, **PAPER_SETTING, **options), 30, 256)
    assert cost.parameters == parameters
    assert cost.gmac == pytest.approx(gmac, abs=0.005)


def test_macs_equal_the_papers_table_4_where_the_architecture_is_the_same():
    paper = published_table(4).set_index("key")
    for key in ("luvnet", "usvn", "c3d", "cnn_lstm"):
        assert ROSTER[key][3] == pytest.approx(paper.loc[key, "gmac"], rel=5e-4), key
    assert ROSTER["luvnet_resnet50"][3] == pytest.approx(paper.loc["luvnet_resnet50", "gmac"], rel=0.011)
    assert ROSTER["luvnet"][2] / 1e6 == pytest.approx(paper.loc["luvnet", "params_m"], abs=0.25)


def test_video_transformers_and_r2plus1d_34_are_torchvisions_networks_with_a_4_way_head():
    from torchvision.models.video import VideoResNet, mvit_v1_b, swin3d_b
    from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem

    def with_4_way_head(net, features):  # torchvision's 400-way Kinetics head replaced by ours
        return sum(p.numel() for p in net.parameters()) - (features * 400 + 400) + (features * 4 + 4)

    with torch.device("meta"):
        assert with_4_way_head(mvit_v1_b(), 768) == ROSTER["mvit_b"][2]
        assert with_4_way_head(swin3d_b(), 1024) == ROSTER["swin_b"][2]
        r34 = VideoResNet(BasicBlock, [Conv2Plus1D] * 4, [3, 4, 6, 3], R2Plus1dStem)
        assert with_4_way_head(r34, 512) == ROSTER["r2plus1d_34"][2]


@pytest.mark.parametrize("name", ["frame_based", "mvit_b", "swin_b", "r2plus1d_34"])
def test_new_roster_models_train_at_the_quick_size(name):
    torch.manual_seed(0)
    model = build_model(name, weights="random", encoder="tiny", width=0.125, num_frames=8, image_size=32)
    clips = torch.randn(2, 8, 3, 32, 32)
    out = model(clips, lengths=torch.tensor([8, 5]))
    assert out["logits"].shape == (2, 4)
    out["logits"].sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_frame_based_pools_the_logits_of_real_frames_only():
    torch.manual_seed(0)
    model = build_model("frame_based", weights="random", encoder="tiny").eval()
    clips = torch.randn(1, 6, 3, 32, 32)
    with torch.no_grad():
        full = model(clips, lengths=torch.tensor([4]))
        frame_logits = full["frame_logits"][0, :4]
        np_mean = frame_logits.mean(dim=0)
        clips[:, 4:] = 100.0  # padding must not matter
        padded = model(clips, lengths=torch.tensor([4]))
    torch.testing.assert_close(full["logits"][0], np_mean)
    torch.testing.assert_close(padded["logits"], full["logits"])
    with torch.no_grad():
        maxed = build_model("frame_based", weights="random", encoder="tiny", frame_pooling="max").eval()
        maxed.load_state_dict(model.state_dict())
        out = maxed(clips, lengths=torch.tensor([4]))
    torch.testing.assert_close(out["logits"][0], out["frame_logits"][0, :4].amax(dim=0))


def test_mac_count_of_a_hand_countable_model():
    # one 1x1 "encoder" conv (3 -> 2 channels) on 4 x 4 frames: 3 * 2 * 16 = 96 MACs per frame
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1, bias=False)

        def forward(self, x):
            return self.conv(x.flatten(0, 1))

    with torch.device("meta"):
        assert count_macs(Tiny(), num_frames=5, image_size=4) * 1e9 == pytest.approx(5 * 96)


def test_table_4_beside_the_paper_has_every_roster_model_and_the_differences():
    from lusv.report.paper import table4_beside_paper

    table = table4_beside_paper().set_index("key")
    assert sorted(table.index) == sorted(ROSTER)
    assert list(table.index[:8]) == list(published_table(4)["key"]), "the paper's rows first, in its order"
    for key, (_, _, parameters, gmac) in ROSTER.items():
        assert table.loc[key, "params_m_lusv"] == pytest.approx(parameters / 1e6)
        assert table.loc[key, "gmac_lusv"] == pytest.approx(gmac, abs=0.005)
    assert table.loc["luvnet", "params_m_diff"] == pytest.approx(136.222884 - 135.99)
    assert table.loc["swin_b", "gmac_diff"] == pytest.approx(140.67 - 200.65, abs=0.005)
    assert table.loc["c3d", "gmac_diff"] == pytest.approx(0.0, abs=0.005)
    assert table.loc[["frame_based", "r2plus1d", "luvnet_no_temporal"], "params_m_paper"].isna().all()
