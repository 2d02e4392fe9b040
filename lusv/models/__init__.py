"""Model registry: ``build_model(name, **cfg)`` for LUV-Net and its comparators.

Every model takes ``x`` (B, T, 3, H, W) float and ``lengths`` (B,) long or ``None`` and returns
``{"logits": (B, 4)}`` plus ``"attention"`` (B, 4, H, T) for luvnet / luvnet_no_temporal and
(B, 1, H, T) for usvn with attention pooling. ``model.weights_source`` says which weights were
used (see ``lusv.models.encoders``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from lusv.errors import ConfigError
from lusv.models.encoders import ENCODER_NAMES, build_encoder

log = logging.getLogger(__name__)

MODEL_NAMES: tuple[str, ...] = ("luvnet", "luvnet_no_temporal", "usvn", "c3d", "r2plus1d", "cnn_lstm")

# Every cfg key build_model understands, with its default. A key that a model does not use is
# accepted and ignored, so that one run configuration can build any model; a key not listed
# here is a typo and raises.
DEFAULT_CFG: dict[str, Any] = {
    "encoder": "densenet161",  # 2-D frame encoder (luvnet*, usvn, cnn_lstm); see ENCODER_NAMES
    "weights": "imagenet",  # "imagenet" | "random" | path to a local state dict
    "strict_weights": False,  # True: missing pretrained weights / keys raise instead of warning
    "num_heads": 8,  # attention heads H (luvnet*, usvn); must divide the feature size F
    "kernel_size": 13,  # temporal Conv1d width K (luvnet)
    "pooling": "attention",  # usvn: "attention" | "mean" | "max"
    "num_frames": None,  # T; required by c3d (its fc6 size depends on it)
    "image_size": None,  # frame side S; required by c3d
    "dropout": 0.5,  # before each model's last linear layer (and after fc6/fc7 in c3d)
    "hidden_size": 512,  # LSTM hidden units (cnn_lstm)
    "width": 1.0,  # channel multiplier of c3d / r2plus1d (1.0 = published sizes)
    "channels_last": False,  # NHWC / NDHWC memory format (faster convolutions on GPUs)
}


def build_model(name: str, **cfg: Any) -> nn.Module:
    """Build a model by name (one of ``MODEL_NAMES``) from the keys of ``DEFAULT_CFG``.

    Raises ``ConfigError`` for an unknown model, encoder, pooling or cfg key, listing the valid ones.
    Build with ``weights="random"`` inside ``with torch.device("meta"):`` to count parameters
    without allocating memory.
    """
    if name not in MODEL_NAMES:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    unknown = sorted(set(cfg) - set(DEFAULT_CFG))
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown}; valid options: {', '.join(DEFAULT_CFG)}")
    c = {**DEFAULT_CFG, **cfg}
    if c["encoder"] not in ENCODER_NAMES:
        raise ConfigError(f"unknown encoder {c['encoder']!r}; valid encoders: {', '.join(ENCODER_NAMES)}")

    if name == "c3d":
        from lusv.models.c3d import build_c3d

        model = build_c3d(
            c["num_frames"], c["image_size"], c["weights"], c["strict_weights"], c["dropout"], c["width"]
        )
    elif name == "r2plus1d":
        from lusv.models.r2plus1d import build_r2plus1d

        model = build_r2plus1d(c["weights"], c["strict_weights"], c["width"])
    else:
        if name == "usvn":  # checked before the (slow) encoder is built
            from lusv.models.usvn import POOLINGS

            if c["pooling"] not in POOLINGS:
                raise ConfigError(f"unknown pooling {c['pooling']!r} for usvn; valid: {', '.join(POOLINGS)}")
        encoder = build_encoder(c["encoder"], c["weights"], c["strict_weights"])
        model = _build_frame_model(name, encoder, c)
        model.weights_source = encoder.weights_source

    if c["channels_last"]:
        three_d = name in ("c3d", "r2plus1d")
        model = model.to(memory_format=torch.channels_last_3d if three_d else torch.channels_last)
        (model if three_d else model.encoder).channels_last = True
    log.info("built %s: %s parameters, weights: %s", name, f"{count_parameters(model):,}", model.weights_source)
    return model


def _build_frame_model(name: str, encoder: nn.Module, c: dict[str, Any]) -> nn.Module:
    if name == "luvnet":
        from lusv.models.luvnet import LUVNet

        return LUVNet(encoder, num_heads=c["num_heads"], kernel_size=c["kernel_size"], dropout=c["dropout"])
    if name == "luvnet_no_temporal":
        from lusv.models.luvnet import LUVNetNoTemporal

        return LUVNetNoTemporal(encoder, num_heads=c["num_heads"], dropout=c["dropout"])
    if name == "usvn":
        from lusv.models.usvn import USVN

        return USVN(encoder, pooling=c["pooling"], num_heads=c["num_heads"], dropout=c["dropout"])
    from lusv.models.cnn_lstm import CNNLSTM

    return CNNLSTM(encoder, hidden_size=c["hidden_size"], dropout=c["dropout"])


def describe_state_dict_mismatch(model: nn.Module, state: Any, **cfg: Any) -> str:
    """One line on why ``state`` does not load into ``model``: key counts, and which registry
    model (built with ``cfg`` on the meta device: no memory, no weights read) it looks like."""
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        return f"it holds a {type(state).__name__}, not a model state dict"
    expected = model.state_dict()
    missing = len(set(expected) - set(state))
    unexpected = len(set(state) - set(expected))
    reshaped = sum(1 for key in set(state) & set(expected)
                   if getattr(state[key], "shape", None) != getattr(expected[key], "shape", None))
    counts = f"{missing} missing and {unexpected} unexpected key(s), {reshaped} of another shape"
    return f"{counts}; {_looks_like(state, cfg)}"


def _looks_like(state: dict, cfg: dict[str, Any]) -> str:
    def tops(keys) -> set[str]:
        return {key.split(".", 1)[0] for key in keys}

    exact, similar = [], []
    quiet = log.level
    log.setLevel(logging.WARNING)  # the candidates' "built ..." notes would bury the answer
    try:
        for name in MODEL_NAMES:
            try:
                with torch.device("meta"):
                    keys = set(build_model(name, **{**cfg, "weights": "random"}).state_dict())
            except Exception:  # noqa: BLE001 - a candidate that cannot take this cfg is no match
                continue
            if keys == set(state):
                exact.append(name)
            elif tops(keys) == tops(state):
                similar.append(name)
    finally:
        log.setLevel(quiet)
    if exact:
        return f"it looks like a {' or '.join(exact)} checkpoint"
    if similar:
        return f"it looks like a {' or '.join(similar)} checkpoint of another size or encoder"
    return f"it matches none of the models {', '.join(MODEL_NAMES)}"


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones once), optionally only those with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["DEFAULT_CFG", "ENCODER_NAMES", "MODEL_NAMES", "build_model", "count_parameters", "describe_state_dict_mismatch"]
