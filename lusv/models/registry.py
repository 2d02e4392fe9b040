"""The model registry: ``@register_model(name)`` on each family's builder, ``build_model(name, **cfg)``.

A builder is a callable (a model class or a function) whose keyword arguments are its model
options; their defaults are the only place a model option's default is written. A builder whose
first parameter is ``encoder`` (the frame models) receives a ``FrameEncoder`` built from the
options ``encoder``, ``weights`` and ``strict_weights``, whose defaults are ``build_encoder``'s;
the other builders (the 3-D CNNs) take ``weights`` themselves and apply the weights policy.

One run configuration builds any model: ``build_model`` accepts every option some model knows
and ignores those the chosen model does not use; an option no model knows is a typo and raises
``ConfigError`` listing the valid ones. ``channels_last`` is ``build_model``'s own option.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import torch
from torch import nn

from lusv.errors import ConfigError
from lusv.models.encoders import build_encoder, ENCODER_NAMES

log = logging.getLogger("lusv.models")

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    options: dict[str, Any]  # option -> default, in the builder's order (encoder options first)
    takes_encoder: bool  # a frame model: gets a FrameEncoder as its first argument
    choices: dict[str, Sequence[str]]  # option -> valid values, checked before anything is built


_REGISTRY: dict[str, _Entry] = {}


def _encoder_options() -> dict[str, Any]:
    """The frame models' encoder options with ``build_encoder``'s defaults."""
    defaults = {name: p.default for name, p in inspect.signature(build_encoder).parameters.items()}
    return {"encoder": defaults["name"], "weights": defaults["weights"], "strict_weights": defaults["strict_weights"]}


def register_model(name: str, **choices: Sequence[str]) -> Callable[[Builder], Builder]:
    """Register ``builder`` as model ``name``; ``choices`` name the valid values of an option
    (checked by ``build_model`` before the slow encoder is built). Returns the builder unchanged."""

    def register(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        parameters = list(inspect.signature(builder).parameters.values())
        takes_encoder = bool(parameters) and parameters[0].name == "encoder"
        options = {p.name: p.default for p in parameters[takes_encoder:]}
        undefaulted = [option for option, default in options.items() if default is inspect.Parameter.empty]
        if undefaulted or set(choices) - set(options):
            raise ValueError(f"model {name!r}: every option needs a default ({undefaulted}) and choices "
                             f"must name options ({sorted(set(choices) - set(options))})")
        if takes_encoder:
            options = {**_encoder_options(), **options}
        _REGISTRY[name] = _Entry(builder, options, takes_encoder, choices)
        return builder

    return register


def list_models() -> tuple[str, ...]:
    """The registered model names, in registration order."""
    return tuple(_REGISTRY)


def frame_models() -> tuple[str, ...]:
    """The registered models built on a 2-D frame encoder (they can train on frozen-encoder features)."""
    return tuple(name for name, entry in _REGISTRY.items() if entry.takes_encoder)


def model_options() -> tuple[str, ...]:
    """Every option ``build_model`` accepts: the union of the builders' options, then ``channels_last``."""
    options = dict.fromkeys(option for entry in _REGISTRY.values() for option in entry.options)
    return (*options, "channels_last")


def model_defaults(name: str) -> dict[str, Any]:
    """The options model ``name`` uses, with their defaults."""
    return dict(_entry(name).options)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def build_model(name: str, *, channels_last: bool = False, **cfg: Any) -> nn.Module:
    """Build a registered model (see ``list_models``) from any of ``model_options()``.

    Raises ``ConfigError`` for an unknown model, encoder, choice (usvn's pooling) or option,
    listing the valid ones. ``channels_last=True`` stores weights NHWC (NDHWC for 3-D CNNs) and
    feeds activations so. Build with ``weights="random"`` inside ``with torch.device("meta"):``
    to count parameters without allocating memory.
    """
    entry = _entry(name)
    valid = model_options()
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown}; valid options: {', '.join(valid)}")
    encoder_name = cfg.get("encoder", _encoder_options()["encoder"])
    if encoder_name not in ENCODER_NAMES:
        raise ConfigError(f"unknown encoder {encoder_name!r}; valid encoders: {', '.join(ENCODER_NAMES)}")
    c = {**entry.options, **{option: value for option, value in cfg.items() if option in entry.options}}
    for option, allowed in entry.choices.items():
        if c[option] not in allowed:
            raise ConfigError(f"unknown {option} {c[option]!r} for {name}; valid: {', '.join(allowed)}")

    if entry.takes_encoder:
        encoder = build_encoder(c.pop("encoder"), c.pop("weights"), c.pop("strict_weights"))
        model = entry.builder(encoder, **c)
        model.weights_source = encoder.weights_source
    else:
        model = entry.builder(**c)

    if channels_last:
        three_d = not entry.takes_encoder
        model = model.to(memory_format=torch.channels_last_3d if three_d else torch.channels_last)
        (model if three_d else model.encoder).channels_last = True
    log.info("built %s: %s parameters, weights: %s", name, f"{count_parameters(model):,}", model.weights_source)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones once), optionally only those with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


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
        for name in list_models():
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
    return f"it matches none of the models {', '.join(list_models())}"
