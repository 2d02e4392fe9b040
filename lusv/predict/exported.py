"""A trained model outside its study: an exported folder (or one run's ``best.pt``) loaded safely.

An export (written by ``lusv.predict.export``) is one folder::

    config.json        what rebuilds the models and their input (architecture, encoder, frames, size,
                       crop, clip policy, normalisation, lusv version and git commit of the study)
    thresholds.json    the fold ensemble's decision threshold per pattern, and how it was chosen
    README.md          the model card
    weights/fold<f>.safetensors   every fold model's weights (tensors only: nothing to unpickle)
    manifest.json      the SHA-256 and size of every file above

``load_model(path)`` checks, in this order, and refuses in one line (``CheckpointError``):
``config.json`` made by an incompatible lusv (a newer one, another export format or another
video preparation: the message names both versions), then every file of the manifest (missing
or changed), then each weights file against the architecture. Nothing is unpickled: weights are
safetensors, the rest JSON. A training run's ``best.pt`` (or its folder) loads too, as a single
fold model without thresholds, through ``lusv.inference.load_trained`` (``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import lusv
from lusv.config import RunParams
from lusv.data.patterns import PATTERNS
from lusv.data.video import PREPARATION_VERSION
from lusv.errors import CheckpointError
from lusv.inference import load_trained, model_with_state

EXPORT_FORMAT = 1
CONFIG, THRESHOLDS, CARD, MANIFEST = "config.json", "thresholds.json", "README.md", "manifest.json"
WEIGHTS_DIR = "weights"
# The frozen-encoder heads of a study are trained and scored on features stored in this dtype
# (lusv.data.features.run_feature_cache): prediction rounds the encoder's features the same way.
FROZEN_FEATURE_DTYPE = "float16"


@dataclass
class PredictionModel:
    """What ``lusv predict`` needs: the fold models, their input settings and the thresholds.

    ``frozen_features`` is the dtype the heads' features pass through (the study scored
    frozen-encoder models from its float16 feature cache), None for end-to-end models;
    ``shared_encoder`` is True when every fold model carries the same frozen encoder, so the
    frames are encoded once for all of them. ``identity`` names the model in a predictions file
    (a rerun continues only a file of the same model)."""

    source: Path
    params: RunParams
    models: list[nn.Module]
    identity: str
    thresholds: dict[str, float | None] | None = None
    window_thresholds: dict[str, float | None] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    card: str = ""
    frozen_features: str | None = None
    shared_encoder: bool = False

    @property
    def windows(self) -> bool:
        return self.params.clip_policy == "windows"

    def to(self, device: torch.device | str) -> "PredictionModel":
        self.models = [model.to(device).eval() for model in self.models]
        return self


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def version_tuple(version: str | None) -> tuple[int, ...]:
    """'0.1.0' -> (0, 1, 0); a suffix ('0.2.0rc1', '+local') is ignored; unreadable -> ()."""
    match = re.match(r"^\s*(\d+(?:\.\d+)*)", str(version or ""))
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def check_compatible(config: dict, where: Path) -> None:
    """CheckpointError naming both versions when this lusv cannot use the export's config."""
    made_by, ours = config.get("lusv_version"), lusv.__version__
    problem = None
    if config.get("format") != EXPORT_FORMAT:
        problem = f"export format {config.get('format')!r}, this lusv reads format {EXPORT_FORMAT}"
    elif not version_tuple(made_by) or version_tuple(made_by) > version_tuple(ours):
        problem = "made by a newer lusv" if version_tuple(made_by) else "no readable lusv version"
    elif config.get("input", {}).get("preparation_version") != PREPARATION_VERSION:
        problem = (f"its videos were prepared by video preparation version "
                   f"{config.get('input', {}).get('preparation_version')!r}, this lusv's is {PREPARATION_VERSION}")
    if problem:
        raise CheckpointError(f"{where} was exported by lusv {made_by}; this is lusv {ours} ({problem}): install lusv "
                              f"{made_by} to use it, or export the study again with lusv {ours}")


def verify_manifest(folder: Path) -> dict:
    """The manifest, after checking every file it lists (present, same size and SHA-256)."""
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{folder}: {MANIFEST} is missing, so its files cannot be checked: copy the whole "
                              "export folder again (or export the study again)")
    manifest = _read_json(path)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{path} lists no files: it is damaged; copy the export folder again")
    for name, entry in files.items():
        target = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise CheckpointError(f"{path} names {name!r}, outside the export folder: refusing it")
        if not target.is_file():
            raise CheckpointError(f"{folder}: {name} is missing (the manifest lists it): copy the whole export "
                                  "folder again")
        actual = sha256_file(target)
        if actual != entry.get("sha256"):
            raise CheckpointError(f"{folder}: {name} has changed since it was exported (SHA-256 {actual[:12]}..., "
                                  f"the manifest says {str(entry.get('sha256'))[:12]}...): it is damaged or was "
                                  "edited; copy the export folder again")
    return manifest


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> PredictionModel:
    """An export folder, or a run's ``best.pt`` / run folder (one fold model), ready to predict."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model {path} does not exist: pass an export folder (lusv export) or a run's best.pt")
    if path.is_dir() and ((path / MANIFEST).is_file() or _export_config(path)):
        return load_export(path, device)
    if path.is_dir() and not (path / CONFIG).is_file():
        raise CheckpointError(f"{path} is neither a lusv export ({MANIFEST}) nor a training run folder (config.json, "
                              "best.pt): make an export with `lusv export --study DIR --out DIR`")
    model = load_trained(path, device)
    params = model.run_params
    best = path / "best.pt" if path.is_dir() else path
    return PredictionModel(
        source=best, params=params, models=[model], identity=f"checkpoint:{sha256_file(best)[:16]}",
        frozen_features=None if params.train_encoder else FROZEN_FEATURE_DTYPE,
        config={"key": params.model, "folds": [{"fold": params.fold}]},
    )


def load_export(folder: Path, device: torch.device | str = "cpu") -> PredictionModel:
    """Check an export folder (see the module docstring) and rebuild its fold models."""
    if not (folder / CONFIG).is_file():
        raise CheckpointError(f"{folder} is not a lusv export ({CONFIG} missing) nor a run folder with best.pt: "
                              "make one with `lusv export --study DIR --out DIR`")
    config = _read_json(folder / CONFIG)
    check_compatible(config, folder)
    manifest = verify_manifest(folder)
    listed = set(manifest["files"])
    for needed in (THRESHOLDS, *(fold["file"] for fold in config.get("folds", []))):
        if needed not in listed:
            raise CheckpointError(f"{folder}: {needed} is not in {MANIFEST}, so it cannot be trusted: export again")
    params = RunParams.from_dict(config["run_params"])
    models = [_fold_model(folder / fold["file"], params) for fold in config["folds"]]
    if not models:
        raise CheckpointError(f"{folder / CONFIG} lists no fold models: export the study again")
    thresholds = _read_json(folder / THRESHOLDS)
    frozen = None if params.train_encoder else config.get("input", {}).get("frozen_feature_dtype", FROZEN_FEATURE_DTYPE)
    return PredictionModel(
        source=folder, params=params, models=[model.to(device).eval() for model in models],
        identity=f"export:{manifest['files'][CONFIG]['sha256'][:16]}",
        thresholds=_thresholds(thresholds.get("thresholds")), window_thresholds=_thresholds(thresholds.get("window_thresholds")),
        config=config, card=(folder / CARD).read_text(encoding="utf-8") if (folder / CARD).is_file() else "",
        frozen_features=frozen, shared_encoder=frozen is not None and _same_encoder(models),
    )


def _export_config(folder: Path) -> bool:
    """Whether ``folder/config.json`` is an export's (it has run_params; a run's has params)."""
    try:
        return "run_params" in json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        return False


def _fold_model(path: Path, params: RunParams) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}): copy the export again") from None
    return model_with_state(params, state, f"{path} does not fit the {params.model} model of its config.json").eval()


def _same_encoder(models: list[nn.Module]) -> bool:
    first = models[0].encoder.state_dict()
    return all(all(torch.equal(first[name], tensor) for name, tensor in model.encoder.state_dict().items())
               for model in models[1:])


def _thresholds(values: Any) -> dict[str, float | None] | None:
    if not isinstance(values, dict):
        return None
    return {pattern: (None if values.get(pattern) is None else float(values[pattern])) for pattern in PATTERNS}


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON ({exc}): the export is damaged; copy it again") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not a JSON object: the export is damaged; copy it again")
    return value
