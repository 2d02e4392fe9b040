"""Result tables and figures: the paper's Tables 1-3, ROC curves, learning curves, example frames.

The tables and the ROC figure take out-of-fold predictions of several models as a mapping
``{model name: predictions DataFrame}`` (contract: clip_id, patient_id, fold, p_<pattern>,
<pattern>; cross-validated predictions also model_fold, see ``threshold_table``); the mapping's
order is the row order of every table and the legend order.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from lusv.errors import ConfigError
from lusv.infra.io import atomic_path, read_table, write_csv
from lusv.stats.metrics import (
    PredictionsError,
    compare_models,
    prediction_arrays,
    roc_auc,
    sensitivity_specificity,
    summarize_predictions,
    youden_threshold,
)
from lusv.data.patterns import DISPLAY_NAMES, PATTERNS
from lusv.report.names import model_name

logger = logging.getLogger(__name__)

Predictions = Mapping[str, pd.DataFrame]
SUMMARY_NAMES = {"macro": "Macro", "micro": "Micro"}


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a predictions CSV, keeping clip and patient ids as strings."""
    return read_table(path)


def format_auc_ci(auc: float, low: float, high: float, digits: int = 3, ci_digits: int = 2) -> str:
    """'0.912 (0.88–0.94)'; an undefined AUC is 'n/a', a missing CI is left out."""
    if not math.isfinite(auc):
        return "n/a"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{auc:.{digits}f}"
    return f"{auc:.{digits}f} ({low:.{ci_digits}f}–{high:.{ci_digits}f})"


def auc_summaries(
    predictions: Predictions, ci: str = "delong", n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Long numeric table: ``model`` + the columns of ``lusv.stats.metrics.summarize_predictions``."""
    parts = [
        summarize_predictions(pred, ci=ci, n_boot=n_boot, seed=seed).assign(model=name)
        for name, pred in predictions.items()
    ]
    table = pd.concat(parts, ignore_index=True)
    return table[["model", *(c for c in table.columns if c != "model")]]


def auc_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """Table 1: one row per model, one column per pattern (display names) + Macro + Micro,
    each cell 'AUC (CI low–CI high)'."""
    cells = summaries.assign(
        cell=[format_auc_ci(a, lo, hi) for a, lo, hi in summaries[["auc", "ci_low", "ci_high"]].itertuples(index=False)]
    )
    wide = cells.pivot(index="model", columns="pattern", values="cell")
    columns = [c for c in (*PATTERNS, "macro", "micro") if c in wide.columns]
    models = list(dict.fromkeys(summaries["model"]))
    names = {**DISPLAY_NAMES, **SUMMARY_NAMES}
    return wide.loc[models, columns].rename(columns=names).rename_axis(index="Model", columns=None).reset_index()


def delong_table(predictions: Predictions, reference: str = "luvnet") -> pd.DataFrame:
    """Table 2: paired DeLong p-value of each comparator vs ``reference``, per pattern.

    Rows = comparators (mapping order), columns = Model + pattern display names.
    """
    if reference not in predictions:
        raise ConfigError(f"reference model {reference!r} is not among the predictions {list(predictions)}")
    rows = []
    for name, pred in predictions.items():
        if name == reference:
            continue
        tests = compare_models(predictions[reference], pred, names=(reference, name))
        rows.append({"Model": name, **dict(zip(tests["pattern"].map(DISPLAY_NAMES), tests["p_value"]))})
    return pd.DataFrame(rows, columns=["Model", *(DISPLAY_NAMES[p] for p in PATTERNS)])


def _threshold_counts(val: pd.DataFrame, test: pd.DataFrame, pattern: str) -> tuple[float, list[int]]:
    """Youden threshold chosen on ``val``, confusion counts on ``test``; no counts (zeros) when
    ``val`` lacks a class of ``pattern`` (NaN threshold)."""
    threshold = youden_threshold(val[pattern], val[f"p_{pattern}"])
    if not math.isfinite(threshold):
        return threshold, [0, 0, 0, 0]
    counts = sensitivity_specificity(test[pattern], test[f"p_{pattern}"], threshold)
    return threshold, [counts.tp, counts.fn, counts.tn, counts.fp]


def _folds_text(folds) -> str:
    return ", ".join(str(int(f)) for f in folds)


def _per_fold_model(val: pd.DataFrame, test: pd.DataFrame, pattern: str, name: str) -> dict:
    """Each fold model's threshold from its own validation predictions, applied to its own test
    predictions; counts pooled over the fold models."""
    model_folds = sorted(test["model_fold"].unique())
    missing = [m for m in model_folds if not (val["model_fold"] == m).any()]
    if missing:
        raise PredictionsError(
            f"{name}: no validation predictions of fold model(s) {_folds_text(missing)}, whose test "
            "predictions are given: thresholds must come from the model that scored the test clips"
        )
    thresholds, counts, pooled_for = [], np.zeros(4, dtype=int), []
    for m in model_folds:
        v, t = val[val["model_fold"] == m], test[test["model_fold"] == m]
        threshold, c = _threshold_counts(v, t, pattern)
        if not math.isfinite(threshold):  # this model's validation fold has one class only
            pooled_for.append(m)
            threshold, c = _threshold_counts(val, t, pattern)
        thresholds.append(threshold)
        counts += c
    source = "per fold model: chosen on its validation predictions, applied to its test predictions"
    if pooled_for:
        source += (
            f"; fold model(s) {_folds_text(pooled_for)}: one class in its validation fold, "
            "threshold chosen on all fold models' validation predictions pooled"
        )
    finite = [t for t in thresholds if math.isfinite(t)]
    return {
        "threshold": float(np.median(finite)) if finite else float("nan"),
        "counts": counts.tolist(),
        "threshold_source": source,
        "fold_thresholds": "; ".join(f"{int(m)}: {t:.4g}" for m, t in zip(model_folds, thresholds)),
    }


def _threshold_mode(name: str, test: pd.DataFrame, val: pd.DataFrame | None
                    ) -> tuple[str, str | None, pd.DataFrame]:
    """How ``threshold_table`` pairs thresholds with test clips: ("per fold model", None, val)
    or ("pooled", threshold source, the predictions the thresholds are chosen on)."""
    if val is None:
        logger.warning("no validation predictions for %s: Youden thresholds chosen on test (optimistic)", name)
        return "pooled", "test (optimistic)", test
    if "model_fold" in test.columns:
        if "model_fold" not in val.columns:
            raise PredictionsError(
                f"{name}: the test predictions say which fold model scored each clip (model_fold) but "
                "the validation predictions do not: both need model_fold to pair each model's threshold "
                "with its test clips"
            )
        return "per fold model", None, val
    if "fold" in test.columns:
        raise PredictionsError(
            f"{name}: the test predictions have a fold column but no model_fold, so which fold model's "
            "validation predictions should set the thresholds is unknown; add model_fold (the fold of the "
            "model that predicted each clip, as lusv.train writes it)"
        )
    source = "one threshold for all clips, chosen on the validation predictions" + (
        f" of fold models {_folds_text(sorted(val['model_fold'].unique()))} pooled"
        if "model_fold" in val.columns else ""
    )
    return "pooled", source, val


def threshold_table(test_predictions: Predictions, val_predictions: Predictions | None = None) -> pd.DataFrame:
    """Table 3: sensitivity and specificity at Youden thresholds (``score >= threshold`` positive).

    Thresholds are chosen on ``val_predictions[model]`` and applied to ``test_predictions[model]``:

    * Both tables have ``model_fold`` (the fold of the model that predicted each clip; in the
      validation table a clip's own ``fold`` is model_fold + 1): each fold model's threshold is
      chosen on that model's validation predictions and applied to that model's test
      predictions; counts are pooled over the fold models, ``threshold`` is the median of the
      per-model thresholds and ``fold_thresholds`` lists them ("model fold: threshold").
    * The test table has neither ``model_fold`` nor ``fold`` (e.g. the fold ensemble's
      predictions on the temporal test set, which no single fold model made): one threshold per
      pattern, chosen on all validation predictions pooled, applied to every test clip.
    * A test table with ``fold`` but no ``model_fold`` is refused (which model scored which clip
      is unknown; every predictions file lusv writes has ``model_fold``).
    * Without validation predictions the threshold is chosen on the test predictions themselves
      — optimistic, and marked so in ``threshold_source``.

    A validation set with one class only for a pattern gives no threshold: a fold model's falls
    back to the pooled validation predictions (said in ``threshold_source``); with no threshold
    at all the counts are 0 and sensitivity/specificity NaN.

    Columns: model, pattern, threshold, sensitivity, specificity, tp, fn, tn, fp,
    threshold_source, fold_thresholds.
    """
    rows = []
    for name, test in test_predictions.items():
        val = None if val_predictions is None else val_predictions.get(name)
        prediction_arrays(test)  # clear error for missing columns
        mode, source, val = _threshold_mode(name, test, val)
        prediction_arrays(val)
        for pattern in PATTERNS:
            if mode == "per fold model":
                cell = _per_fold_model(val, test, pattern, name)
            else:
                threshold, counts = _threshold_counts(val, test, pattern)
                cell = {"threshold": threshold, "counts": counts, "threshold_source": source, "fold_thresholds": ""}
            tp, fn, tn, fp = cell["counts"]
            rows.append(
                {
                    "model": name,
                    "pattern": pattern,
                    "threshold": cell["threshold"],
                    "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
                    "specificity": tn / (tn + fp) if tn + fp else float("nan"),
                    "tp": tp, "fn": fn, "tn": tn, "fp": fp,
                    "threshold_source": cell["threshold_source"],
                    "fold_thresholds": cell["fold_thresholds"],
                }
            )
    return pd.DataFrame(rows)


def results_tables(
    predictions: Predictions,
    reference: str = "luvnet",
    val_predictions: Predictions | None = None,
    ci: str = "delong",
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """All result tables at once: auc_summary (numeric), auc_table (formatted, Table 1),
    delong_p (Table 2; only when ``reference`` is among the models), thresholds (Table 3)."""
    summaries = auc_summaries(predictions, ci=ci, n_boot=n_boot, seed=seed)
    tables = {"auc_summary": summaries, "auc_table": auc_table(summaries)}
    if reference in predictions and len(predictions) > 1:
        tables["delong_p"] = delong_table(predictions, reference=reference)
    tables["thresholds"] = threshold_table(predictions, val_predictions)
    return tables


def roc_figure(predictions: Predictions, patterns: Sequence[str] = PATTERNS):
    """ROC curves: one panel per pattern (2 x 2), one line per model labelled with its reader's
    name (``lusv.report.names``) and AUC in a legend under the panel (inside, it hid the curves)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from sklearn.metrics import roc_curve

    n_cols = 2
    n_rows = math.ceil(len(patterns) / n_cols)
    legend_rows = math.ceil(len(predictions) / 2)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.9 * n_cols, (4.3 + 0.2 * legend_rows) * n_rows), squeeze=False,
                             layout="constrained")
    colors = sns.color_palette("colorblind", n_colors=max(len(predictions), 1))
    for ax, pattern in zip(axes.ravel(), patterns):
        for color, (name, pred) in zip(colors, predictions.items()):
            keep = pred[pattern].notna()
            y, score = pred.loc[keep, pattern].to_numpy() > 0.5, pred.loc[keep, f"p_{pattern}"].to_numpy()
            if y.all() or not y.any():
                continue  # no ROC without both classes
            fpr, tpr, _ = roc_curve(y, score)
            ax.plot(fpr, tpr, color=color, lw=1.6, label=f"{model_name(name)} (AUC {roc_auc(y, score):.3f})")
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
        ax.set(title=DISPLAY_NAMES.get(pattern, pattern), xlabel="1 - specificity", ylabel="Sensitivity",
               xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="small", frameon=False)
        else:  # say why the panel is empty instead of leaving the reader to guess
            ax.text(0.5, 0.5, "no ROC: only one class\namong the labelled clips", ha="center", va="center",
                    fontsize="small", color="0.3")
    for ax in axes.ravel()[len(patterns):]:
        ax.remove()
    return fig


def save_tables(tables: Mapping[str, pd.DataFrame], out_dir: str | os.PathLike) -> list[Path]:
    """Write each table to ``out_dir/<name>.csv`` atomically; returns the paths written."""
    out_dir = Path(out_dir)
    return [write_csv(out_dir / f"{name}.csv", table) for name, table in tables.items()]


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically; the format follows the file suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return path


def learning_curves_figure(run_dirs: Sequence[str | os.PathLike]):
    """Training and validation loss and validation macro AUC per epoch, one line per run (fold)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    logs = []
    for run_dir in run_dirs:
        log = pd.read_csv(Path(run_dir) / "log.csv")
        log["run"] = Path(run_dir).name
        logs.append(log)
    table = pd.concat(logs, ignore_index=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, column, title in zip(
        axes, ("train_loss", "val_loss", "val_macro_auc"), ("training loss", "validation loss", "validation macro AUC")
    ):
        sns.lineplot(data=table, x="epoch", y=column, hue="run", ax=ax, legend=ax is axes[-1])
        ax.set(title=title, ylabel="")
    if axes[-1].get_legend() is not None:
        sns.move_legend(axes[-1], "center left", bbox_to_anchor=(1.02, 0.5), fontsize="small", title=None)
    fig.tight_layout()
    return fig


def example_frames_figure(
    labels: pd.DataFrame,
    load_frames: Callable[[str], tuple[np.ndarray, int]],
    frame_truth: pd.DataFrame | None = None,
    n_frames: int = 6,
    seed: int = 0,
    title: str | None = None,
):
    """One row per pattern: ``n_frames`` evenly spaced frames of one clip with that pattern.

    ``load_frames(clip_id)`` returns a clip's gray frames (T, H, W) uint8 and its number of real
    frames: the prepared clips of the cache (what the models see) for any dataset, or a source's
    own video frames. With ``frame_truth`` (long table: clip_id, frame, one 0/1 column per
    pattern, indexed like those frames) clips whose pattern comes and goes are preferred, so a
    row shows frames with and without it: frames where the pattern is present get a green frame
    and "present" in the title, the others a grey frame. A row says so when no clip has the
    pattern. The figure is returned, not saved.
    """
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(PATTERNS), n_frames, figsize=(1.7 * n_frames, 1.9 * len(PATTERNS)), squeeze=False)
    for row, pattern in zip(axes, PATTERNS):
        row[0].set_ylabel(DISPLAY_NAMES[pattern], fontsize=10)
        clip_id = _example_clip(labels, frame_truth, pattern, rng)
        if clip_id is None:
            for ax in row:
                ax.set_xticks([]), ax.set_yticks([])
            row[0].set_title(f"no clip with {DISPLAY_NAMES[pattern]}", fontsize=8, loc="left")
            continue
        _show_example_row(row, clip_id, pattern, load_frames, frame_truth)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _example_clip(labels: pd.DataFrame, frame_truth: pd.DataFrame | None, pattern: str,
                  rng: np.random.Generator) -> str | None:
    """A clip labelled with ``pattern`` (one whose pattern comes and goes when the truth says so)."""
    positive = labels[labels[pattern] == 1]
    if not len(positive):
        return None
    if frame_truth is None:
        return positive["clip_id"].iloc[int(rng.integers(len(positive)))]
    fraction = frame_truth[frame_truth.clip_id.isin(positive.clip_id)].groupby("clip_id")[pattern].mean()
    partial = fraction[(fraction > 0) & (fraction < 1)].index
    pool = partial if len(partial) else fraction.index
    return rng.choice(sorted(pool)) if len(pool) else None


def _show_example_row(row, clip_id: str, pattern: str, load_frames, frame_truth: pd.DataFrame | None) -> None:
    frames, length = load_frames(clip_id)
    shown = np.linspace(0, length - 1, len(row)).round().astype(int)
    present = None
    if frame_truth is not None:
        clip_truth = frame_truth[frame_truth.clip_id == clip_id].set_index("frame")[pattern]
        present = clip_truth.reindex(shown).fillna(0).to_numpy().astype(bool)
    for col, (ax, index) in enumerate(zip(row, shown)):
        ax.imshow(frames[index], cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([]), ax.set_yticks([])
        title = f"frame {index}"
        if present is not None:
            colour = "tab:green" if present[col] else "0.6"
            title += "\npresent" if present[col] else "\nabsent"
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3 if present[col] else 1)
        ax.set_title(title, fontsize=7)
    row[0].set_ylabel(f"{DISPLAY_NAMES[pattern]}\n{clip_id}", fontsize=9)


def training_table(run_dirs: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per training run (fold) from its log.csv: epochs run, the best epoch (lowest
    validation loss, the one whose weights are kept), its validation loss and macro AUC, and
    the training time: what the notebooks show instead of per-epoch lines."""
    rows = []
    for run_dir in run_dirs:
        log = pd.read_csv(Path(run_dir) / "log.csv")
        best = log.loc[log["val_loss"].idxmin()] if len(log) else None
        rows.append({
            "run": Path(run_dir).name, "epochs": len(log),
            "best_epoch": int(best["epoch"]) if best is not None else None,
            "val_loss": best["val_loss"] if best is not None else float("nan"),
            "val_macro_auc": best["val_macro_auc"] if best is not None else float("nan"),
            "seconds": float(log["seconds"].sum()),
        })
    return pd.DataFrame(rows)
