"""Run parameters: one dataclass field per knob of a training run.

``RunParams`` is the single parameter object of a run (one model, one fold). It is saved as
``config.json`` next to the run's results, so every number can be traced back to the exact
parameters that produced it. The ``lusv train`` CLI flags are generated from its fields: each
field has a simple type (str/int/float/bool/Optional) and a one-line help text in
``field.metadata["help"]`` (see ``field_help``). Two more marks in the metadata say how the
rest of lusv treats a field, so that no list of field names is kept by hand elsewhere:

* ``path`` — names a file or folder: ``lusv train`` makes it absolute against the current
  directory (``path_fields``). Such fields are declared with ``_path``, which marks them
  ``may_change_on_resume`` too.
* ``may_change_on_resume`` — may differ between a run and its resumption without changing its
  numbers (where the data lives, how many loader workers, logging); every other field must match
  to resume (``resume_may_change``).

Which fields build the model is the model registry's answer (``lusv.models.model_options``, read
by ``lusv.inference.model_config``), not a mark here: one list, kept where the models are.
"""

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from lusv.errors import ConfigError

AMP_MODES = ("auto", "bf16", "fp16", "off")
# The augmentation sets of lusv.data.model_input.clip_augment: the paper's, and the authors' code's wider one.
AUGMENTATION_SETS = ("paper", "extended")
CLIP_POLICIES = ("windows", "whole")  # see lusv.data.windows


def _p(
    default: Any,
    help: str,  # noqa: A002 - "help" mirrors argparse
    *,
    path: bool = False,
    may_change_on_resume: bool = False,
) -> Any:
    """A dataclass field with a one-line help text (read by the CLI generator) and the marks
    described in the module docstring."""
    metadata = {"help": help, "path": path, "may_change_on_resume": may_change_on_resume}
    return field(default=default, metadata=metadata)


def _path(default: Any, help: str) -> Any:  # noqa: A002 - "help" mirrors argparse
    """A field naming a file or folder: made absolute by ``lusv train`` and, as where data lives
    changes no number, free to differ on resume (every path field is both)."""
    return _p(default, help, path=True, may_change_on_resume=True)


# No ``from __future__ import annotations`` in this module: the CLI generator reads
# dataclasses.fields(RunParams)[i].type, which must be a real type (str, int, Optional[int]...),
# not a string.
@dataclass(frozen=True)
class RunParams:
    """All parameters of one training run (one model on one fold). Defaults = paper profile."""

    # --- model -------------------------------------------------------------------------
    model: str = _p(
        "luvnet", "model name: luvnet, luvnet_no_temporal, usvn, c3d, r2plus1d, r2plus1d_34, cnn_lstm, frame_based, "
        "mvit_b, swin_b (lusv.models.list_models)",
    )
    encoder: str = _p(
        "densenet161", "frame encoder: densenet161, resnet18, resnet50, efficientnet_lite0, tiny",
    )
    weights: str = _p("imagenet", "encoder weights: imagenet, random, or a local weights file")
    num_heads: int = _p(8, "attention heads H (LUV-Net, USVN)")
    kernel_size: int = _p(13, "temporal convolution kernel width K (LUV-Net)")
    pooling: str = _p("attention", "USVN frame pooling: attention, mean or max")
    frame_pooling: str = _p("mean", "frame_based: pool the frames' logits by their mean or max")
    dropout: float = _p(0.5, "dropout before the classifier of every model (0.5 in the paper's models)")
    width: float = _p(
        1.0, "channel multiplier of the 3-D comparators c3d, r2plus1d(_34), mvit_b, swin_b (1.0 = published size)",
    )
    # --- data ---------------------------------------------------------------------------
    labels: Optional[str] = _path(
        None, "labels CSV (clip_id, path, patient_id, one column per pattern)",
    )
    splits: Optional[str] = _path(
        None, "folds CSV (clip_id, patient_id, fold); made from labels and saved in the run dir if unset",
    )
    temporal_split: Optional[str] = _path(
        None, "temporal split CSV (clip_id, patient_id, split); its temporal_test clips are predicted after training",
    )
    held_out: Optional[str] = _path(
        None, "held-out split CSV (clip_id, patient_id, split); its held_out clips are predicted after training",
    )
    cache_dir: str = _path(
        "data/cache", "clip cache root (entries in <cache_dir>/T<frames>_S<size>/)",
    )
    fold: int = _p(0, "test fold f; validation fold is (f+1) % num_folds, the rest trains")
    num_folds: int = _p(5, "number of cross-validation folds K")
    split_seed: int = _p(0, "seed of the patient-level folds made when no splits file is given")
    num_frames: int = _p(30, "frames per clip T (per window under clip_policy=windows)")
    clip_policy: str = _p(
        "windows", "windows: cut every video into windows of T consecutive frames overlapping by window_overlap "
        "(the paper; lusv.data.windows); whole: one clip per video of T frames spread over it (short or low-frame-rate clips)",
    )
    window_overlap: int = _p(6, "clip_policy=windows: frames shared by consecutive windows (paper: 6, stride 24)")
    target_fps: Optional[float] = _p(
        None, "clip_policy=windows: resample every video to this frame rate before cutting (None: its own frames)",
    )
    frame_labels: Optional[str] = _path(
        None, "clip_policy=windows: frame-level label CSV (clip_id, first_frame, last_frame, pattern) giving each "
        "window its own labels; unset: every window takes its video's labels",
    )
    image_size: int = _p(256, "frame side S in pixels")
    augment: bool = _p(True, "augment training clips (which augmentations: see augmentations)")
    augmentations: str = _p(
        "paper", "paper: horizontal flip and rotation up to +-10 degrees only (the paper); extended: also "
        "brightness/contrast/gamma, blur and noise (as the authors' code; the quick and pretrained profiles)",
    )
    train_encoder: bool = _p(
        True, "fine-tune the frame encoder end to end (the paper); false: train only the head of a 2-D model on "
        "per-frame features of the frozen encoder, computed once into a feature cache (lusv.data.features)",
    )
    feature_views: int = _p(
        0, "train_encoder=false: augmented views per training clip in the feature cache, one drawn per clip and "
        "epoch (0 = the plain clips only)",
    )
    # --- optimisation -------------------------------------------------------------------
    batch_size: int = _p(4, "clips per micro-batch")
    grad_accum: int = _p(1, "micro-batches per optimizer step (effective batch = batch_size * grad_accum)")
    lr: float = _p(1e-6, "Adam learning rate (paper: 1e-6)")
    weight_decay: float = _p(0.0, "Adam weight decay (L2)")
    label_smoothing: float = _p(
        0.0, "training targets y * (1 - s) + s / 2 instead of 0/1 (0 = plain BCE, the paper); the validation "
        "loss that early stopping watches stays plain BCE",
    )
    epochs: int = _p(150, "maximum number of epochs")
    patience: int = _p(
        50, "early stopping: epochs without a lower validation loss before stopping (paper: 50; the authors' "
        "training script defaults to 20)",
    )
    max_batches_per_epoch: Optional[int] = _p(None, "cap on training micro-batches per epoch (tests, smoke runs)")
    checkpoint_every: int = _p(
        1, "write checkpoint.pt (and best.pt, log.csv) every N epochs and at the last; a resume replays the "
        "epochs since, to the same numbers",
        may_change_on_resume=True,
    )
    # --- hardware -----------------------------------------------------------------------
    amp: str = _p("auto", "mixed precision: auto (bf16 if the GPU supports it else fp16; off on CPU), bf16, fp16, off")
    device: str = _p("auto", "device: auto (cuda if available else cpu), cpu, cuda, cuda:1 ...", may_change_on_resume=True)
    num_workers: int = _p(2, "DataLoader worker processes (0 = load in the main process)", may_change_on_resume=True)
    channels_last: bool = _p(
        False, "channels-last memory format for the model (faster convolutions on recent GPUs)",
    )
    # --- bookkeeping --------------------------------------------------------------------
    profile: str = _p(
        "paper", "the profile these parameters start from (params_for sets it); recorded in config.json so every "
        "run says what it ran under. A label only: the other fields hold the values",
        may_change_on_resume=True,
    )
    seed: int = _p(0, "seed of weights init, data order, augmentation and dropout")
    out_dir: str = _path(
        "results/runs", "results root; the run writes to <out_dir>/<run_name>/",
    )
    run_name: Optional[str] = _p(None, "run folder name (default: <model>-<encoder>-T<T>-S<S>-fold<f>-seed<seed>)")
    resume: bool = _p(
        False, "continue from <run dir>/checkpoint.pt; a finished run is returned as is",
        may_change_on_resume=True,
    )
    log_every: int = _p(
        50, "log a progress line to the 'lusv.train' logger every N optimizer steps (0 = never)",
        may_change_on_resume=True,
    )

    def __post_init__(self) -> None:
        problems = []
        if self.amp not in AMP_MODES:
            problems.append(f"amp={self.amp!r} (choose one of {', '.join(AMP_MODES)})")
        if self.num_folds < 3:
            problems.append(f"num_folds={self.num_folds} (need at least 3: test, validation and training folds)")
        elif not 0 <= self.fold < self.num_folds:
            problems.append(f"fold={self.fold} (must be in 0..{self.num_folds - 1})")
        for name in ("num_frames", "image_size", "batch_size", "grad_accum", "epochs", "patience", "num_heads", "kernel_size",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} (must be >= 1)")
        if self.max_batches_per_epoch is not None and self.max_batches_per_epoch < 1:
            problems.append(f"max_batches_per_epoch={self.max_batches_per_epoch} (must be >= 1 or None)")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing={self.label_smoothing} (must be in [0, 1))")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout={self.dropout} (must be in [0, 1))")
        if self.width <= 0:
            problems.append(f"width={self.width} (must be > 0)")
        if self.lr <= 0:
            problems.append(f"lr={self.lr} (must be > 0)")
        if self.clip_policy not in CLIP_POLICIES:
            problems.append(f"clip_policy={self.clip_policy!r} (choose one of {', '.join(CLIP_POLICIES)})")
        elif self.clip_policy == "windows" and not 0 <= self.window_overlap < self.num_frames:
            problems.append(f"window_overlap={self.window_overlap} (must be in 0..num_frames-1 = {self.num_frames - 1})")
        if self.target_fps is not None and (self.target_fps <= 0 or self.clip_policy != "windows"):
            problems.append(f"target_fps={self.target_fps} (must be > 0, and only with clip_policy=windows)")
        if self.num_workers < 0 or self.log_every < 0 or self.weight_decay < 0 or self.feature_views < 0:
            problems.append("num_workers, log_every, weight_decay and feature_views must be >= 0")
        if self.augmentations not in AUGMENTATION_SETS:
            problems.append(f"augmentations={self.augmentations!r} (choose one of {', '.join(AUGMENTATION_SETS)})")
        if problems:
            raise ConfigError("invalid run parameters: " + "; ".join(problems))

    @property
    def name(self) -> str:
        """The run folder name: ``run_name`` or one derived from the parameters that matter most."""
        if self.run_name:
            return self.run_name
        return (
            f"{self.model}-{self.encoder}-T{self.num_frames}-S{self.image_size}"
            f"-fold{self.fold}-seed{self.seed}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunParams":
        """Build from a mapping (e.g. config.json's "params"), refusing unknown keys."""
        check_keys(values)
        return cls(**dict(values))


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(RunParams))


def _marked(mark: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(RunParams) if f.metadata[mark])


def path_fields() -> tuple[str, ...]:
    """Fields that name a file or folder (``weights`` also takes the words imagenet/random, so it is not one)."""
    return _marked("path")


def resume_may_change() -> frozenset[str]:
    """Fields that may differ between a run and its resumption without changing its numbers."""
    return frozenset(_marked("may_change_on_resume"))


def field_help(name: str) -> str:
    """The one-line help text of a RunParams field (used for the CLI flags)."""
    for f in dataclasses.fields(RunParams):
        if f.name == name:
            return f.metadata["help"]
    check_keys({name: None})
    raise AssertionError("unreachable")


def check_keys(values: Mapping[str, Any]) -> None:
    """ConfigError naming every key of ``values`` that is no RunParams field (with the closest field)."""
    valid = field_names()
    unknown = [key for key in values if key not in valid]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, valid, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"unknown run parameter(s) {', '.join(hints)}; valid parameters: {', '.join(valid)}"
        )
