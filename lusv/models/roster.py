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
models on frozen features (USVN, CNN-LSTM, frame-based). Its 3-D CNNs (C3D, R(2+1)D-18), which
train from scratch end to end, and its K and H sweep points (K = 5, H = 4) are opt-in
(``OPT_IN_BY_PROFILE``), so that the real-data study stays within 15 minutes on two cores: on the
78 POCUS development clips the 3-D CNNs took 21 of the study's 38 minutes to reach chance level,
and the two sweep points 6 more to move LUV-Net's macro AUC by 0.001 (docs/results.md).

What each notebook trains (``study_configurations``) is derived here once, for the notebooks, the
plan (``lusv plan``, ``lusv.train.plan``) and the tests alike: notebook 02 LUV-Net, notebook 03 the
roster, notebook 04 the temporal ablation and the K and H sweeps (``ablation_configurations``;
the profile's own K and H are notebook 02's LUV-Net, reused). ``models`` (``run_all.sh --models``,
the notebooks' ``models`` parameter) restricts that to a subset of keys, or adds an opt-in
comparator (``select``).

Where a profile freezes its encoder, notebook 03 also fits the linear probe
(``lusv.evaluation.linear_probe``) as a reference row: what do the heads add over a logistic regression on
the same features (``with_linear_probe``)?
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Mapping, Sequence

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
    "pretrained": ("usvn", "cnn_lstm", "frame_based"),
})
# What a profile trains only when asked (``--models``): in ``pretrained`` the 3-D CNNs, which
# learn nothing from scratch on ~50 training clips at over half the study's time, and the two sweep
# points, which changed LUV-Net's macro AUC by 0.001 there (docs/results.md).
OPT_IN_BY_PROFILE: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "pretrained": ("c3d", "r2plus1d", "luvnet_k5", "luvnet_h4"),
})

# Each profile's K / H sweep grid (notebook 04): the paper profile sweeps the paper's (its Tables 8
# and 9); quick two points each, so that it stays within its minutes; pretrained its own K and H
# only (no sweep unless asked: OPT_IN_BY_PROFILE).
_CPU_GRID = MappingProxyType({"kernel_size": (5, 13), "num_heads": (4, 8)})
GRID_BY_PROFILE: Mapping[str, Mapping[str, tuple[int, ...]]] = MappingProxyType({
    "paper": MappingProxyType({"kernel_size": tuple(range(1, 30, 2)), "num_heads": (1, 2, 4, 8, 16, 32, 96)}),
    "quick": _CPU_GRID,
    "pretrained": MappingProxyType({"kernel_size": (13,), "num_heads": (8,)}),
})
NOTEBOOKS = ("02_train_folds", "03_baselines", "04_ablation_temporal")
REFERENCE = "luvnet"  # notebook 02's model, the reference of every comparison (and reused by notebook 04)
LINEAR_PROBE = "linear_probe"  # notebook 03's reference row where the encoder is frozen (no training runs)
_SWEEP_KEY = re.compile(r"luvnet_(k|h)(\d+)")


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


def with_linear_probe(profile: str, choice: bool | None = None, models: Sequence[str] | None = None) -> bool:
    """Whether notebook 03 fits the linear probe as a reference row: ``choice`` where given, else
    where the profile's 2-D models train on frozen encoder features (pretrained), which the probe
    reads too, and ``models`` (a subset) names it or is None."""
    if choice is not None:
        return choice
    return not params_for(profile).train_encoder and (models is None or LINEAR_PROBE in models)


def opt_in(profile: str) -> list[str]:
    """Keys ``profile`` trains only when ``models`` names them (see ``OPT_IN_BY_PROFILE``)."""
    return list(OPT_IN_BY_PROFILE.get(profile, ()))


def sweep_grid(profile: str, knob: str) -> list[int]:
    """The values of ``knob`` (kernel_size or num_heads) that ``profile`` sweeps by default."""
    return list(GRID_BY_PROFILE.get(profile, _CPU_GRID)[knob])


def ablation_configurations(profile: str, kernel_sizes: Sequence[int] | None = None,
                            head_counts: Sequence[int] | None = None) -> dict[str, dict[str, Any]]:
    """Notebook 04's configurations: LUV-Net at each K and each H (None: the profile's grid) and
    without its temporal module. The point at the profile's own K or H is ``luvnet`` itself,
    notebook 02's run, which ``lusv.study.temporal_ablation`` reuses rather than trains again."""
    main = params_for(profile)
    kernel_sizes = sweep_grid(profile, "kernel_size") if kernel_sizes is None else kernel_sizes
    head_counts = sweep_grid(profile, "num_heads") if head_counts is None else head_counts
    found: dict[str, dict[str, Any]] = {}
    for knob, values, own, prefix in (("kernel_size", kernel_sizes, main.kernel_size, "luvnet_k"),
                                      ("num_heads", head_counts, main.num_heads, "luvnet_h")):
        for value in values:
            found[REFERENCE if value == own else f"{prefix}{value}"] = {"model": "luvnet", knob: int(value)}
    found["luvnet_no_temporal"] = configuration("luvnet_no_temporal")
    return found


def as_list(values: str | int | Sequence[Any] | None) -> list[str] | None:
    """``models`` / ``folds`` as given by a notebook parameter or the command line: None, a list, a
    number, or one comma-separated text ("luvnet,usvn", "0,1"); items as text, without blanks."""
    if values is None:
        return None
    items = str(values).split(",") if isinstance(values, (str, int)) else list(values)
    return [str(item).strip() for item in items if str(item).strip()]


def known_keys(profile: str) -> list[str]:
    """Every key ``models`` may name in ``profile``: the named configurations, the profile's sweep
    points and, where the encoder is frozen, the linear probe."""
    sweeps = [key for key in ablation_configurations(profile) if key not in CONFIGURATIONS]
    opted = [key for key in opt_in(profile) if key not in CONFIGURATIONS]
    return [*CONFIGURATIONS, *sweeps, *opted, *([LINEAR_PROBE] if with_linear_probe(profile) else [])]


def check_models(profile: str, models: str | Sequence[str] | None) -> list[str] | None:
    """``models`` as a list, each a key of ``known_keys`` (ConfigError naming the unknown ones and
    the known); None stays None (the profile's whole plan)."""
    models = as_list(models)
    if models is None:
        return None
    known = known_keys(profile)
    unknown = [key for key in models if key not in known and not _SWEEP_KEY.fullmatch(key)]
    if unknown:
        raise ConfigError(f"unknown model key(s) {', '.join(map(repr, unknown))} for profile {profile!r}; "
                          f"known: {', '.join(known)}")
    if not models:
        raise ConfigError("models is empty: name at least one key, or leave it out for the whole study")
    return models


def check_folds(folds: str | Sequence[Any] | None, num_folds: int) -> list[int] | None:
    """``folds`` as a sorted list of fold numbers in 0..num_folds-1 (ConfigError otherwise); None stays None."""
    items = as_list(folds)
    if items is None:
        return None
    if not items or not all(item.isdigit() and int(item) < num_folds for item in items):
        raise ConfigError(f"folds {','.join(items) or '(empty)'}: give fold numbers in 0..{num_folds - 1}, "
                          "e.g. 0 or 0,1")
    return sorted({int(item) for item in items})


def select(keys: Sequence[str], models: str | Sequence[str] | None, keep_first: bool = False) -> list[str]:
    """The keys of ``keys`` that ``models`` names (a list or comma-separated text), in ``keys``'
    order (all of them for None); ``keep_first``: the first key stays whatever ``models`` says
    (a study's reference model, which every comparison needs)."""
    models = as_list(models)
    if models is None:
        return list(keys)
    return [key for i, key in enumerate(keys) if key in models or (keep_first and i == 0)]


def baselines_to_train(profile: str, models: Sequence[str] | None = None) -> list[str]:
    """Notebook 03's comparators: the profile's roster, or with ``models`` those of the roster and
    its opt-in comparators (and any other named comparator) that ``models`` names."""
    if models is None:
        return baselines(profile)
    others = [key for key in CONFIGURATIONS if key not in (REFERENCE, "luvnet_no_temporal")]
    opted = [key for key in opt_in(profile) if key in CONFIGURATIONS]
    return select(list(dict.fromkeys([*baselines(profile), *opted, *others])), models)


def sweep_configurations(profile: str, models: Sequence[str] | None = None, kernel_sizes: Sequence[int] | None = None,
                         head_counts: Sequence[int] | None = None) -> dict[str, dict[str, Any]]:
    """Notebook 04's configurations that ``models`` names (all for None), ``luvnet`` among them as
    ``ablation_configurations`` has it; a sweep key outside the grid (``luvnet_k7``) is added."""
    found = ablation_configurations(profile, kernel_sizes, head_counts)
    if models is None:
        return found
    for key in models:
        match = _SWEEP_KEY.fullmatch(key)
        if match and key not in found:
            found[key] = {"model": "luvnet", {"k": "kernel_size", "h": "num_heads"}[match.group(1)]: int(match.group(2))}
    return {key: found[key] for key in select(found, models)}


def study_configurations(profile: str, models: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """What notebooks 02, 03 and 04 train in ``profile`` (``models``: only those keys): notebook ->
    {key: RunParams overrides}. Notebook 04's ``luvnet`` (notebook 02's run, reused) is left out,
    so every (key, fold) here is one training run; the linear probe (no training run) is never in it."""
    models = check_models(profile, models)
    plan = {
        "02_train_folds": configurations(select([REFERENCE], models)),
        "03_baselines": configurations(baselines_to_train(profile, models)),
        "04_ablation_temporal": {key: overrides for key, overrides in sweep_configurations(profile, models).items()
                                 if key != REFERENCE},
    }
    return plan
