"""A trained run's model: rebuilt from its ``config.json`` with the weights of its ``best.pt``.

* ``load_trained(run_dir or best.pt)`` -> the model of a training run, in eval mode, carrying
  ``run_params`` (RunParams) and ``weights_source``.
* ``build_run_model(params)`` -> the model a run trains, from its fields that the model
  registry takes (``model_config``); training builds its model here too, so a run and its reload never differ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from lusv.config import field_names, RunParams
from lusv.errors import CheckpointError
from lusv.infra import io
from lusv.models import build_model, describe_state_dict_mismatch, model_options


def model_config(p: RunParams) -> dict[str, Any]:
    """The ``build_model`` keyword arguments of a run: its fields that are model options (the
    registry's ``model_options``; a builder's own option with no RunParams field keeps its default)."""
    fields = set(field_names())
    return {name: getattr(p, name) for name in model_options() if name in fields}


def build_run_model(p: RunParams, weights: Optional[str] = None) -> nn.Module:
    """The model a run trains, built from its parameters; ``weights`` overrides ``p.weights``."""
    config = model_config(p)
    if weights is not None:
        config["weights"] = weights
    return build_model(p.model, **config)


def model_with_state(p: RunParams, state: dict, misfit: str) -> nn.Module:
    """The model of ``p`` holding the weights ``state`` (on the CPU); a state that does not fit is
    CheckpointError ``"<misfit>: <what differs>"``."""
    model = build_run_model(p, weights="random")  # the stored weights replace any init
    try:
        model.load_state_dict(state)
    except RuntimeError:
        why = describe_state_dict_mismatch(model, state, **{**model_config(p), "weights": "random"})
        raise CheckpointError(f"{misfit}: {why}") from None
    return model


def load_trained(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild a trained model from a run directory (or its best.pt) in eval mode.

    The architecture comes from the run's config.json; the weights from best.pt (read with
    weights_only=True). The returned model has ``run_params`` (RunParams) and
    ``weights_source`` = "trained:<best.pt>".
    """
    path = Path(path)
    best = path / "best.pt" if path.is_dir() else path
    config_path = best.parent / "config.json"
    if not best.is_file():
        raise CheckpointError(f"checkpoint {best} does not exist: pass a training run's best.pt or its folder")
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} not found: {best.parent} is not a lusv run directory (train it with lusv.train.run)")
    try:
        params = RunParams.from_dict(json.loads(config_path.read_text(encoding="utf-8"))["params"])
    except (ValueError, KeyError, TypeError) as exc:  # damaged, or not a run's record
        raise CheckpointError(f"{config_path} is damaged or not a lusv run record ({type(exc).__name__}: {exc}): "
                              "retrain the run or use another copy") from None
    state = io.torch_load(best)
    model = model_with_state(params, state, f"{best} does not fit the {params.model} model described by {config_path}")
    model.weights_source = f"trained:{best.resolve()}"
    model.run_params = params
    return model.to(device).eval()
