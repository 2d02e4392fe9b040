"""The study's verdict on every claim of the paper, one column per run: ``lusv claims RUN [RUN ...]``.

A run is a study folder (``prepare/prepared.json``: its out-of-fold and set-apart predictions in
``oof/``, the K / H sweep points in ``runs/``, notebook 05's attention and Grad-CAM scores in
``tables/``) or an external validation of one (``external.json``: its fold ensembles'
predictions on the other dataset, judged like a test set; no temporally separated set there). Each
claim of ``lusv.report.paper_claims.CLAIMS`` gets a verdict per run by the rules of
``lusv.report.verdicts``; a model the run lacks makes "not tested here", never a number.

``claims_tables(runs)`` returns two tables: ``summary`` (one row per claim: where the paper makes
it, its numbers, and per run the verdict with its short evidence; the column header says what
kind of evidence the run is) and ``detail`` (one row per run, claim and part with the numbers:
difference, CI, DeLong p-values). ``write_claims`` saves them as CSV and Markdown.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from lusv.data.prepared import Prepared
from lusv.errors import ConfigError
from lusv.evaluation.out_of_fold import load_out_of_fold
from lusv.infra.io import atomic_path, read_table, write_csv
from lusv.paths import in_repository
from lusv.report.paper import table4_beside_paper
from lusv.report.paper_claims import CLAIMS, Claim, paper_numbers, SPLIT_NAMES
from lusv.report.sweeps import sweep_points
from lusv.report.verdicts import (best_value_part, chance_parts, combine, comparison_part, cost_part, evidence_kind,
                                  NOT_TESTED, part, RULES)

log = logging.getLogger(__name__)

ATTENTION_TABLE = "tables/attention_scores.csv"  # notebook 05: lusv.explain.attention.score_attention_against_truth
REGIONS_TABLE = "tables/saliency_regions.csv"  # notebook 05: lusv.explain.saliency.summarize_region_scores
SUMMARY_COLUMNS = ("#", "Claim", "Where", "The paper")


@dataclass
class RunEvidence:
    """What one run offers the claims: predictions per test set, sweep points, notebook 05's scores."""

    name: str
    kind: str
    predictions: Callable[[str], dict[str, pd.DataFrame]]  # split -> {study key: predictions}
    sweep_dir: Path | None  # where runs/<key>-fold*/config.json say each sweep point's K / H
    attention: pd.DataFrame | None = None
    regions: pd.DataFrame | None = None
    table4: pd.DataFrame | None = None
    _cache: dict = field(default_factory=dict)

    def split(self, split: str) -> dict[str, pd.DataFrame]:
        if split not in self._cache:
            self._cache[split] = self.predictions(split)
        return self._cache[split]

    def sweep(self, knob: str) -> dict[int, pd.DataFrame]:
        """Value of ``knob`` -> LUV-Net's test predictions trained with it (the sweep's keys)."""
        test = self.split("test")
        if self.sweep_dir is None:
            return {}
        return {value: test[key] for key, value in sweep_points(self.sweep_dir, list(test), knob).items()}


def _optional_table(path: Path) -> pd.DataFrame | None:
    return read_table(path) if path.is_file() else None


def _study_split(run_dir: Path, split: str) -> dict[str, pd.DataFrame]:
    if not any((run_dir / "oof").glob(f"*.{split}.csv")):
        return {}
    return load_out_of_fold(run_dir, split)


def _table4(run_dir: Path) -> pd.DataFrame:
    saved = run_dir / "tables" / "paper_table4.csv"  # notebook 06 counts it once per run
    return read_table(saved) if saved.is_file() else table4_beside_paper()


def run_evidence(run: str | Path) -> RunEvidence:
    """A study folder or an external validation folder as evidence (ConfigError for anything else)."""
    run_dir = in_repository(run)
    if (run_dir / "external.json").is_file():
        return _external_evidence(run_dir)
    prepared = Prepared.recorded(run_dir)
    if prepared is None:
        raise ConfigError(f"{run_dir} is neither a study folder (prepare/prepared.json) nor an external "
                          "validation (external.json): pass a run folder such as results/quick-synthetic")
    return RunEvidence(
        name=run_dir.name, kind=evidence_kind(prepared.profile, prepared.data),
        predictions=lambda split: _study_split(run_dir, split), sweep_dir=run_dir,
        attention=_optional_table(run_dir / ATTENTION_TABLE), regions=_optional_table(run_dir / REGIONS_TABLE),
        table4=_table4(run_dir),
    )


def _external_evidence(run_dir: Path) -> RunEvidence:
    record = json.loads((run_dir / "external.json").read_text(encoding="utf-8"))
    study_dir = Path(record["study"])
    prepared = Prepared.recorded(study_dir)
    keys = [path.name[len("predictions_"):-len(".csv")] for path in sorted(run_dir.glob("predictions_*.csv"))
            if not path.name.endswith(".windows.csv")]

    def predictions(split: str) -> dict[str, pd.DataFrame]:
        return {key: read_table(run_dir / f"predictions_{key}.csv") for key in keys} if split == "test" else {}

    dataset = f"{record.get('dataset', run_dir.name)} ({record.get('clips', '?')} clips)"
    return RunEvidence(
        name=f"{study_dir.name} on {record.get('dataset', run_dir.name)}",
        kind=evidence_kind(prepared.profile if prepared else None, prepared.data if prepared else None, dataset),
        predictions=predictions, sweep_dir=study_dir if (study_dir / "runs").is_dir() else None,
        table4=_table4(study_dir),
    )


def judge(evidence: RunEvidence, entry: Claim, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """The parts of one claim judged on one run (rows of the detail table)."""
    if entry.kind == "comparison":
        predictions = evidence.split(entry.split)
        if not predictions:
            return [part(entry.id, "every comparison", NOT_TESTED, f"no {SPLIT_NAMES[entry.split]} in this run")]
        return [comparison_part(entry.id, better, worse, predictions, n_boot, seed) for better, worse in entry.comparisons]
    if entry.kind == "best_value":
        return [best_value_part(entry.id, entry.knob, entry.value, evidence.sweep(entry.knob), n_boot, seed)]
    if entry.kind == "chance":
        return chance_parts(entry.id, evidence.attention if entry.scores == "attention" else evidence.regions,
                            entry.scores)
    return [cost_part(entry.id, evidence.table4)]


@dataclass
class ClaimsTables:
    summary: pd.DataFrame  # one row per claim; per run "verdict: evidence"
    detail: pd.DataFrame  # one row per (run, claim, part) with the numbers
    runs: list[str]  # the run column headers, in order


def claims_tables(runs: list[str | Path], n_boot: int = 1000, seed: int = 0) -> ClaimsTables:
    """Every claim judged on every run (see the module docstring)."""
    if not runs:
        raise ConfigError("no run given: pass one or more run folders (a study, or an external validation)")
    summary = pd.DataFrame([{"#": c.id, "Claim": c.words, "Where": c.where, "The paper": paper_numbers(c)}
                            for c in CLAIMS])
    details, headers = [], []
    for run in runs:
        evidence = run_evidence(run)
        header = f"{evidence.name} ({evidence.kind})"
        headers.append(header)
        cells = []
        for entry in CLAIMS:
            parts = judge(evidence, entry, n_boot, seed)
            verdict, text = combine(parts)
            cells.append(f"{verdict}: {text}")
            details += [{"run": evidence.name, **row, "claim_words": entry.words} for row in parts]
        summary[header] = cells
        log.info("claims judged on %s", evidence.name)
    return ClaimsTables(summary, pd.DataFrame(details), headers)


def _markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table; '|' inside cells escaped, the verdict at a cell's start in bold."""
    def cell(value) -> str:
        text = "" if pd.isna(value) else str(value).replace("|", "\\|").replace("\n", " ")
        head, sep, rest = text.partition(": ")
        return f"**{head}**: {rest}" if sep and head in {"holds", "reversed", "not resolved", NOT_TESTED} else text

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def claims_markdown(tables: ClaimsTables, detail: bool = True) -> str:
    """Paste-ready Markdown: the summary table, the rules, then (``detail``) each run's parts with
    their numbers."""
    rules = "\n".join(f"- {kind}: {text}" for kind, text in RULES.items())
    blocks = [_markdown(tables.summary), f"Rules:\n\n{rules}"]
    if detail:
        cells = tables.detail.assign(cell=lambda d: d["verdict"] + ": " + d["evidence"])
        wide = cells.pivot_table(index=["claim", "part"], columns="run", values="cell", aggfunc="first", sort=False)
        wide = wide.reset_index().rename(columns={"claim": "#", "part": "Part"})
        blocks += ["Each part, with its numbers:", _markdown(wide.fillna(""))]
    return "\n\n".join(blocks) + "\n"


def write_claims(tables: ClaimsTables, out_dir: str | Path) -> list[Path]:
    """``claims.csv`` (the summary), ``claims_detail.csv`` and ``claims.md`` under ``out_dir``."""
    out_dir = Path(out_dir)
    markdown = out_dir / "claims.md"
    written = [write_csv(out_dir / "claims.csv", tables.summary), write_csv(out_dir / "claims_detail.csv", tables.detail)]
    with atomic_path(markdown) as tmp:
        Path(tmp).write_text(claims_markdown(tables), encoding="utf-8")
    return [*written, markdown]


def run_claims(run_dir: str | Path, n_boot: int = 1000, seed: int = 0) -> ClaimsTables:
    """Notebook 06's last table: every claim judged on this one run, saved under its ``tables/``."""
    tables = claims_tables([run_dir], n_boot, seed)
    write_claims(tables, in_repository(run_dir) / "tables")
    return tables
