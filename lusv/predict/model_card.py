"""The model card of an export (its README.md), in the layout of the Hugging Face model cards.

A YAML header (license, library, tags, metrics, and a ``model-index`` with the study's macro
AUCs), then: what the model is, intended use, **not a medical device: research use only**,
training data (clips and patients per set, labelled positives per pattern, clips skipped at
ingestion), evaluation (AUCs with 95% CIs per pattern of every test set the study evaluated,
external validation where the study has it, the decision thresholds), limitations, how to run it.

Every number is read from the study's files (``prepare/``, ``tables/<split>_auc_summary.csv``,
``external/<dataset>/external_auc.csv``) or from the export's own thresholds; none is typed.
A study whose results tables were not made yet gets a card that says so (run ``lusv report``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from lusv.data.patterns import DISPLAY_NAMES, PATTERNS
from lusv.infra.io import read_table
from lusv.report.tables import format_auc_ci

log = logging.getLogger(__name__)

SPLIT_NAMES = {"test": "cross-validated (out-of-fold: each development video scored by the fold model that never "
                       "saw its patient)",
               "held_out": "held-out test set (patients set apart before the folds; fold ensemble)",
               "temporal_test": "temporally separated test set (patients first seen after the others; fold ensemble)"}
# The licence of the data a study trained on, for the card's header (its weights derive from it).
DATA_LICENSES = {"pocus": ("cc-by-nc-4.0", "the POCUS clips (Born et al.) are mostly CC BY-NC 4.0"),
                 "synthetic": ("other", "trained on lusv's synthetic videos; the lusv project's terms apply")}


def model_card(prepared, key: str, config: dict, thresholds: dict) -> str:
    """The README.md text of an export (see the module docstring)."""
    study = Path(prepared.run_dir)
    evaluation = _evaluations(study, key)
    external = _external(study, key)
    name = config["model_name"]
    sections = [
        _header(prepared, config, evaluation, external),
        f"# {name} for lung-ultrasound videos ({prepared.dataset}, {prepared.profile} profile)\n",
        _summary(config, prepared),
        _intended_use(),
        _training_data(study, prepared),
        _evaluation_text(evaluation, external, thresholds),
        _limitations(prepared, config),
        _how_to_run(config),
    ]
    return "\n".join(sections)


def _evaluations(study: Path, key: str) -> dict[str, pd.DataFrame]:
    found = {}
    for split in SPLIT_NAMES:
        path = study / "tables" / f"{split}_auc_summary.csv"
        if path.is_file():
            table = read_table(path)
            if (table["model"] == key).any():
                found[split] = table[table["model"] == key].set_index("pattern")
    if not found:
        log.warning("%s has no results tables for %s yet: the model card says so (run `lusv report --run-dir %s` "
                    "and export again to include them)", study, key, study)
    return found


def _external(study: Path, key: str) -> dict[str, pd.DataFrame]:
    found = {}
    for path in sorted((study / "external").glob("*/external_auc.csv")):
        table = read_table(path)
        if (table["model"] == key).any():
            found[path.parent.name] = table[table["model"] == key].set_index("pattern")
    return found


def _header(prepared, config: dict, evaluation: dict, external: dict) -> str:
    license_id, _ = DATA_LICENSES.get(prepared.data, ("other", ""))
    lines = ["---", f"license: {license_id}", "library_name: lusv", "pipeline_tag: video-classification", "tags:"]
    lines += [f"  - {tag}" for tag in ("lung-ultrasound", "medical-imaging", "video-classification",
                                       "multi-label-classification", config["key"].replace("_", "-"),
                                       "research-only", "not-a-medical-device")]
    lines += ["metrics:", "  - roc_auc", "model-index:", f"  - name: {config['model_name']} ({prepared.dataset})",
              "    results:"]
    for split, table in evaluation.items():
        lines += _index_entry(SPLIT_NAMES[split].split(" (")[0], prepared.dataset, table.loc["macro", "auc"])
    for dataset, table in external.items():
        macro = table["auc"].dropna().mean() if table["auc"].notna().any() else None
        if macro is not None:
            lines += _index_entry(f"external validation (mean of its patterns' AUCs)", dataset, macro)
    return "\n".join(lines + ["---", ""])


def _index_entry(name: str, dataset: str, value: float) -> list[str]:
    return ["      - task:", "          type: video-classification",
            "          name: multi-label lung-ultrasound pattern classification",
            "        dataset:", f"          name: {dataset}", f"          type: {dataset}",
            "        metrics:", "          - type: roc_auc", f"            name: macro AUC, {name}",
            f"            value: {value:.4f}"]


def _summary(config: dict, prepared) -> str:
    inp = config["input"]
    unit = (f"windows of {inp['num_frames']} frames (overlap {inp['window_overlap']}); a video's probability is the "
            "mean of its windows'" if inp["clip_policy"] == "windows" else f"one clip of {inp['num_frames']} frames "
            "spread over each video")
    return (f"{config['model_name']} (Lee et al., MIDL 2025) trained by lusv {config['lusv_version']} on "
            f"{prepared.dataset}: {len(config['folds'])} fold models (patient-level cross-validation) whose mean "
            "probability is the prediction, four patterns at once (" + ", ".join(DISPLAY_NAMES.values()) + "). "
            f"Encoder {config['encoder']['name']}, {config['encoder']['trained']}; input {unit}, "
            f"{inp['image_size']} x {inp['image_size']} gray frames cropped to the ultrasound sector. "
            f"Study commit {config['study']['git_commit']}.\n")


def _intended_use() -> str:
    return ("## Intended use\n\nResearch on lung-ultrasound video classification: reproducing and comparing "
            "models, scoring a research dataset, studying where the model attends.\n\n"
            "**Not a medical device. Research use only.** It has not been cleared or validated for clinical use; "
            "its outputs must not inform the diagnosis or treatment of any patient.\n")


def _training_data(study: Path, prepared) -> str:
    labels = read_table(prepared.labels_csv)
    sets = [("development (the folds)", read_table(prepared.folds_csv)["clip_id"])]
    for name, path, role in (("temporally separated test", prepared.temporal_csv, "temporal_test"),
                             ("held-out test", prepared.held_out_csv, "held_out")):
        if path is not None and Path(path).is_file():
            split = read_table(path)
            sets.append((name, split.loc[split["split"] == role, "clip_id"]))
    rows = ["| set | clips | patients | " + " | ".join(f"{DISPLAY_NAMES[p]} +/labelled" for p in PATTERNS) + " |",
            "|---|---:|---:|" + "---:|" * len(PATTERNS)]
    for name, ids in sets:
        part = labels[labels["clip_id"].isin(set(ids))]
        cells = [f"{int((part[p] == 1).sum())}/{int(part[p].notna().sum())}" for p in PATTERNS]
        rows.append(f"| {name} | {len(part)} | {part['patient_id'].nunique()} | " + " | ".join(cells) + " |")
    skipped = _skipped(study)
    return ("## Training data\n\n" + f"{prepared.dataset} (source `{prepared.data}`), {len(labels)} usable clips of "
            f"{labels['patient_id'].nunique()} patients{skipped}. The fold models trained on the development set "
            "(each on all folds but its test and validation folds).\n\n" + "\n".join(rows) + "\n")


def _skipped(study: Path) -> str:
    path = study / "prepare" / "ingest_report.csv"
    if not path.is_file():
        return ""
    report = read_table(path)
    skipped = report[report["status"] == "skipped"]
    if skipped.empty:
        return "; no clip was skipped at ingestion"
    why = ", ".join(f"{reason}: {count}" for reason, count in skipped["reason"].value_counts().items())
    return f"; {len(skipped)} clip(s) skipped at ingestion ({why})"


def _evaluation_text(evaluation: dict, external: dict, thresholds: dict) -> str:
    if not evaluation:
        text = "## Evaluation\n\nThe study had no results tables when this model was exported (`lusv report`).\n"
    else:
        rows = ["| set | " + " | ".join(DISPLAY_NAMES.values()) + " | Macro | Micro |", "|---" * 7 + "|"]
        for split, table in evaluation.items():
            cells = [format_auc_ci(*table.loc[p, ["auc", "ci_low", "ci_high"]]) for p in (*PATTERNS, "macro", "micro")]
            rows.append(f"| {SPLIT_NAMES[split]} | " + " | ".join(cells) + " |")
        text = ("## Evaluation\n\nROC AUC (95% CI: DeLong per pattern, patient bootstrap for macro and micro), "
                "from the study's `tables/<set>_auc_summary.csv`, in the study's unit (one row of its "
                "predictions: a window under the windows policy, else a video).\n\n" + "\n".join(rows) + "\n")
    for dataset, table in external.items():
        rows = ["| pattern | labelled | AUC (95% CI) | sensitivity | specificity |", "|---|---:|---|---:|---:|"]
        for p in PATTERNS:
            row = table.loc[p]
            rows.append(f"| {DISPLAY_NAMES[p]} | {int(row['n_labelled'])} | "
                        f"{format_auc_ci(row['auc'], row['ci_low'], row['ci_high'])} | "
                        f"{_number(row['sensitivity'])} | {_number(row['specificity'])} |")
        text += (f"\n### External validation: {dataset}\n\nThe fold ensemble on another dataset, thresholds carried "
                 f"over (the study's `external/{dataset}/external_auc.csv`).\n\n" + "\n".join(rows) + "\n")
    cells = " | ".join(_number(thresholds["thresholds"][p], 4) for p in PATTERNS)
    return text + ("\n### Decision thresholds\n\n| " + " | ".join(DISPLAY_NAMES.values()) + " |\n" + "|---" * 4 +
                   f"|\n| {cells} |\n\n{thresholds['rule']}; chosen on {thresholds['chosen_on']} "
                   f"({thresholds['videos']} videos; `thresholds.json`).\n")


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.{digits}f}"


def _limitations(prepared, config: dict) -> str:
    items = [f"Trained on {prepared.dataset} only: other machines, probes, presets and patient groups may score "
             "differently; validate on your own labelled videos first (`lusv external`).",
             "Every confidence interval reflects the study's few patients; the cross-validated AUCs are "
             "out-of-fold, the thresholds were chosen on validation folds, not on your data.",
             "Input must be B-mode lung-ultrasound video; the crop assumes a bright sector on a dark background. "
             "Anything else is scored all the same, without warning."]
    if prepared.data == "synthetic":
        items.insert(0, "**Trained on synthetic videos**: a pipeline demonstration, not evidence about lung "
                        "ultrasound. Do not use its outputs on real patients' videos for anything.")
    if config["run_params"].get("profile") != "paper":
        items.append(f"Trained under the `{config['run_params'].get('profile')}` profile, not the paper's protocol "
                     "(see docs/profiles.md of lusv).")
    return "## Limitations\n\n" + "\n".join(f"- {item}" for item in items) + "\n"


def _how_to_run(config: dict) -> str:
    return ("## How to run it\n\nInstall lusv (the version in config.json or newer: `pip install -e .` in its repository), then\n\n```bash\n"
            "lusv predict my_videos/ --model THIS_FOLDER --out predictions.csv   # folders, files, DICOM, a labels CSV\n"
            "lusv predict clip.mp4 --model THIS_FOLDER --plots figures/         # + the attention figure per video\n"
            "```\n\nOne row per video: the probability per pattern (mean over the fold models"
            + (" and the video's windows" if config["input"]["clip_policy"] == "windows" else "")
            + "), the 0/1 call at the threshold above, the frames or windows used, and a status. `manifest.json` "
            "holds the SHA-256 of every file: lusv refuses a changed file. The weights are safetensors.\n")
