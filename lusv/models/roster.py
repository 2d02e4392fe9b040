"""The study's model configurations by name: the paper's Table 1 rows as named entries, and the
roster of comparators each profile trains in notebook 03.

A configuration key is what a study calls a trained model everywhere (``runs/<key>-fold<f>``,
``oof/<key>.*.csv``, every table; ``lusv.report.names`` gives its reader's name); its entry is the
``RunParams`` overrides that make it (``model`` plus options). Two of the paper's rows are LUV-Net
with other encoder settings, so they are entries of their own rather than flags to remember:
``luvnet_resnet50`` (ResNet-50, ImageNet weights) and ``luvnet_random_init`` (DenseNet-161,
randomly initialised). Their key is the one the published tables use (``lusv/paper_tables``).

Rosters: ``paper`` trains every Table 1 row but LUV-Net itself (notebook 02 trains it);
``quick`` a subset that keeps ``run_all.sh quick`` within minutes on two CPU cores: USVN,
C3D and R(2+1)D-18 at 1/16 width, CNN-LSTM and the frame-based model on the tiny encoder. Left
to the paper profile: MViT-B and Swin-B (video transformers, slow on a CPU even when shrunk),
R(2+1)D-34, and the two LUV-Net variants, which in the quick profile would be a ResNet-50 on a
CPU or the quick LUV-Net itself (its encoder is already random). ``pretrained`` trains the 2-D
models on frozen features (USVN, CNN-LSTM, frame-based) plus the 3-D CNNs from scratch.

Where a profile freezes its encoder, notebook 03 also fits the linear probe
(``lusv.evaluation.linear_probe``) as a reference row: what do the heads add over a logistic regression on
the same features (``with_linear_probe``)?
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from lusv.config import params_for
from lusv.errors import ConfigError

CONFIGURATIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "luvnet": MappingProxyType({"model": "luvnet"}),
    "luvnet_no_temporal": MappingProxyType({"model": "luvnet_no_temporal"}),
    "luvnet_resnet50": MappingProxyType({"model": "luvnet", "encoder": "resnet50", "weights": "imagenet"}),
    "luvnet_random_init": MappingProxyType({"model": "luvnet", "encoder": "densenet161", "weights": "random"}),
    "usvn": MappingProxyType({"model": "usvn"}),
    "c3d": MappingProxyType({"model": "c3d"}),
    "r2plus1d": MappingProxyType({"model": "r2plus1d"}),
    "r2plus1d_34": MappingProxyType({"model": "r2plus1d_34"}),
    "cnn_lstm": MappingProxyType({"model": "cnn_lstm"}),
    "frame_based": MappingProxyType({"model": "frame_based"}),
    "mvit_b": MappingProxyType({"model": "mvit_b"}),
    "swin_b": MappingProxyType({"model": "swin_b"}),
})

# The paper's Table 1, in its row order (R2Plus1D there is the 34-layer network).
TABLE_1 = ("frame_based", "mvit_b", "swin_b", "c3d", "r2plus1d_34", "cnn_lstm", "usvn", "luvnet_resnet50", "luvnet",
           "luvnet_random_init")

BASELINES_BY_PROFILE: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "paper": tuple(key for key in TABLE_1 if key != "luvnet"),
    "quick": ("usvn", "c3d", "r2plus1d", "cnn_lstm", "frame_based"),
    "pretrained": ("usvn", "c3d", "r2plus1d", "cnn_lstm", "frame_based"),
})


def configuration(key: str) -> dict[str, Any]:
    """The RunParams overrides of a named configuration (a fresh dict); ConfigError naming the
    known keys for an unknown one."""
    if key not in CONFIGURATIONS:
        raise ConfigError(f"unknown model configuration {key!r}; known: {', '.join(CONFIGURATIONS)}")
    return dict(CONFIGURATIONS[key])


def configurations(keys: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``{key: overrides}`` of several named configurations, in the given order."""
    return {key: configuration(key) for key in keys}


def baselines(profile: str) -> list[str]:
    """The comparators notebook 03 trains in ``profile`` (see the module docstring)."""
    if profile not in BASELINES_BY_PROFILE:
        raise ConfigError(f"no roster for profile {profile!r}; choose one of {', '.join(BASELINES_BY_PROFILE)}")
    return list(BASELINES_BY_PROFILE[profile])


def with_linear_probe(profile: str, choice: bool | None = None) -> bool:
    """Whether notebook 03 fits the linear probe as a reference row: ``choice`` where given, else
    where the profile's 2-D models train on frozen encoder features (pretrained), which the probe
    reads too."""
    return choice if choice is not None else not params_for(profile).train_encoder
