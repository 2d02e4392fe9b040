"""What a run found, in words made from its own tables: the closing findings of each results
notebook, so no claim in an executed notebook is written by hand and none can go stale.

Each conclusion is a Markdown list, one finding per bullet (``bullets``); notebook 06's has a bold
heading per test set. Every number is quoted as the table that it comes from shows it
(``lusv.report.tables.format_auc_ci``: ``0.812 (0.75–0.86)``); the verdicts ("above chance", "not
distinguishable") follow fixed rules stated in the sentences themselves (a 95% CI that excludes
0.5, p < 0.05).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from lusv.data.patterns import DISPLAY_NAMES, PATTERNS
from lusv.report.names import model_name
from lusv.report.paper import published_table
from lusv.report.sweeps import best_value, KNOB_NAMES, PAPER_TABLES, SYMBOLS
from lusv.report.tables import format_auc_ci

ALPHA = 0.05


def _cell(summaries: pd.DataFrame, model: str, column: str) -> str:
    row = summaries[(summaries["model"] == model) & (summaries["pattern"] == column)]
    if row.empty:
        return "n/a"
    auc, low, high = row[["auc", "ci_low", "ci_high"]].iloc[0]
    return format_auc_ci(auc, low, high)


def _value(summaries: pd.DataFrame, model: str, column: str) -> float:
    row = summaries[(summaries["model"] == model) & (summaries["pattern"] == column)]
    return float(row["auc"].iloc[0]) if len(row) else float("nan")


def _chance_verdict(summaries: pd.DataFrame, model: str, column: str = "macro") -> str:
    row = summaries[(summaries["model"] == model) & (summaries["pattern"] == column)]
    if row.empty or not np.isfinite(row[["ci_low", "ci_high"]].to_numpy(dtype=float)).all():
        return "without a CI to judge it against chance"
    low, high = row[["ci_low", "ci_high"]].iloc[0]
    if low > 0.5:
        return "above chance (its 95% CI excludes 0.5)"
    if high < 0.5:
        return "below chance (its 95% CI lies under 0.5)"
    return "not distinguishable from chance (its 95% CI includes 0.5)"


def _p(p: float) -> str:
    """'p = 0.012'; with more digits where three would round across ALPHA (0.0499 is 'p = 0.0499',
    never 'p = 0.050' in a list of p < 0.05)."""
    if p < 0.001:
        return "p < 0.001"
    digits = 3
    while digits < 10 and (float(f"{p:.{digits}f}") < ALPHA) != (p < ALPHA):
        digits += 1
    return f"p = {p:.{digits}f}"


def _shown(auc: float) -> float:
    """An AUC as the tables show it (three decimals): the precision ranks and ties are read at."""
    return float(f"{auc:.3f}")


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def _paper_macro(number: int, key: str) -> str | None:
    table = published_table(number)
    row = table[table["key"] == key]
    if row.empty:
        return None
    return f"{row['macro_mean'].iloc[0]:.3f} ± {row['macro_sd'].iloc[0]:.3f}"


def model_conclusion(summary: pd.DataFrame, key: str = "luvnet", data: str = "the out-of-fold clips",
                     paper_table: int | None = 1) -> str:
    """One model's result (notebooks 02 and 07): macro and micro AUC with CIs, the best and the
    worst pattern, whether it beats chance, and the paper's figure for the same model.

    ``summary`` is ``lusv.stats.metrics.summarize_predictions`` of the model (with or without a
    ``model`` column).
    """
    summary = summary.assign(model=key) if "model" not in summary else summary
    name = model_name(key)
    per_pattern = summary[summary["pattern"].isin(PATTERNS)].dropna(subset=["auc"]).sort_values("auc")
    findings = [f"**{name}** on {data}: macro AUC {_cell(summary, key, 'macro')}, micro AUC "
                f"{_cell(summary, key, 'micro')}; the macro AUC is {_chance_verdict(summary, key)}."]
    if len(per_pattern) > 1:
        best, worst = per_pattern.iloc[-1]["pattern"], per_pattern.iloc[0]["pattern"]
        findings.append(f"Highest pattern: {DISPLAY_NAMES[best]} {_cell(summary, key, best)}; lowest: "
                        f"{DISPLAY_NAMES[worst]} {_cell(summary, key, worst)}.")
    paper = _paper_macro(paper_table, key) if paper_table else None
    if paper:
        findings.append(f"The paper reports {name} at macro AUC {paper} (mean ± sd over 5 folds, its Table {paper_table}).")
    return bullets(*findings)


def _significant(delong: pd.DataFrame | None, reference: str) -> str:
    """'USVN for B-lines (p = 0.012)' for every comparator and pattern with p < ALPHA."""
    if delong is None or delong.empty:
        return ""
    groups, count = [], 0
    for _, row in delong.iterrows():
        hits = [f"{DISPLAY_NAMES[pattern]} ({_p(p)})" for pattern in PATTERNS
                if math.isfinite(p := float(row.get(DISPLAY_NAMES[pattern], float("nan")))) and p < ALPHA]
        if hits:
            groups.append(f"{model_name(str(row['Model']))} for {', '.join(hits)}")
            count += len(hits)
    columns = [DISPLAY_NAMES[pattern] for pattern in PATTERNS if DISPLAY_NAMES[pattern] in delong]
    tested = int(np.isfinite(delong[columns].to_numpy(dtype=float)).sum())
    if not groups:
        return (f"No paired DeLong test against {model_name(reference)} reaches p < {ALPHA} "
                f"({tested} model-pattern pairs).")
    return (f"Paired DeLong p < {ALPHA} against {model_name(reference)} ({count} of {tested} pairs, "
            f"uncorrected): {'; '.join(groups)}.")


def comparison_findings(summaries: pd.DataFrame, delong: pd.DataFrame | None = None,
                        reference: str = "luvnet", paper_table: int | None = 1,
                        data: str = "the out-of-fold clips") -> list[str]:
    """The findings of ``comparison_conclusion``, one per list entry."""
    models = list(dict.fromkeys(summaries["model"]))
    ranked = sorted(models, key=lambda m: -np.nan_to_num(_value(summaries, m, "macro"), nan=-1))
    listing = ", ".join(f"{model_name(m)} {_cell(summaries, m, 'macro')}" for m in ranked)
    findings = [f"Macro AUC on {data}, highest first: {listing}."]
    if reference in models and len(models) > 1:
        findings.append(_rank(summaries, ranked, reference).strip())
    findings.append(_significant(delong, reference))
    if paper_table:
        quoted = [(m, _paper_macro(paper_table, m)) for m in ranked]
        with_paper = [f"{model_name(m)} {q}" for m, q in quoted if q]
        without = [model_name(m) for m, q in quoted if not q]
        if with_paper:
            findings.append(f"The paper (Table {paper_table}, macro AUC mean ± sd over folds): {', '.join(with_paper)}.")
        if without:
            findings.append(f"No paper row for {', '.join(without)}.")
    return findings


def comparison_conclusion(summaries: pd.DataFrame, delong: pd.DataFrame | None = None,
                          reference: str = "luvnet", paper_table: int | None = 1,
                          data: str = "the out-of-fold clips") -> str:
    """Several models (notebooks 03 and 06): macro AUCs with CIs from highest to lowest, where
    the reference ranks, the significant paired DeLong tests, and the paper's macro AUCs for
    the same models (``paper_table`` 1: cross-validation, 2: temporal set)."""
    return bullets(*comparison_findings(summaries, delong, reference, paper_table, data))


def _rank(summaries: pd.DataFrame, ranked: list[str], reference: str) -> str:
    """' LUV-Net ranks 2 of 5.': one more than the models whose macro AUC is higher as the table
    shows it; models equal to three decimals are named as tied, never ranked by hidden digits."""
    mine = _shown(_value(summaries, reference, "macro"))
    if not math.isfinite(mine):
        return f" {model_name(reference)} has no macro AUC to rank."
    shown = {m: _shown(_value(summaries, m, "macro")) for m in ranked}
    higher = sum(1 for value in shown.values() if math.isfinite(value) and value > mine)
    tied = [model_name(m) for m in ranked if m != reference and shown[m] == mine]
    text = f" {model_name(reference)} ranks {higher + 1} of {len(ranked)}"
    return text + (f", tied to three decimals with {', '.join(tied)}." if tied else ".")


def _paper_best(number: int = 8, n: int = 3) -> str:
    """'K = 13 (0.908), K = 23 (0.905), K = 3 (0.904)': the paper's best sweep values by macro AUC
    (Table 8: kernel size K, Table 9: heads H)."""
    table = published_table(number)
    knob, symbol = table.columns[0], {8: "K", 9: "H"}[number]
    best = table.sort_values("macro", ascending=False, kind="stable").head(n)
    return ", ".join(f"{symbol} = {int(value)} ({auc:.3f})" for value, auc in zip(best[knob], best["macro"]))


def sweep_findings(sweeps: Mapping[str, pd.DataFrame]) -> list[str]:
    """Notebook 04: each sweep (``lusv.report.sweeps.sweep_tables``: kernel size K, heads H) with its
    pooled macro AUC per value as the table shows it, the best value here, and the paper's
    single-fold Table 8 / 9 at the same values and at its best."""
    parts = []
    for knob, table in sweeps.items():
        symbol, number = SYMBOLS[knob], PAPER_TABLES[knob]
        listing = ", ".join(f"{symbol} = {int(row[knob])} {format_auc_ci(row.macro_pooled, row.macro_ci_low, row.macro_ci_high)}"
                            for _, row in table.iterrows())
        text = (f"{KNOB_NAMES[knob][0].upper()}{KNOB_NAMES[knob][1:]}, each value trained on all "
                f"{int(table['n_folds'].max())} folds (pooled out-of-fold macro AUC, 95% CI): {listing}")
        best = best_value(table, knob)
        shown = table["macro_pooled"].map(_shown)
        tied = table[shown == shown.max()][knob].tolist()
        if len(tied) > 1:  # equal as the cells show them: naming one "highest" would be arbitrary
            text += f"; highest here, tied to three decimals: {', '.join(f'{symbol} = {int(v)}' for v in tied)}"
        elif best is not None:
            row = table[table[knob] == best].iloc[0]
            text += (f"; highest here {symbol} = {best} (mean ± sd over the fold models "
                     f"{row.macro_mean:.3f} ± {row.macro_sd:.3f})")
        paper = published_table(number).set_index(knob)["macro"]
        at_ours = [f"{paper[v]:.3f} at {symbol} = {int(v)}" for v in table[knob] if v in paper.index]
        parts += [text + ".", f"The paper's sweep is a single fold (its Table {number}): "
                  + (f"{', '.join(at_ours)}; " if at_ours else "") + f"its highest {_paper_best(number)}."]
    return parts


def level_findings(levels: pd.DataFrame, reference: str = "luvnet") -> list[str]:
    """Notebook 06: the reference's macro AUC per window (the paper's unit) and per video (the
    mean, and the max, of its windows), as ``lusv.evaluation.video_level.level_table`` shows them."""
    rows = levels[(levels["model"] == reference) & (levels["pattern"] == "macro")].set_index("level")
    if not {"window", "video_mean", "video_max"} <= set(rows.index):
        return []
    cell = {level: format_auc_ci(*rows.loc[level, ["auc", "ci_low", "ci_high"]]) for level in rows.index}
    units = rows["n_units"].astype(int)
    findings = [f"{model_name(reference)} macro AUC per window (the paper's unit, {units['window']} windows) "
                f"{cell['window']}; per video ({units['video_mean']} videos) {cell['video_mean']} with a video "
                f"scored by the mean of its windows, {cell['video_max']} by their max (CIs resample patients)."]
    if units["window"] == units["video_mean"]:
        findings.append("Here every clip is its own video, so the levels coincide.")
    return findings


def ablation_conclusion(summaries: pd.DataFrame, delong: pd.DataFrame | None = None, reference: str = "luvnet",
                        sweeps: Mapping[str, pd.DataFrame] | None = None) -> str:
    """Notebook 04: what the temporal module adds (macro AUC with vs without it, beside the
    paper's Table 3) and, with ``sweeps`` (``lusv.report.sweeps.sweep_tables``), which kernel size K
    and number of heads H do best here against the paper's single-fold Tables 8 and 9."""
    models = list(dict.fromkeys(summaries["model"]))
    parts = []
    if reference in models and "luvnet_no_temporal" in models:
        with_, without = _value(summaries, reference, "macro"), _value(summaries, "luvnet_no_temporal", "macro")
        parts.append(
            f"The temporal module changes the macro AUC by {_signed(with_ - without)} ({model_name(reference)} "
            f"{_cell(summaries, reference, 'macro')} vs {_cell(summaries, 'luvnet_no_temporal', 'macro')} without it); "
            f"the paper's Table 3 gives {_signed(0.894 - 0.885)} (0.894 vs 0.885)."
        )
    if sweeps:
        parts += sweep_findings(sweeps)
    parts = parts or comparison_findings(summaries, None, reference, paper_table=None)
    return bullets(*parts, _significant(delong, reference))


def fold_findings(fold_summary: pd.DataFrame, summaries: pd.DataFrame, comparison: pd.DataFrame | None = None,
                  reference: str = "luvnet") -> list[str]:
    """Notebook 06: the paper's way (mean ± sd over the fold models) beside the pooled
    out-of-fold AUC, and the reference's difference from the paper's Table 1."""
    row = fold_summary[fold_summary["key"] == reference]
    if row.empty:
        return []
    mean, sd = float(row["macro_mean"].iloc[0]), float(row["macro_sd"].iloc[0])
    findings = [f"The paper's way, each fold model on its own test fold: {model_name(reference)} macro AUC "
                f"{mean:.3f} ± {sd:.3f} (mean ± sd over the fold models), "
                f"pooled out-of-fold {_cell(summaries, reference, 'macro')}."]
    if comparison is not None:
        paper_row = comparison[comparison["key"] == reference]
        if len(paper_row) and math.isfinite(float(paper_row["macro_paper"].iloc[0])):
            diff = float(paper_row["macro_diff"].iloc[0])
            if math.isfinite(diff):
                findings.append(f"Against the paper's {float(paper_row['macro_paper'].iloc[0]):.3f}: {_signed(diff)}.")
            trained = int(comparison["macro_lusv"].notna().sum())
            findings.append(f"{trained} of the paper's {len(comparison)} Table 1 models were trained in this run.")
    return findings


def bullets(*findings: str) -> str:
    """A Markdown list, one finding per bullet (empty ones dropped)."""
    return "\n".join(f"- {finding.strip()}" for finding in findings if finding and finding.strip())


def _section(title: str, findings: list[str]) -> str:
    return f"**{title}**\n\n{bullets(*findings)}" if any(f and f.strip() for f in findings) else ""


def results_conclusion(split_summaries: Mapping[str, pd.DataFrame], split_delong: Mapping[str, pd.DataFrame | None],
                       fold_summary: pd.DataFrame | None = None, comparison: pd.DataFrame | None = None,
                       reference: str = "luvnet", levels: pd.DataFrame | None = None) -> str:
    """Notebook 06's closing findings, one bold heading per test set: the cross-validated comparison (paper Table 1), the
    held-out set and the temporal set (Table 2) when there are, the fold-wise figures beside the
    paper, and with ``levels`` (``lusv.evaluation.video_level.level_summaries``) the window- vs video-level macro AUC."""
    parts = [_section("Cross-validated (out-of-fold)", comparison_findings(
        split_summaries["test"], split_delong.get("test"), reference, 1))]
    if "held_out" in split_summaries:  # the paper publishes no table for its held-out set
        parts.append(_section("Held-out test set", comparison_findings(
            split_summaries["held_out"], split_delong.get("held_out"), reference, None,
            data="the held-out test set (fold ensemble)")))
    if "temporal_test" in split_summaries:
        parts.append(_section("Temporally separated test set", comparison_findings(
            split_summaries["temporal_test"], split_delong.get("temporal_test"), reference, 2,
            data="the temporally separated set (fold ensemble)")))
    findings = fold_findings(fold_summary, split_summaries["test"], comparison, reference) if fold_summary is not None else []
    if levels is not None:
        findings += level_findings(levels, reference)
    parts.append(_section("The paper's way, and per video", findings))
    return "\n\n".join(part for part in parts if part)


def attention_conclusion(scores: pd.DataFrame | None, saliency: pd.DataFrame | None = None,
                         frames_without_region: int = 0, nearly_uniform_peak: float = 1.1) -> str:
    """Notebook 05: does the attention fall on the frames that show a pattern (per-frame truth:
    ``lusv.explain.attention.score_attention_against_truth``), and do the Grad-CAM maps of the top
    frames fall on the pattern's drawn region (``lusv.explain.saliency.summarize_region_scores``)?

    Attention whose mean peak (largest weight x frames) is under ``nearly_uniform_peak`` is
    called nearly uniform: its scores rest on tiny weight differences. A pattern's maps count
    as on the region when their mean share inside beats the random-map share with p < 0.05."""
    parts = []
    if scores is not None and len(scores):
        scored = scores[scores["n_scored"] > 0]
        listing = "; ".join(
            f"{row.display_name} {row.attention_auc:.2f} (pointing game {row.pointing_game:.2f} vs chance "
            f"{row.pointing_chance:.2f}, {int(row.n_scored)} clips)" for row in scored.itertuples())
        if listing:
            parts.append(f"Attention over frames against the per-frame truth (attention AUC, 0.5 = chance): {listing}.")
            peak = float(scored["peak"].mean())
            if peak < nearly_uniform_peak:
                parts.append(f"The attention is nearly uniform (mean peak {peak:.2f}, 1 = uniform), so these scores "
                             "rest on tiny weight differences and say little about which frames the model uses.")
            else:
                parts.append(f"Mean attention peak {peak:.2f} (1 = uniform).")
    if saliency is not None and len(saliency):
        rated = saliency[saliency["n_frames"] > 0]
        empty = int(saliency["empty_maps"].sum()) if "empty_maps" in saliency else 0
        listing = "; ".join(
            f"{row.pattern} {row.share_inside:.3f} vs {row.random_map_share:.3f}"
            + (f" ({_p(row.p_value)})" if math.isfinite(row.p_value) else "") for row in rated.itertuples())
        significant = [row for row in rated.itertuples() if math.isfinite(row.p_value) and row.p_value < ALPHA]
        above = [row.pattern for row in significant if row.lift > 0]
        below = [row.pattern for row in significant if row.lift < 0]
        parts.append(f"Grad-CAM on each pattern's top attended frames ({int(rated['n_frames'].sum())} non-empty maps scored"
                     + (f"; {frames_without_region} top frames did not show the pattern and were not scored" if
                        frames_without_region else "")
                     + f"): share of the map inside the pattern's drawn region vs a random map: {listing}.")
        if empty:
            parts.append(f"{empty} further maps are all zero (nothing in the frame raises the pattern's logit) "
                         "and are not scored.")
        if below:
            parts.append(f"The maps avoid the drawn region (less inside than a random map, p < {ALPHA}) for "
                         f"{', '.join(below)}.")
        if above:
            parts.append(f"The maps fall on the drawn region more than a random map would for {', '.join(above)}.")
        else:
            parts.append("For no pattern do the maps fall on the drawn region more than a random map would: "
                         "this model shows nothing about where in the image it looks.")
    return bullets(*parts) or "- No attention or saliency scores: this dataset has no per-frame truth."


def external_conclusion(table: pd.DataFrame, dataset: str, clips: int) -> str:
    """External validation (``lusv.evaluation.external``): each model's AUC (95% CI) per pattern the other
    dataset labels, the patterns it does not (no AUC, never zero), at thresholds carried over."""
    scored = table[table["auc"].notna()]
    if scored.empty:
        return f"- No pattern of {dataset} ({clips} clips) has both classes labelled: no AUC can be computed."
    findings = [f"On {dataset} ({clips} clips; the fold models' mean probability), AUC (95% CI) of each model below."]
    for model, rows in scored.groupby("model", sort=False):
        cells = [f"{DISPLAY_NAMES[r.pattern]} {format_auc_ci(r.auc, r.ci_low, r.ci_high)}" for r in rows.itertuples()]
        findings.append(f"{model_name(model)}: " + ", ".join(cells) + ".")
    unscored = [DISPLAY_NAMES[p] for p in PATTERNS if p not in set(scored["pattern"])]
    if unscored:
        findings.append(f"Not scored (not labelled, or one class only): {', '.join(unscored)}.")
    return bullets(*findings, "Sensitivity and specificity use the study's Youden thresholds, chosen on its validation"
                   " folds and never tuned on this dataset.")
