"""Models: published parameter counts, shapes, masking by lengths, gradients, weights policy."""

import logging

import pytest
import torch

from lusv.errors import CheckpointError, ConfigError
from lusv.infra.io import torch_save
from lusv.models import (
    MODEL_NAMES,
    build_model,
    count_parameters,
    frame_models,
    list_models,
    model_defaults,
    model_options,
)
from lusv.models.c3d import C3D
from lusv.models.encoders import _remap_densenet_keys, build_encoder, hub_cache_file
from lusv.models.luvnet import TemporalConv, same_conv_as_one_matmul
from lusv.models.registry import register_model

FRAME_MODELS = [
    ("luvnet", {}),
    ("luvnet_no_temporal", {}),
    ("usvn", {"pooling": "attention"}),
    ("usvn", {"pooling": "mean"}),
    ("usvn", {"pooling": "max"}),
    ("cnn_lstm", {}),
]


def tiny(name, **cfg):
    return build_model(name, encoder="tiny", weights="random", **cfg)


# --- published sizes (DenseNet-161, H = 8), built on the meta device: shapes only, no memory ---


@pytest.mark.parametrize(
    "name, cfg, expected",
    [
        ("luvnet", {"kernel_size": 13}, 136_222_884),
        ("luvnet", {"kernel_size": 5}, 97_220_772),
        ("luvnet_no_temporal", {}, 62_677_188),
        ("usvn", {}, 26_483_044),
        ("c3d", {"num_frames": 30, "image_size": 256}, 214_327_044),
    ],
)
def test_parameter_counts_match_the_paper(name, cfg, expected):
    with torch.device("meta"):
        model = build_model(name, weights="random", num_heads=8, **cfg)
    assert count_parameters(model) == expected


def test_meta_device_counts_equal_real_counts_and_densenet_is_features_only():
    real = build_model("usvn", weights="random")
    with torch.device("meta"):
        meta = build_model("usvn", weights="random")
    assert count_parameters(real) == count_parameters(meta) == 26_483_044
    # The paper's 26,472,000 is torchvision's DenseNet-161 without its 1000-class classifier.
    assert count_parameters(real.encoder) == 26_472_000
    assert real.encoder.feature_dim == 2208
    with torch.no_grad():
        features = real.encoder.encode_clips(torch.randn(1, 2, 3, 32, 32))
    assert features.shape == (1, 2, 2208) and (features >= 0).all()  # ReLU before pooling


def test_c3d_fc_input_is_computed_from_clip_size():
    with torch.device("meta"):
        assert C3D(30, 256).fc_input == 512 * 1 * 9 * 9  # classic C3D at the paper's size
        assert C3D(16, 32).fc_input == 512 * 1 * 2 * 2
        assert C3D(32, 112).fc_input == 512 * 2 * 4 * 4
    with pytest.raises(ConfigError, match="num_frames >= 16"):
        C3D(8, 64)
    with pytest.raises(ConfigError, match="needs num_frames and image_size"):
        build_model("c3d", weights="random")


# --- forward / backward on tiny clips ---


def assert_finite_gradients(model):
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(param.grad).all(), f"{name} has non-finite gradient"


@pytest.mark.parametrize("name, cfg", FRAME_MODELS)
def test_frame_models_forward_backward_and_attention_masking(name, cfg):
    model = tiny(name, **cfg)
    x = torch.randn(2, 8, 3, 64, 64)
    lengths = torch.tensor([8, 5])
    out = model(x, lengths)
    assert out["logits"].shape == (2, 4)
    has_attention = name.startswith("luvnet") or cfg.get("pooling") == "attention"
    assert ("attention" in out) == has_attention
    if has_attention:
        attention = out["attention"]
        assert attention.shape == ((2, 4, 8, 8) if name.startswith("luvnet") else (2, 1, 8, 8))
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]))
        assert torch.all(attention[1, ..., 5:] == 0)
    out["logits"].sum().backward()
    assert_finite_gradients(model)


# Registered models that take ``lengths`` and ignore them by design (their modules say so): a 3-D
# CNN has no notion of clip length and sees a short clip's zero padding, as in the paper. Every
# other model, including one registered tomorrow, must pass the padding property below.
IGNORE_LENGTHS = {"c3d": "3-D CNN", "r2plus1d": "3-D CNN", "r2plus1d_34": "3-D CNN"}
TINY = {"encoder": "tiny", "weights": "random", "width": 0.125, "num_frames": 8, "image_size": 32}


def _registry_variants():
    """Every registered model that reads ``lengths``, once per value of each of its choice
    options (usvn's pooling, frame_based's frame_pooling, ...), taken from the registry."""
    from lusv.models.registry import _REGISTRY

    variants = []
    for name in list_models():
        if name in IGNORE_LENGTHS:
            continue
        choices = _REGISTRY[name].choices
        options = [{option: value} for option, values in choices.items() for value in values] or [{}]
        variants += [pytest.param(name, cfg, id="-".join([name, *map(str, cfg.values())])) for cfg in options]
    return variants


def test_models_excused_from_the_padding_property_are_registered_3d_cnns():
    assert set(IGNORE_LENGTHS) <= set(list_models()) and not set(IGNORE_LENGTHS) & set(frame_models())


@pytest.mark.parametrize("name, cfg", _registry_variants())
def test_padded_clip_gives_same_output_as_the_clip_alone(name, cfg):
    """Padding is invisible: in a batch with a shorter clip, that clip's logits equal a run on
    its real frames only, whatever the padded frames contain (pooling, frame sampling, packing)."""
    torch.manual_seed(0)
    model = build_model(name, **TINY, **cfg).eval()
    x = torch.randn(2, 8, 3, 32, 32)
    x[1, 5:] = 50.0  # garbage in the padding
    with torch.no_grad():
        batched = model(x, torch.tensor([8, 5]))
        alone = model(x[1:, :5], None)
        full = model(x[:1], None)
    torch.testing.assert_close(batched["logits"][1], alone["logits"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched["logits"][0], full["logits"][0], atol=1e-5, rtol=1e-5)
    if "attention" in batched:
        torch.testing.assert_close(batched["attention"][1, ..., :5], alone["attention"][0], atol=1e-6, rtol=1e-5)


def test_lengths_none_means_all_frames_real():
    model = tiny("luvnet").eval()
    x = torch.randn(2, 6, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["logits"], model(x, torch.tensor([6, 6]))["logits"])


def test_cnn_lstm_runs_over_time_with_batch_first():
    model = tiny("cnn_lstm", hidden_size=16).eval()
    assert model.lstm.hidden_size == 16
    x = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        batched = model(x)["logits"]
        alone = model(x[1:])["logits"]  # batch_first: clips never mix, whatever the batch
        reversed_frames = model(x.flip(1))["logits"]  # a recurrence over time sees frame order
    torch.testing.assert_close(batched[1:], alone, atol=1e-5, rtol=1e-5)
    assert (batched - reversed_frames).abs().min() > 1e-6
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        model(torch.randn(2, 4, 3, 32, 32), torch.tensor([4, 0]))


# --- the LUV-Net temporal branch against a direct computation ---


def temporal_branch_by_loops(conv_weight, norm, h, lengths):
    """Conv1d over time with PyTorch's 'same' zero padding (left (K - 1) // 2, the rest on the
    right: an even K pads one more frame after the clip than before it), padded frames zeroed,
    BatchNorm in eval mode (running statistics), ReLU, mean over the real frames; explicit loops."""
    h, w = h.double(), conv_weight.double()
    batch, frames, features = h.shape
    kernel = w.shape[-1]
    left = (kernel - 1) // 2
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    out = torch.zeros(batch, features, dtype=torch.float64)
    for b in range(batch):
        real = [t < lengths[b] for t in range(frames)]
        for t in range(lengths[b]):
            conv = torch.zeros(features, dtype=torch.float64)
            for k in range(kernel):
                source = t + k - left
                if 0 <= source < frames and real[source]:
                    conv += w[:, :, k] @ h[b, source]
            normed = (conv - norm.running_mean.double()) * scale + norm.bias.double()
            out[b] += torch.relu(normed) / lengths[b]
    return out


@pytest.mark.parametrize("kernel_size", [1, 3, 4, 6])
def test_temporal_branch_equals_conv_bn_relu_mean_computed_by_loops(kernel_size):
    features, frames = 5, 7
    branch = TemporalConv(features, kernel_size).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics: BN and ReLU do not commute
        branch.norm.running_mean.uniform_(-0.5, 0.5)
        branch.norm.running_var.uniform_(0.5, 2.0)
        branch.norm.weight.uniform_(0.5, 1.5)
        branch.norm.bias.uniform_(-0.5, 0.5)
    h = torch.randn(2, frames, features)
    h[1, 4:] = 50.0  # padding frames: ignored
    lengths = [frames, 4]
    mask = torch.arange(frames) < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        out = branch(h, mask)
    expected = temporal_branch_by_loops(branch.conv.weight, branch.norm, h, lengths)
    assert out.shape == (2, features)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    assert (out > 0).any()  # not a branch that ReLU silenced entirely


@pytest.mark.parametrize("kernel_size, frames", [(1, 5), (4, 7), (13, 16), (13, 4)])
def test_cpu_temporal_convolution_and_its_gradients_equal_pytorchs_conv1d(kernel_size, frames):
    # The CPU path computes the "same" convolution as one matrix product of the frame windows;
    # the reference is torch's own Conv1d (oneDNN), an independent implementation, in float64.
    torch.manual_seed(kernel_size)
    conv = torch.nn.Conv1d(6, 5, kernel_size, padding="same", bias=False).double()
    h = torch.randn(3, frames, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 5, frames, dtype=torch.float64)
    expected = conv(h.transpose(1, 2))
    expected_grads = torch.autograd.grad(expected, (h, conv.weight), upstream)
    out = same_conv_as_one_matmul(h, conv.weight)
    grads = torch.autograd.grad(out, (h, conv.weight), upstream)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("kernel_size", [4, 13])
def test_temporal_branch_feeds_the_logits_and_makes_them_depend_on_frame_order(kernel_size):
    model = tiny("luvnet", kernel_size=kernel_size).eval()
    ablation = tiny("luvnet_no_temporal").eval()
    x = torch.randn(2, 6, 3, 32, 32)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        logits = model(x)["logits"]
        h = model.encoder.encode_clips(x)
        mask = torch.ones(2, 6, dtype=torch.bool)
        spatial, _ = model.spatial(h, mask)
        temporal = model.temporal(h, mask)
        shuffled = model(x[:, order])["logits"]
        ablation_logits, ablation_shuffled = ablation(x)["logits"], ablation(x[:, order])["logits"]
    # logits = classifier(spatial + temporal), and the temporal term matters
    torch.testing.assert_close(logits, model.classifier(spatial + temporal), atol=1e-5, rtol=1e-5)
    assert (model.classifier(spatial) - logits).abs().max() > 1e-4
    # attention pooling ignores frame order; only the temporal convolution sees it
    torch.testing.assert_close(ablation_shuffled, ablation_logits, atol=1e-5, rtol=1e-5)
    assert (shuffled - logits).abs().max() > 1e-4


def test_even_kernel_keeps_every_frame_and_padding_invisible():
    model = tiny("luvnet", kernel_size=4).eval()
    x = torch.randn(2, 8, 3, 32, 32)
    x[1, 5:] = 50.0
    with torch.no_grad():
        batched = model(x, torch.tensor([8, 5]))
        alone = model(x[1:, :5], None)
    assert batched["logits"].shape == (2, 4) and batched["attention"].shape == (2, 4, 8, 8)
    torch.testing.assert_close(batched["logits"][1], alone["logits"][0], atol=1e-5, rtol=1e-5)


def test_c3d_forward_backward_on_smallest_clip():
    model = build_model("c3d", weights="random", num_frames=16, image_size=32)
    out = model(torch.randn(1, 16, 3, 32, 32), torch.tensor([10]))
    assert out["logits"].shape == (1, 4) and "attention" not in out
    out["logits"].sum().backward()
    assert_finite_gradients(model)
    with pytest.raises(ValueError, match="built for clips"):
        model(torch.randn(1, 8, 3, 32, 32))


def test_r2plus1d_forward_backward():
    model = build_model("r2plus1d", weights="random")
    assert count_parameters(model) == 31_302_177  # torchvision r2plus1d_18 with a 4-way head
    out = model(torch.randn(2, 8, 3, 32, 32), None)
    assert out["logits"].shape == (2, 4)
    out["logits"].sum().backward()
    assert_finite_gradients(model)


def test_channels_last_and_bf16_autocast_give_the_same_logits():
    reference = tiny("luvnet").eval()
    fast = tiny("luvnet", channels_last=True).eval()
    fast.load_state_dict(reference.state_dict())
    assert fast.encoder.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 3, 32, 32)
    lengths = torch.tensor([8, 3])
    with torch.no_grad():
        expected = reference(x, lengths)["logits"]
        torch.testing.assert_close(fast(x, lengths)["logits"], expected, atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = reference(x, lengths)
    assert torch.isfinite(out["logits"]).all()
    torch.testing.assert_close(out["logits"].float(), expected, atol=0.1, rtol=0.1)
    assert torch.all(out["attention"][1, ..., 3:] == 0)


# --- configuration errors ---


def test_unknown_names_and_options_raise_listing_the_valid_ones():
    with pytest.raises(ConfigError, match="valid models: luvnet, luvnet_no_temporal, usvn"):
        build_model("luvnet2")
    with pytest.raises(ConfigError, match="valid encoders: densenet161, resnet18"):
        build_model("luvnet", encoder="vgg")
    with pytest.raises(ConfigError, match="valid options: encoder, weights"):
        build_model("luvnet", encoder="tiny", weights="random", num_head=8)
    with pytest.raises(ConfigError, match="valid: attention, mean, max"):
        build_model("usvn", encoder="tiny", weights="random", pooling="sum")
    with pytest.raises(ConfigError, match="must divide"):
        tiny("luvnet", num_heads=5)
    assert set(MODEL_NAMES) == {"luvnet", "luvnet_no_temporal", "usvn", "c3d", "r2plus1d", "r2plus1d_34", "cnn_lstm",
                                "frame_based", "mvit_b", "swin_b"}
    assert model_defaults("luvnet")["encoder"] == "densenet161" and model_defaults("luvnet")["num_heads"] == 8


def test_unused_shared_options_are_accepted():
    model = build_model("usvn", encoder="tiny", weights="random", kernel_size=5, num_frames=8, image_size=32)
    assert model.pooling == "attention"


# --- the registry: the builders' keyword defaults are the only table of options ---


def test_registry_reads_each_models_options_and_defaults_from_its_builder():
    assert list_models() == MODEL_NAMES == ("luvnet", "luvnet_no_temporal", "usvn", "c3d", "r2plus1d", "r2plus1d_34",
                                            "cnn_lstm", "frame_based", "mvit_b", "swin_b")
    assert model_defaults("luvnet") == {
        "encoder": "densenet161", "weights": "imagenet", "strict_weights": False,
        "num_heads": 8, "kernel_size": 13, "dropout": 0.5,
    }  # fmt: skip
    assert model_defaults("c3d") == {
        "num_frames": None, "image_size": None, "weights": "imagenet", "strict_weights": False,
        "dropout": 0.5, "width": 1.0,
    }  # fmt: skip
    assert model_defaults("cnn_lstm")["hidden_size"] == 512 and model_defaults("usvn")["pooling"] == "attention"
    assert set(model_options()) == {
        "encoder", "weights", "strict_weights", "num_heads", "kernel_size", "pooling", "num_frames",
        "image_size", "dropout", "hidden_size", "width", "frame_pooling", "channels_last",
    }  # fmt: skip
    with pytest.raises(ConfigError, match="valid models: luvnet, "):
        model_defaults("luvnet2")


def test_an_option_shared_by_several_models_has_one_default():
    """One run configuration builds any model, so an option left out must mean the same for all."""
    defaults: dict[str, set] = {}
    for name in list_models():
        for option, default in model_defaults(name).items():
            defaults.setdefault(option, set()).add(default)
    assert {option: values for option, values in defaults.items() if len(values) > 1} == {}


def test_a_run_builds_its_model_from_exactly_the_fields_that_shape_it():
    """One list of model options, the registry's: a run passes each of its fields that the registry
    takes (typed in here: the fields that change which network is built), and nothing else."""
    from lusv.config import PROFILES, params_for
    from lusv.inference import model_config

    shaping = {"encoder", "weights", "num_heads", "kernel_size", "pooling", "frame_pooling", "dropout", "width",
               "num_frames", "image_size", "channels_last"}
    for profile in PROFILES:
        config = model_config(params_for(profile, kernel_size=7, num_heads=2))
        assert set(config) == shaping
        assert (config["kernel_size"], config["num_heads"]) == (7, 2)


def test_a_builder_must_be_registered_once_and_default_every_option():
    with pytest.raises(ValueError, match="'luvnet' is registered twice"):
        register_model("luvnet")(lambda encoder, num_heads=8: None)
    with pytest.raises(ValueError, match=r"every option needs a default \(\['depth'\]\)"):
        register_model("no_default")(lambda encoder, depth: None)
    with pytest.raises(ValueError, match=r"choices must name options \(\['pool'\]\)"):
        register_model("bad_choice", pool=("mean",))(lambda encoder, pooling="mean": None)
    assert "no_default" not in list_models() and "bad_choice" not in list_models()


# --- weights policy: hub cache, local file, random; never a download ---


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub cache, and any attempt to download fails the test."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("lusv tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def test_imagenet_weights_come_from_the_hub_cache_only(hub_dir):
    import torchvision

    source = torchvision.models.resnet18(weights=None)
    cached = hub_cache_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url)
    assert cached.parent == hub_dir / "checkpoints"
    torch_save(cached, source.state_dict())  # includes the ImageNet 'fc.*' head, which is ignored
    encoder = build_encoder("resnet18", weights="imagenet", strict_weights=True)
    assert encoder.weights_source == f"imagenet:torch-hub-cache:{cached}"
    torch.testing.assert_close(encoder.backbone.conv1.weight, source.conv1.weight)
    assert encoder.feature_dim == 512


def test_r2plus1d_takes_kinetics_weights_from_the_hub_cache_with_its_own_head(hub_dir):
    import torchvision

    kinetics = torchvision.models.video.r2plus1d_18(weights=None)  # 400-class head, like the real file
    cached = hub_cache_file(torchvision.models.video.R2Plus1D_18_Weights.KINETICS400_V1.url)
    torch_save(cached, kinetics.state_dict())
    model = build_model("r2plus1d", weights="imagenet", strict_weights=True)
    assert model.weights_source == f"imagenet:torch-hub-cache:{cached}"
    torch.testing.assert_close(model.backbone.stem[0].weight, kinetics.stem[0].weight)
    assert model.backbone.fc.out_features == 4  # the pattern head keeps its init


def test_missing_imagenet_weights_fall_back_to_random_or_raise_when_strict(hub_dir, caplog):
    with caplog.at_level(logging.WARNING):
        model = build_model("luvnet", encoder="resnet18", weights="imagenet")
    assert model.weights_source.startswith("random (") and "not in the local cache" in model.weights_source
    assert "never downloads" in caplog.text
    with pytest.raises(ConfigError, match="weights='imagenet' requested"):
        build_model("usvn", encoder="resnet18", weights="imagenet", strict_weights=True)
    with pytest.raises(ConfigError, match="no pretrained weights are known for encoder 'tiny'"):
        build_model("usvn", encoder="tiny", weights="imagenet", strict_weights=True)


def test_local_weights_file_is_loaded_and_mismatches_reported(tmp_path, caplog):
    donor = tiny("usvn")
    state = donor.encoder.backbone.state_dict()
    path = torch_save(tmp_path / "enc.pt", {"state_dict": {**state, "extra.weight": torch.zeros(1)}})
    with caplog.at_level(logging.WARNING):
        model = build_model("luvnet", encoder="tiny", weights=str(path))
    assert model.weights_source == f"file:{path.resolve()}"
    torch.testing.assert_close(model.encoder.backbone[0].weight, donor.encoder.backbone[0].weight)
    assert "extra.weight" in caplog.text
    with pytest.raises(CheckpointError, match="does not fit"):
        build_model("luvnet", encoder="tiny", weights=str(path), strict_weights=True)

    partial = {k: v for k, v in state.items() if not k.startswith("4.")}
    partial["0.weight"] = torch.zeros(8, 3, 3, 3)  # wrong shape: skipped, reported
    path = torch_save(tmp_path / "partial.pt", partial)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_model("luvnet", encoder="tiny", weights=str(path))
    assert "0.weight (shape (8, 3, 3, 3) != (16, 3, 3, 3))" in caplog.text and "4.weight" in caplog.text

    # A whole trained lusv model initialises just the encoder of another model.
    whole = torch_save(tmp_path / "luvnet.pt", {"model": donor.state_dict()})
    model = build_model("cnn_lstm", encoder="tiny", weights=str(whole), strict_weights=True)
    torch.testing.assert_close(model.encoder.backbone[3].weight, donor.encoder.backbone[3].weight)

    unrelated = torch_save(tmp_path / "other.pt", {"head.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="shares no parameter name"):
        build_model("luvnet", encoder="tiny", weights=str(unrelated))
    with pytest.raises(ConfigError, match="neither one of"):
        build_model("luvnet", encoder="tiny", weights="imagnet")


def test_old_densenet_checkpoint_keys_are_renamed():
    remapped = _remap_densenet_keys(
        {"features.denseblock1.denselayer1.norm.1.weight": 1, "features.conv0.weight": 2}
    )
    assert remapped == {"features.denseblock1.denselayer1.norm1.weight": 1, "features.conv0.weight": 2}


@pytest.mark.parametrize("name", ["c3d", "r2plus1d"])
def test_width_narrows_3d_models_and_they_still_train(name):
    cfg = dict(weights="random", num_frames=16, image_size=32)
    with torch.device("meta"):
        full = count_parameters(build_model(name, **cfg))
    narrow = build_model(name, width=0.125, **cfg)
    assert count_parameters(narrow) < full / 20
    x = torch.randn(2, 16, 3, 32, 32)
    logits = narrow(x)["logits"]
    assert logits.shape == (2, 4)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in narrow.parameters())
