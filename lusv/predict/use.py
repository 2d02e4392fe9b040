"""What notebook 09 (use the model) calls: a study's export and test videos, readable tables, its conclusion.

* ``export_and_videos(run_dir, key, model_dir, videos)``: the export to load (``model_dir``, or the
  study's ``key`` exported to ``<run_dir>/export/<key>`` when None) and the videos to predict
  (``videos``, or a labels CSV of the study's temporally separated or held-out videos, written to
  ``<run_dir>/use_the_model/test_videos.csv``: videos no fold model trained on);
* ``card_body(model)``: the export's model card without its YAML header, for display;
* ``readable_predictions(table)``, ``call_summary(table, model)``: the predictions as a reader wants them;
* ``labelled_auc(table)``: AUCs (95% CIs) where the rows carry labels (a labels CSV input);
* ``use_conclusion(...)``: the notebook's closing text, generated from those tables.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lusv.data.patterns import DISPLAY_NAMES, PATTERNS
from lusv.data.prepared import Prepared
from lusv.errors import ConfigError
from lusv.infra.io import read_table, write_csv
from lusv.paths import in_repository
from lusv.predict.batch import attention_figure
from lusv.predict.export import export_study
from lusv.report.tables import format_auc_ci
from lusv.stats.metrics import summarize_predictions

SET_APART = (("temporal_test", "temporal_csv", "temporally separated"), ("held_out", "held_out_csv", "held-out"))


def export_and_videos(run_dir: str | Path, key: str = "luvnet", model_dir: str | Path | None = None,
                      videos: str | Path | None = None) -> tuple[Path, Path, str]:
    """(export folder, what to predict, what those videos are) for notebook 09."""
    run_dir = in_repository(run_dir)
    model = Path(model_dir) if model_dir is not None else export_study(run_dir, key, run_dir / "export" / key)
    if videos is not None:
        return model, Path(videos), f"the videos of {videos}"
    found = set_apart_videos(run_dir)
    if found is None:
        raise ConfigError(f"{run_dir} has no temporally separated or held-out test videos: pass videos= (a folder, "
                          "a video file or a labels CSV)")
    chosen, name = found
    csv = write_csv(run_dir / "use_the_model" / "test_videos.csv", chosen[["clip_id", "path", "patient_id", *PATTERNS]])
    return model, csv, f"the study's {len(chosen)} {name} test videos (no fold model trained on them)"


def set_apart_videos(run_dir: str | Path) -> tuple[pd.DataFrame, str] | None:
    """The labels of the study's temporally separated test videos (else its held-out ones) and
    the set's name; None when it has neither."""
    prepared = Prepared.load(in_repository(run_dir))
    labels = read_table(prepared.labels_csv)
    for role, attribute, name in SET_APART:
        path = getattr(prepared, attribute)
        if path is not None and Path(path).is_file():
            split = read_table(path)
            chosen = labels[labels["clip_id"].isin(set(split.loc[split["split"] == role, "clip_id"]))]
            if len(chosen):
                return chosen, name
    return None


def card_body(model) -> str:
    """The model card without its YAML header."""
    text = model.card
    if text.startswith("---"):
        end = text.find("\n---", 3)
        text = text[end + 4:] if end >= 0 else text
    return text.strip()


def readable_predictions(table: pd.DataFrame) -> pd.DataFrame:
    """One row per video: name, status, frames/windows, each pattern's probability and call."""
    out = pd.DataFrame({"video": table["clip_id"], "status": table["status"],
                        "frames": table["frames"], "windows": table["windows"]})
    for pattern in PATTERNS:
        out[f"{DISPLAY_NAMES[pattern]} p"] = table[f"p_{pattern}"]
        if f"call_{pattern}" in table and table[f"call_{pattern}"].notna().any():
            out[f"{DISPLAY_NAMES[pattern]} call"] = table[f"call_{pattern}"].map(
                lambda v: "" if pd.isna(v) else ("yes" if v == 1 else "no"))
    failed = table["status"] != "ok"
    if failed.any():
        out["reason"] = table["reason"].where(failed, "")
    return out


def call_summary(table: pd.DataFrame, model) -> pd.DataFrame:
    """Per pattern: the threshold, videos called positive, and the mean probability (ok rows)."""
    ok = table[table["status"] == "ok"]
    rows = []
    for pattern in PATTERNS:
        threshold = (model.thresholds or {}).get(pattern)
        calls = ok[f"call_{pattern}"] if f"call_{pattern}" in ok else pd.Series(dtype=float)
        rows.append({"pattern": DISPLAY_NAMES[pattern], "threshold": threshold,
                     "called positive": int((calls == 1).sum()) if calls.notna().any() else None,
                     "videos": len(ok), "mean probability": ok[f"p_{pattern}"].mean()})
    return pd.DataFrame(rows)


def labelled_auc(table: pd.DataFrame) -> pd.DataFrame | None:
    """AUC with DeLong 95% CIs of the ok rows that carry labels; None when no pattern is labelled."""
    ok = table[table["status"] == "ok"]
    if ok.empty or ok[list(PATTERNS)].isna().all().all():
        return None
    rows = ok.assign(patient_id=ok["patient_id"].fillna(ok["clip_id"]).astype(str))
    return summarize_predictions(rows, n_boot=200)


def use_conclusion(table: pd.DataFrame, model, what: str, auc: pd.DataFrame | None) -> str:
    """The closing text of notebook 09, from the predictions and (when labelled) their AUCs."""
    ok = table[table["status"] == "ok"]
    counts = table["status"].value_counts()
    text = (f"The exported {model.config.get('model_name', model.params.model)} ({len(model.models)} fold "
            f"model(s), {model.source.name}) scored {len(ok)} of {len(table)} files ({what})")
    problems = int(counts.get("failed", 0)) + int(counts.get("skipped", 0))
    text += f"; {problems} could not be used, each listed with its reason." if problems else "; every file was usable."
    if model.thresholds is not None and len(ok):
        called = ", ".join(f"{DISPLAY_NAMES[p]} {int((ok[f'call_{p}'] == 1).sum())}" for p in PATTERNS)
        text += f" Videos called positive at the study's thresholds: {called}."
    if auc is not None:
        macro = auc.set_index("pattern").loc["macro"]
        text += (f" On these labelled videos the macro AUC is {format_auc_ci(macro['auc'], macro['ci_low'], macro['ci_high'])} "
                 f"over {len(ok)} videos: with so few videos the interval, not the point, is the finding.")
    return text


def most_confident_figure(model, table: pd.DataFrame, plot_dir: str | Path) -> tuple[str, Path]:
    """The attention figure of the ok video with the highest summed probability: (its name, the PNG)."""
    ok = table[table["status"] == "ok"]
    if ok.empty:
        raise ConfigError("no video was scored: nothing to show")
    row = ok.loc[ok[[f"p_{p}" for p in PATTERNS]].sum(axis=1).idxmax()]
    return row["clip_id"], attention_figure(model, row["path"], plot_dir, clip_id=row["clip_id"])
