"""The plan of a study before any training: every (configuration, fold) run, notebook by notebook,
what each model costs, and the totals to budget with (``lusv plan``, ``run_all.sh --plan``).

What the notebooks train comes from the one place that decides it, ``lusv.models.roster.
study_configurations`` (notebook 02 LUV-Net, 03 the roster, 04 the temporal ablation and the K and
H sweeps; 04's point at the profile's own K and H is 02's run, reused and not counted), under the
same ``models`` and ``folds`` subset the notebooks take. Per model: parameters, GMAC per clip, and
seconds per training step and peak memory at the profile's batch (``lusv.train.step_cost``:
measured by a few steps at the real shapes on this device, or, where that cannot run here (the
paper profile without a GPU), estimated from the multiply-accumulates at a stated throughput and
labelled so). A run's time is an upper bound at the profile's maximum epochs (early stopping can
end it sooner): per epoch its training steps and one pass over the validation fold, then one
prediction pass over the validation, test and set-apart clips.

Clip counts come from the prepared study (``prepare/``) when notebook 01 has run, else from the
profile's synthetic dataset sizes, else from the dataset's labels table (one clip per video), and
the plan says which.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from lusv.config import held_out_fraction, params_for, RunParams, synthetic_options
from lusv.data.prepared import load_dataset, Prepared
from lusv.data.sources import get_source
from lusv.data.windows import window_starts
from lusv.infra.devices import resolve_device
from lusv.infra.io import read_table
from lusv.models import roster
from lusv.train import step_cost
from lusv.train.step_cost import ModelFigures, StepCost

TEMPORAL_FRACTION = 0.2  # lusv.study.prepare's default share of clips in the temporally separated set
GB = 1e9


@dataclass(frozen=True)
class ClipCounts:
    """Clips per fold run (means over the folds) and in the whole study."""

    train: float
    val: float
    predicted: float  # what a finished run predicts: its validation and test folds and the set-apart test sets
    development: float  # clips in the folds (each gets the feature views of a frozen encoder)
    clips: float  # every clip of the study
    source: str  # where the counts come from


@dataclass
class ModelPlan:
    """One configuration of the plan: its notebook, folds, run parameters and costs."""

    notebook: str
    key: str
    folds: list[int]
    params: RunParams
    figures: ModelFigures
    step: StepCost
    epoch_seconds: float  # its training steps and one pass over the validation fold
    run_seconds: float  # one run, at most (the profile's maximum epochs, then its predictions)

    @property
    def checkpoint_bytes(self) -> int:
        return step_cost.checkpoint_bytes(self.figures) * len(self.folds)


@dataclass
class StudyPlan:
    """The whole plan; ``text()`` is what ``lusv plan`` prints."""

    profile: str
    data: str
    device: str
    counts: ClipCounts
    models: list[ModelPlan]
    reused: list[tuple[str, str, str]] = field(default_factory=list)  # (notebook, key, why)
    feature_seconds: float = 0.0  # a frozen encoder's feature extraction, once per study
    feature_how: str = ""
    linear_probe: bool = False
    opt_in: list[str] = field(default_factory=list)  # keys trained only when --models names them

    @property
    def runs(self) -> int:
        return sum(len(m.folds) for m in self.models)

    def runs_by_notebook(self) -> dict[str, int]:
        counts = {notebook: 0 for notebook in roster.NOTEBOOKS}
        for m in self.models:
            counts[m.notebook] += len(m.folds)
        return counts

    @property
    def hours(self) -> float:
        return (sum(m.run_seconds * len(m.folds) for m in self.models) + self.feature_seconds) / 3600

    @property
    def checkpoint_gb(self) -> float:
        return sum(m.checkpoint_bytes for m in self.models) / GB

    @property
    def estimated(self) -> bool:
        return any(not m.step.measured for m in self.models)

    def runs_table(self) -> pd.DataFrame:
        """One row per configuration: notebook, key, the folds it trains, runs."""
        rows = [{"notebook": m.notebook, "configuration": m.key, "folds": _folds_text(m.folds), "runs": len(m.folds)}
                for m in self.models]
        return pd.DataFrame(rows, columns=["notebook", "configuration", "folds", "runs"])

    def models_table(self) -> pd.DataFrame:
        """One row per configuration: size, cost, step time and memory, time per run and in all, disk."""
        rows = []
        for m in self.models:
            rows.append({
                "configuration": m.key, "parameters (M)": round(m.figures.parameters / 1e6, 2),
                "GMAC per clip": round(m.figures.gmac_per_clip, 2), "s per step": _seconds_text(m.step.seconds),
                "peak memory (GB)": round(m.step.peak_mib * 2**20 / GB, 2),
                "min per epoch": round(m.epoch_seconds / 60, 2), "h per run (at most)": round(m.run_seconds / 3600, 3),
                "runs": len(m.folds),
                "device-hours": round(m.run_seconds * len(m.folds) / 3600, 2),
                "checkpoints (GB)": round(m.checkpoint_bytes / GB, 2),
                "figures": "measured" if m.step.measured else "estimated",
            })  # fmt: skip
        return pd.DataFrame(rows)

    def text(self) -> str:
        """The plan as printed: what runs, what each model costs, the totals, and how they were had."""
        first = self.models[0].params if self.models else params_for(self.profile)
        where = f"{self.models[0].step.device} (estimated)" if self.estimated and self.models else self.device
        by_notebook = ", ".join(f"{nb} {n}" for nb, n in self.runs_by_notebook().items())
        lines = [
            f"lusv plan: profile {self.profile}, data {self.data}; nothing is trained",
            f"clips per fold run: {self.counts.train:.0f} training, {self.counts.val:.0f} validation, "
            f"{self.counts.predicted:.0f} predicted at the end ({self.counts.source})",
            f"each run: batch {first.batch_size}, {first.num_frames} x {first.image_size} x {first.image_size}, "
            f"at most {first.epochs} epochs (early stopping, patience {first.patience}, can end it sooner)",
            "", f"Runs, notebook by notebook: {self.runs} training runs ({by_notebook})",
            self.runs_table().to_string(index=False) if self.models else "(none)",
            *[f"{notebook}: {key} is not trained again: {why}" for notebook, key, why in self.reused],
            "", f"Per model, on {where}:", self.models_table().to_string(index=False) if self.models else "(none)",
        ]
        if self.feature_seconds:
            lines += ["", f"feature extraction (frozen encoder, once for every 2-D model and fold): "
                          f"{self.feature_seconds / 60:.1f} min ({self.feature_how})"]
        if self.opt_in:
            lines += [f"not trained unless --models names them (opt-in in this profile): {', '.join(self.opt_in)}"]
        if self.linear_probe:
            lines += ["linear probe (notebook 03's reference row): a logistic regression on the cached features, seconds"]
        lines += ["", f"Total: {self.runs} runs, at most {self.hours:.2f} device-hours on {where}, "
                      f"checkpoints {self.checkpoint_gb:.1f} GB (checkpoint.pt + best.pt of every run)"]
        lines += ["", "How the figures were had:", *sorted({f"  {m.step.how}" for m in self.models})]
        return "\n".join(lines)


def _folds_text(folds: list[int]) -> str:
    if len(folds) > 2 and folds == list(range(folds[0], folds[-1] + 1)):
        return f"{folds[0]}-{folds[-1]}"
    return ",".join(map(str, folds))


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.3g}"


def clip_counts(profile: str, data: str, data_path: Optional[str], prepared: Optional[Prepared], num_folds: int,
                params: RunParams) -> ClipCounts:
    """Clips per fold run: exact from a prepared study, else from the profile's synthetic dataset
    sizes or the dataset's labels table (approximate: set-apart shares as ``lusv.study.prepare``'s)."""
    if prepared is not None:
        return _prepared_counts(prepared)
    if get_source(data).generated:
        options = synthetic_options(profile)
        videos, frames = options["n_clips"], options["num_frames"]
        source = f"the {profile} profile's synthetic dataset of {videos} videos, approximate until notebook 01 has run"
    else:
        videos, frames = len(load_dataset(data, data_path)), None
        source = f"the {videos} videos of the labels table, approximate until notebook 01 has run"
    policy = get_source(data).clip_policy or params.clip_policy
    per_video = 1
    if policy == "windows":
        if frames is None:
            source += "; counted as one window per video, a lower bound: notebook 01 cuts them"
        else:
            per_video = len(window_starts(frames, params.num_frames, params.window_overlap))
    clips = videos * per_video
    development = clips * (1 - TEMPORAL_FRACTION) * (1 - held_out_fraction(profile))
    per_fold = development / num_folds
    return ClipCounts(development - 2 * per_fold, per_fold, 2 * per_fold + clips - development, development, clips, source)


def _prepared_counts(prepared: Prepared) -> ClipCounts:
    """Exact counts of a prepared study (windows under the windows policy), averaged over its folds."""
    folds = prepared.folds()
    if prepared.clip_policy == "windows":
        per_video = read_table(prepared.windows_csv).groupby("video_id").size()
    else:
        per_video = pd.Series(1, index=pd.Index(prepared.labels()["clip_id"]))
    per_fold = [float(per_video.reindex(folds.loc[folds["fold"] == f, "clip_id"]).fillna(0).sum())
                for f in range(prepared.num_folds)]
    set_apart = 0.0
    for path, split in ((prepared.temporal_csv, "temporal_test"), (prepared.held_out_csv, "held_out")):
        if path is not None:
            table = read_table(path)
            set_apart += float(per_video.reindex(table.loc[table["split"] == split, "clip_id"]).fillna(0).sum())
    k, development = prepared.num_folds, sum(per_fold)
    val = sum(per_fold[(f + 1) % k] for f in range(k)) / k
    return ClipCounts(development - 2 * development / k, val, 2 * development / k + set_apart, development,
                      development + set_apart, f"prepared study {prepared.run_dir}")


def study_plan(profile: str, data: str = "synthetic", data_path: Optional[str] = None,
               run_dir: Optional[str | Path] = None, models=None, folds=None, device: str = "auto",
               measure: bool = True) -> StudyPlan:
    """The plan of ``profile`` on ``data`` (the study in ``run_dir`` where notebook 01 has prepared
    it: its profile must agree), restricted to ``models`` and ``folds`` as the notebooks would be.

    ``measure=False`` estimates everything (no step runs). On ``device`` (auto: the GPU if any)
    a few steps are measured where they fit (``step_cost.can_measure``); others are estimated
    for a GPU at ``step_cost.GPU_THROUGHPUT``."""
    prepared = Prepared.recorded(run_dir) if run_dir is not None else None
    if prepared is not None:
        profile = prepared.resolve_profile(profile)
        data, data_path = prepared.data, prepared.data_path
    inputs = prepared.training_inputs() if prepared is not None else _profile_inputs(profile, data)
    num_folds = prepared.num_folds if prepared is not None else params_for(profile).num_folds
    fold_list = roster.check_folds(folds, num_folds) or list(range(num_folds))
    plan_device = resolve_device(device)
    counts = clip_counts(profile, data, data_path, prepared, num_folds, params_for(profile, **inputs))
    asked = roster.check_models(profile, models)
    lines, reused = [], []
    for notebook, configurations in roster.study_configurations(profile, asked).items():
        for key, overrides in configurations.items():
            p = params_for(profile, **{**inputs, **overrides, "run_name": key})
            lines.append(_model_plan(notebook, key, fold_list, p, counts, plan_device, measure))
    if roster.REFERENCE in roster.sweep_configurations(profile, asked):
        reused.append(("04_ablation_temporal", roster.REFERENCE, "its K and H are the profile's own, so notebook 02's runs "
                       "are the sweeps' point there"))
    plan = StudyPlan(profile, data, str(plan_device), counts, lines, reused,
                     linear_probe=roster.with_linear_probe(profile, models=asked),
                     opt_in=[key for key in roster.opt_in(profile) if key not in (asked or [])])
    _add_feature_extraction(plan, plan_device, measure)
    return plan


def _profile_inputs(profile: str, data: str) -> dict:
    """The shape settings ``lusv.study.prepare`` would record for ``data`` under ``profile``."""
    p = params_for(profile)
    return {"num_frames": p.num_frames, "image_size": p.image_size,
            "clip_policy": get_source(data).clip_policy or p.clip_policy}


def _model_plan(notebook: str, key: str, folds: list[int], p: RunParams, counts: ClipCounts, device: torch.device,
                measure: bool) -> ModelPlan:
    figures = step_cost.model_figures(p)
    if measure and step_cost.can_measure(figures, p, device):
        step = step_cost.measure_step(dataclasses.replace(p, device=str(device)), device)
    else:
        step = step_cost.estimate_step(figures, p)
    batches = step_cost.ceil_div
    per_epoch = (batches(batches(counts.train, p.batch_size), p.grad_accum) * step.seconds
                 + batches(counts.val, p.batch_size) * step.eval_seconds)
    run_seconds = p.epochs * per_epoch + batches(counts.predicted, p.batch_size) * step.eval_seconds
    return ModelPlan(notebook, key, folds, p, figures, step, per_epoch, run_seconds)


def _add_feature_extraction(plan: StudyPlan, device: torch.device, measure: bool) -> None:
    """A frozen encoder's features are computed once for the study: every clip plain, and the
    development clips in ``feature_views`` augmented views too."""
    frozen = [m for m in plan.models if not m.params.train_encoder]
    if not frozen:
        return
    first = frozen[0]
    measured = measure and first.step.measured
    per_clip = step_cost.feature_seconds_per_clip(first.figures, first.params, device, measured)
    passes = plan.counts.clips + plan.counts.development * first.params.feature_views
    plan.feature_seconds = per_clip * passes
    plan.feature_how = (f"{passes:.0f} clip passes of {first.params.encoder} at "
                        f"{per_clip:.3g} s per clip, {'measured' if measured else 'estimated'}")
