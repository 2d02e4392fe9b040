"""The numbers the README and the docs publish, written by a command instead of typed by hand:
``lusv publish RUN [RUN ...] --page docs/results-generated.md --readme README.md``.

The page holds, per run, what made it (``lusv.report.run_record``: command, date, duration,
machine), its out-of-fold AUC table as the notebooks show it, then the verdict on every claim of
the paper with one column per run (``lusv.evaluation.claims``). The README gets a short block
between two markers (``BEGIN`` and ``END``; the text around them is left alone): one line per run
with LUV-Net's macro AUC, its rank and the count of verdicts, and where the page is.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from lusv.errors import ConfigError
from lusv.evaluation.claims import claims_markdown, claims_tables, ClaimsTables
from lusv.infra.io import atomic_path, read_table
from lusv.models.roster import REFERENCE
from lusv.paths import in_repository
from lusv.report.names import model_name
from lusv.report.run_record import provenance, read_run_record
from lusv.report.verdicts import VERDICTS

BEGIN = "<!-- lusv publish: begin (generated; edit the runs, not this text) -->"
END = "<!-- lusv publish: end -->"


def _macro(run_dir: Path) -> pd.DataFrame:
    """Each model's macro AUC with its CI on the out-of-fold clips, highest first."""
    summary = read_table(run_dir / "tables" / "test_auc_summary.csv")
    macro = summary[summary["pattern"] == "macro"].set_index("model")[["auc", "ci_low", "ci_high"]]
    return macro.sort_values("auc", ascending=False, kind="stable")


def _auc_markdown(run_dir: Path) -> str:
    table = read_table(run_dir / "tables" / "test_auc_table.csv")
    order = {model: rank for rank, model in enumerate(_macro(run_dir).index)}
    table = table.sort_values("Model", key=lambda keys: keys.map(order), kind="stable")
    table["Model"] = table["Model"].map(model_name)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def verdict_counts(tables: ClaimsTables, header: str) -> dict[str, int]:
    """How many claims got each verdict in one run's column of the claims table."""
    verdicts = tables.summary[header].str.partition(": ")[0]
    return {verdict: int((verdicts == verdict).sum()) for verdict in VERDICTS}


def headline(run_dir: Path, tables: ClaimsTables, header: str) -> str:
    """One Markdown table row: the run, the command, when / how long / where, LUV-Net's macro AUC
    with its CI and rank, and the count of verdicts on the paper's claims."""
    record = read_run_record(run_dir)
    if record:
        made = f"`{record['command']}`"
        when = f"{record['finished'][:10]}, {int(record['seconds']) // 60} min, {record['machine']}"
    else:
        made, when = "unknown (no run.json)", "unknown"
    macro = _macro(run_dir)
    if REFERENCE in macro.index:
        auc, low, high = macro.loc[REFERENCE]
        higher = int((macro["auc"].round(3) > round(auc, 3)).sum())  # ties as the tables show them
        result, rank = f"{auc:.3f} ({low:.2f}–{high:.2f})", f"{higher + 1} of {len(macro)}"
    else:
        result, rank = f"no {model_name(REFERENCE)} run", ""
    counts = verdict_counts(tables, header)
    verdicts = ", ".join(f"{n} {'hold' if verdict == 'holds' and n != 1 else verdict}" for verdict, n in counts.items() if n)
    return f"| {run_dir.name} | {made} | {when} | {result} | {rank} | {verdicts} |"


def results_page(runs: list[Path], tables: ClaimsTables, command: str | None = None) -> str:
    command = command or f"lusv publish {' '.join(str(r) for r in runs)}"
    blocks = ["# The runs' numbers (generated)",
              f"Written by `{command}`; every number below comes from "
              "the runs' own tables. Do not edit: rerun the runs, then the command. What the numbers do "
              "and do not show: [results.md](results.md)."]
    for run_dir in runs:
        blocks += [f"## {run_dir.name}", f"Made by {provenance(run_dir)}.",
                   "Out-of-fold AUC per pattern with 95% CIs (`tables/test_auc_table.csv`; per-pattern CIs "
                   "DeLong, macro a patient bootstrap), highest macro first:", _auc_markdown(run_dir)]
    blocks += ["## The paper's claims, one verdict per run", claims_markdown(tables, detail=False).rstrip()]
    return "\n\n".join(blocks) + "\n"


def readme_block(runs: list[Path], tables: ClaimsTables, page: str) -> str:
    head = ["| run | command | finished, duration, machine | LUV-Net macro AUC (95% CI), out of fold | rank | "
            f"verdicts on the {len(tables.summary)} claims |", "|---|---|---|---|---|---|"]
    lines = [headline(run_dir, tables, header) for run_dir, header in zip(runs, tables.runs)]
    return "\n".join([BEGIN, *head, *lines, f"\nEach run's AUC table and the claims table: [{page}]({page}).", END])


def replace_block(text: str, block: str, where: str) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ConfigError(f"{where}: needs one '{BEGIN}' line before one '{END}' line for lusv publish to fill")
    return text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def publish(runs: list[str | Path], page: str | Path, readme: str | Path | None = None,
            n_boot: int = 1000, command: str | None = None) -> list[Path]:
    """Write the results page (and fill the README's block); returns the files written. ``command``:
    how the page names the command that wrote it (default: ``lusv publish`` and the runs' paths)."""
    run_dirs = [in_repository(run) for run in runs]
    for run_dir in run_dirs:
        if not (run_dir / "tables" / "test_auc_summary.csv").is_file():
            raise ConfigError(f"{run_dir}: no tables/test_auc_summary.csv: run the study to its notebook 06 first")
    page = Path(page)
    if readme is not None:  # its markers checked before anything is written
        readme = Path(readme)
        replace_block(readme.read_text(encoding="utf-8"), "", str(readme))
    tables = claims_tables(run_dirs, n_boot=n_boot)
    _write(page, results_page(run_dirs, tables, command))
    written = [page]
    if readme is not None:
        link = Path(os.path.relpath(page.resolve(), readme.resolve().parent)).as_posix()
        _write(readme, replace_block(readme.read_text(encoding="utf-8"), readme_block(run_dirs, tables, link), str(readme)))
        written.append(readme)
    return written
