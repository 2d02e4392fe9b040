"""Models: LUV-Net and its comparators, built by name through a decorator registry.

Every model takes ``x`` (B, T, 3, H, W) float and ``lengths`` (B,) long or ``None`` and returns
``{"logits": (B, 4)}`` plus ``"attention"`` (B, 4, H, T) for luvnet / luvnet_no_temporal and
(B, 1, H, T) for usvn with attention pooling. ``model.weights_source`` says which weights were
used (see ``lusv.models.encoders``).

One file per family (``luvnet``, ``usvn``, ``c3d``, ``r2plus1d`` (18 and 34 layers), ``cnn_lstm``,
``frame_based``, ``video_transformers`` (MViT-B, Swin3D-B)) registers its models with
``@register_model`` (the paper's Table 1 roster); ``registry`` builds them and owns the option handling;
``encoders`` holds the 2-D frame encoders and the weights policy; ``attention`` the pooling;
``cost`` counts parameters and multiply-accumulates per clip and times inference (Table 4).
"""

from __future__ import annotations

from lusv.models.encoders import ENCODER_NAMES
from lusv.models.registry import (
    build_model,
    count_parameters,
    describe_state_dict_mismatch,
    frame_models,
    list_models,
    model_defaults,
    model_options,
)

# Importing a family registers its models. The order here is the order of list_models() and of
# the "valid models" that errors list (LUV-Net first, then its comparators): do not sort it.
from lusv.models import luvnet, usvn, c3d, r2plus1d, cnn_lstm, frame_based, video_transformers  # noqa: F401, I001

MODEL_NAMES: tuple[str, ...] = list_models()

__all__ = [
    "ENCODER_NAMES",
    "MODEL_NAMES",
    "build_model",
    "count_parameters",
    "describe_state_dict_mismatch",
    "frame_models",
    "list_models",
    "model_defaults",
    "model_options",
]
