"""What a run is told: ``RunParams``, one field per knob (``lusv.config.params``), and the named
profiles that fill them (``lusv.config.profiles``: paper, quick, pretrained; ``params_for``)."""

from lusv.config.params import (
    AMP_MODES,
    AUGMENTATION_SETS,
    CLIP_POLICIES,
    RunParams,
    check_keys,
    field_help,
    field_names,
    path_fields,
    resume_may_change,
)
from lusv.config.profiles import (
    BEFORE_FIELD_EXISTED,
    DEFAULT_PROFILE,
    HELD_OUT_BY_PROFILE,
    PROFILE_MODEL_DEFAULTS,
    PROFILES,
    SYNTHETIC_BY_PROFILE,
    held_out_fraction,
    params_for,
    synthetic_options,
)

__all__ = [
    "AMP_MODES", "AUGMENTATION_SETS", "BEFORE_FIELD_EXISTED", "CLIP_POLICIES", "DEFAULT_PROFILE", "HELD_OUT_BY_PROFILE",
    "PROFILES", "PROFILE_MODEL_DEFAULTS", "RunParams", "SYNTHETIC_BY_PROFILE", "check_keys", "field_help", "field_names",
    "held_out_fraction", "params_for", "path_fields", "resume_may_change", "synthetic_options",
]
