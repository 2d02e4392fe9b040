"""A verdict on each claim of the paper (``lusv.report.paper_claims``), by one stated rule per kind.

Verdicts: **holds**, **reversed**, **not resolved**, **not tested here**. The rules (``RULES``):

* two models: the macro AUC difference (claimed better - claimed worse) with a 95% CI from the
  paired patient bootstrap (both models scored on the same resamples of patients,
  ``lusv.stats.metrics.compare_macro``), and the per-pattern paired DeLong p-values beside it.
  "holds" when the CI lies above 0, "reversed" when it lies below 0, "not resolved" when it
  contains 0, "not tested here" when the run has no predictions of a model the claim needs;
* best value (K, H): the value with the highest pooled macro AUC here; "holds" when it is the
  claimed value and its 95% CI (patient bootstrap) does not overlap the runner-up's, "reversed"
  when another value is best and the claimed value's CI does not overlap the best's, else "not
  resolved"; "not tested here" when the claimed value or a second value was not trained;
* attention / Grad-CAM against chance (notebook 05's scores, per pattern): "holds" when the
  score beats chance with p < 0.05, "reversed" when it is below chance with p < 0.05, else "not
  resolved"; "not tested here" without a per-frame / per-region truth;
* cost: counted, not trained (``lusv.models.cost``): "holds" when LUV-Net's multiply-accumulates
  per clip are within 10% of USVN's, else "reversed".

A claim of several parts (models, patterns) is "reversed" when any tested part is, "holds" when
every tested part holds, else "not resolved"; its parts are listed with their own verdicts.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from lusv.data.patterns import DISPLAY_NAMES
from lusv.errors import PredictionsError
from lusv.report.names import model_name
from lusv.report.paper_claims import STAND_INS
from lusv.stats.metrics import compare_macro, summarize_predictions

HOLDS, REVERSED, NOT_RESOLVED, NOT_TESTED = "holds", "reversed", "not resolved", "not tested here"
VERDICTS = (HOLDS, REVERSED, NOT_RESOLVED, NOT_TESTED)
ALPHA = 0.05
COST_TOLERANCE = 0.10
SYMBOLS = {"kernel_size": "K", "num_heads": "H"}
RULES = {
    "comparison": "macro AUC difference with a paired patient-bootstrap 95% CI: holds when the CI lies above 0, "
                  "reversed when below 0, not resolved when it contains 0 (per-pattern paired DeLong p beside it)",
    "best_value": "the value with the highest macro AUC here; holds when it is the claimed one and its 95% CI does "
                  "not overlap the runner-up's, reversed when another is best and the CIs do not overlap",
    "chance": "per pattern against chance (Wilcoxon p < 0.05 above: holds; below: reversed; else not resolved)",
    "cost": "counted, not trained: holds when LUV-Net's GMAC per clip is within 10% of USVN's",
    "parts": "a claim of several parts is reversed when any part is, holds when every tested part holds",
}


def part(claim_id: str, name: str, verdict: str, evidence: str, estimate: float = np.nan,
         ci_low: float = np.nan, ci_high: float = np.nan, p_values: str = "", missing: str = "") -> dict:
    """One tested part of a claim: a row of the detail table (``missing``: the models it lacked)."""
    return {"claim": claim_id, "part": name, "verdict": verdict, "estimate": estimate, "ci_low": ci_low,
            "ci_high": ci_high, "p_values": p_values, "evidence": evidence, "missing": missing}


def _listing(names: list[str]) -> str:
    """'A', 'A or B', 'A, B or C'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def signed_ci(value: float, low: float, high: float) -> str:
    """'+0.128 (95% CI +0.05 to +0.20)'; without a CI just the value."""
    text = f"{value:+.3f}"
    return text + (f" (95% CI {low:+.2f} to {high:+.2f})" if math.isfinite(low) and math.isfinite(high) else "")


def _by_ci(low: float, high: float) -> str:
    if math.isfinite(low) and low > 0:
        return HOLDS
    if math.isfinite(high) and high < 0:
        return REVERSED
    return NOT_RESOLVED


def _common_clips(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    shared = set(a["clip_id"].astype(str)) & set(b["clip_id"].astype(str))
    return a[a["clip_id"].astype(str).isin(shared)], b[b["clip_id"].astype(str).isin(shared)]


def comparison_part(claim_id: str, better: str, worse: str, predictions: Mapping[str, pd.DataFrame],
                    n_boot: int = 1000, seed: int = 0) -> dict:
    """The verdict on "``better`` has a higher macro AUC than ``worse``" from ``predictions``
    (study key -> predictions table on one test set); a stand-in (``STAND_INS``) replaces a
    missing model and is named."""
    used = {key: key if key in predictions or key not in STAND_INS else STAND_INS[key] for key in (better, worse)}
    name = f"{model_name(better)} > {model_name(worse)}"
    stand_ins = [f"{model_name(used[key])} in place of {model_name(key)}" for key in (better, worse) if used[key] != key]
    missing = [key for key in (better, worse) if used[key] not in predictions]
    if missing:
        names = [model_name(key) for key in missing]
        nor = [model_name(used[key]) for key in missing if used[key] != key]
        lacking = _listing(names) + (f" (nor {_listing(nor)} in its place)" if nor else "")
        return part(claim_id, name, NOT_TESTED, f"no {lacking} in this run", missing="; ".join(names))
    a, b = _common_clips(predictions[used[better]], predictions[used[worse]])
    if a.empty:
        return part(claim_id, name, NOT_TESTED, "the two models predicted no clip in common")
    try:
        result = compare_macro(a, b, names=(used[better], used[worse]), n_boot=n_boot, seed=seed)
    except PredictionsError as error:
        return part(claim_id, name, NOT_TESTED, f"not comparable: {error}")
    verdict = _by_ci(result.ci_low, result.ci_high) if math.isfinite(result.diff) else NOT_TESTED
    significant = [DISPLAY_NAMES[p] for p, value in result.p_values.items() if math.isfinite(value) and value < ALPHA]
    p_text = "; ".join(f"{DISPLAY_NAMES[p]} {value:.3g}" for p, value in result.p_values.items())
    evidence = (f"{model_name(used[better])} {result.macro_a:.3f} vs {model_name(used[worse])} {result.macro_b:.3f}"
                + (f" ({'; '.join(stand_ins)})" if stand_ins else "")
                + f": {signed_ci(result.diff, result.ci_low, result.ci_high)}; DeLong p < {ALPHA} for "
                f"{', '.join(significant) if significant else 'no pattern'}")
    return part(claim_id, name, verdict, evidence, result.diff, result.ci_low, result.ci_high, p_text)


def _ci_overlap(a: pd.Series, b: pd.Series) -> bool:
    return not (a["ci_low"] > b["ci_high"] or b["ci_low"] > a["ci_high"])


def best_value_part(claim_id: str, knob: str, claimed: int, predictions: Mapping[int, pd.DataFrame],
                    n_boot: int = 1000, seed: int = 0) -> dict:
    """The verdict on "``claimed`` is the best value of ``knob``" from ``predictions`` (value ->
    predictions table of LUV-Net trained with it); see ``RULES["best_value"]``."""
    symbol = SYMBOLS[knob]
    name = f"{symbol} = {claimed} is best"
    if claimed not in predictions or len(predictions) < 2:
        trained = ", ".join(f"{symbol} = {v}" for v in sorted(predictions)) or "none"
        return part(claim_id, name, NOT_TESTED, f"values trained here: {trained}")
    rows = []
    for value, table in sorted(predictions.items()):
        macro = summarize_predictions(table, n_boot=n_boot, seed=seed).set_index("pattern").loc["macro"]
        rows.append({"value": value, "auc": macro["auc"], "ci_low": macro["ci_low"], "ci_high": macro["ci_high"]})
    table = pd.DataFrame(rows).sort_values("auc", ascending=False, kind="stable").reset_index(drop=True)
    best, ours = table.iloc[0], table[table["value"] == claimed].iloc[0]
    if best["value"] == claimed:
        other = table.iloc[1]
        verdict = NOT_RESOLVED if _ci_overlap(ours, other) else HOLDS
        relation = f"best here; runner-up {symbol} = {int(other['value'])} {other['auc']:.3f}"
    else:
        other = best
        verdict = NOT_RESOLVED if _ci_overlap(ours, best) else REVERSED
        relation = f"best here {symbol} = {int(best['value'])} {best['auc']:.3f} ({best['ci_low']:.2f}–{best['ci_high']:.2f})"
    overlap = "CIs overlap" if _ci_overlap(ours, other) else "CIs do not overlap"
    evidence = (f"{symbol} = {claimed} macro AUC {ours['auc']:.3f} ({ours['ci_low']:.2f}–{ours['ci_high']:.2f}); "
                f"{relation}; {overlap}")
    return part(claim_id, name, verdict, evidence, float(ours["auc"] - best["auc"]), p_values="")


def chance_parts(claim_id: str, scores: pd.DataFrame | None, which: str) -> list[dict]:
    """Per pattern, notebook 05's scores against chance: ``which`` = "attention" (the table of
    ``lusv.explain.attention.score_attention_against_truth``: attention AUC vs 0.5) or "regions"
    (``lusv.explain.saliency.summarize_region_scores``: share inside vs a random map)."""
    if scores is None or scores.empty:
        return [part(claim_id, "every pattern", NOT_TESTED, "no per-frame / per-region truth in this run's data")]
    out = []
    for row in scores.to_dict("records"):
        pattern = DISPLAY_NAMES.get(row["pattern"], row["pattern"])
        if which == "attention":
            scored, value, chance, p = row["n_scored"], row["attention_auc"], 0.5, row["auc_p_value"]
            text = f"attention AUC {value:.2f} vs 0.5 over {int(scored)} clips"
        else:
            scored, value, chance, p = row["n_frames"], row["share_inside"], row["random_map_share"], row["p_value"]
            text = f"share inside {value:.3f} vs a random map's {chance:.3f} over {int(scored)} maps"
        if not scored or not math.isfinite(value):
            out.append(part(claim_id, pattern, NOT_TESTED, "no clip to score"))
            continue
        significant = math.isfinite(p) and p < ALPHA
        verdict = (HOLDS if value > chance else REVERSED) if significant and value != chance else NOT_RESOLVED
        p_text = f"p = {p:.3g}" if math.isfinite(p) else "p undefined"
        text += f" ({p_text})"
        if which == "attention" and math.isfinite(row.get("peak", np.nan)) and row["peak"] < 1.1:
            text += f"; nearly uniform attention (peak {row['peak']:.2f}, 1 = uniform)"
        out.append(part(claim_id, pattern, verdict, text, value - chance, p_values=p_text))
    return out


def cost_part(claim_id: str, table4: pd.DataFrame | None, better: str = "luvnet", worse: str = "usvn") -> dict:
    """LUV-Net's GMAC per clip against USVN's, as counted in ``table4``
    (``lusv.report.paper.table4_beside_paper``: the paper's setting, 30 x 256 x 256, DenseNet-161)."""
    name = f"{model_name(better)} ≈ {model_name(worse)} in GMAC"
    rows = None if table4 is None else table4.set_index("key")
    if rows is None or better not in rows.index or worse not in rows.index:
        return part(claim_id, name, NOT_TESTED, "no Table 4 count")
    gmac = rows.loc[[better, worse], "gmac_lusv"].astype(float)
    params = rows.loc[[better, worse], "params_m_lusv"].astype(float)
    ratio = gmac[better] / gmac[worse]
    verdict = HOLDS if abs(ratio - 1) <= COST_TOLERANCE else REVERSED
    evidence = (f"counted at 30 x 256 x 256, not trained: {model_name(better)} {gmac[better]:.1f} GMAC vs {model_name(worse)} "
                f"{gmac[worse]:.1f} (ratio {ratio:.2f}); parameters {params[better]:.1f} M vs {params[worse]:.1f} M")
    return part(claim_id, name, verdict, evidence, float(ratio - 1))


def combine(parts: list[dict]) -> tuple[str, str]:
    """(verdict, short text) of a claim from its parts (see ``RULES["parts"]``)."""
    tested = [p for p in parts if p["verdict"] != NOT_TESTED]
    if not tested:
        lacking = list(dict.fromkeys(name for p in parts for name in p.get("missing", "").split("; ") if name))
        if len(parts) == 1 or not lacking:
            return NOT_TESTED, parts[0]["evidence"] if len(parts) == 1 else "no part could be tested here"
        return NOT_TESTED, f"no {_listing(lacking)} in this run"
    verdicts = {p["verdict"] for p in tested}
    verdict = REVERSED if REVERSED in verdicts else HOLDS if verdicts == {HOLDS} else NOT_RESOLVED
    if len(parts) == 1:
        return verdict, parts[0]["evidence"]
    groups = []
    for kind in (HOLDS, REVERSED, NOT_RESOLVED):
        names = [p["part"] for p in tested if p["verdict"] == kind]
        if names:  # the verdict itself leads the cell: a single group does not repeat it
            groups.append(_about(names) if len(verdicts) == 1 else f"{kind} {_about(names)}")
    untested = len(parts) - len(tested)
    if untested:
        groups.append(f"{untested} of {len(parts)} {NOT_TESTED}")
    return verdict, "; ".join(groups)


def _about(names: list[str]) -> str:
    """'vs USVN, C3D' for parts 'LUV-Net > USVN', 'LUV-Net > C3D'; 'for A-lines, B-lines' otherwise."""
    if all(name.startswith("LUV-Net > ") for name in names):
        return "vs " + ", ".join(name[len("LUV-Net > "):] for name in names)
    return "for " + ", ".join(names)


def evidence_kind(profile: str | None, data: str | None, external: str | None = None) -> str:
    """What a run's column is evidence of: a pipeline check, real clips with a frozen encoder, or the
    paper's protocol; an external validation says on which dataset."""
    real = data not in (None, "synthetic")
    if profile == "paper":
        kind = "the paper's protocol" + ("" if real else " on synthetic clips: a pipeline check")
    elif profile == "pretrained":
        kind = ("real clips, frozen ImageNet encoder: not the paper's fine-tuning" if real else
                "synthetic clips, frozen encoder: a pipeline check")
    elif profile == "quick":
        kind = ("real clips, tiny untrained encoder: a pipeline check" if real else
                "synthetic quick run: a pipeline check, not evidence about lung ultrasound")
    else:
        kind = f"profile {profile or 'unrecorded'}"
    return f"external validation on {external} of a study of {kind}" if external else kind
