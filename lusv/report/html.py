"""The study as a web page: every executed notebook rendered to standalone HTML, and
``results/<run>/index.html``: first the verdict on each claim of the paper (``tables/claims.csv``,
``lusv.evaluation.claims``), then the headline AUC table, the main figures, the generated
conclusions, links to each notebook, every figure and every table. Readable in any browser; no Jupyter needed.

    python -m lusv.report.html results/quick-synthetic      # what run_all.sh does at the end

Rendering uses nbconvert's HTML exporter; images in notebook outputs are already embedded
(base64) in the .ipynb, so each .html is one self-contained file. The index links to files
beside it with relative links, so the whole run folder can be copied or served as it is.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import re
import sys
import time
from pathlib import Path

import pandas as pd

from lusv.infra.io import atomic_path
from lusv.paths import in_repository
from lusv.report.names import with_model_names

log = logging.getLogger(__name__)

HEADLINE_TABLE = "tables/test_auc_table.csv"
CLAIMS_TABLE = "tables/claims.csv"
# Shown at reading size under the headline table (the others are thumbnails further down).
MAIN_FIGURES = ("roc_test.png", "sweeps.png", "appendix_b_1.png")
VERDICT_CLASSES = {"holds": "holds", "reversed": "reversed", "not resolved": "unresolved", "not tested here": "untested"}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.92em; } th, td { padding: 4px 10px; border-bottom: 1px solid #e4e4e4; }
th { text-align: left; background: #f4f4f4; } td { font-variant-numeric: tabular-nums; white-space: nowrap; }
.meta { color: #666; font-size: 0.9em; } .figures { display: flex; flex-wrap: wrap; gap: 12px; }
.figures figure { margin: 0; width: 340px; } .figures img { width: 100%; border: 1px solid #ddd; }
.figures figcaption { font-size: 0.85em; color: #444; } .conclusion { background: #f7f9fc; padding: 0.6em 1em; border-left: 3px solid #4a78c2; }
.conclusion ul { margin: 0.3em 0; padding-left: 1.2em; } .main-figure { margin: 1em 0; } .main-figure img { max-width: 100%; }
table.claims td { white-space: normal; vertical-align: top; min-width: 7em; } .verdict { font-weight: 600; }
.holds { color: #1a7f37; } .reversed { color: #b42318; } .unresolved { color: #8a6d00; } .untested { color: #777; }
"""


def render_notebooks(run_dir: str | os.PathLike) -> list[Path]:
    """Render every executed notebook under ``<run_dir>`` (``notebooks/`` and the POCUS run's)
    to a standalone .html beside it; returns the pages written."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter()
    written = []
    for notebook in sorted(in_repository(run_dir).glob("**/notebooks/*.ipynb")):
        body, _ = exporter.from_filename(str(notebook))
        target = notebook.with_suffix(".html")
        with atomic_path(target) as tmp:
            Path(tmp).write_text(body, encoding="utf-8")
        written.append(target)
    log.info("rendered %d notebooks to HTML", len(written))
    return written


def _markdown_inline(text: str) -> str:
    """The little Markdown the conclusions use (**bold**), escaped for HTML."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text.strip()))


def _markdown_block(text: str) -> str:
    """A conclusion as HTML: its '- ' lines as a list, other lines (bold headings) as paragraphs."""
    out, items = [], []
    for line in text.strip().splitlines() + [""]:
        if line.startswith("- "):
            items.append(f"<li>{_markdown_inline(line[2:])}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line.strip():
            out.append(f"<p>{_markdown_inline(line)}</p>")
    return "\n".join(out)


def _claims(run_dir: Path) -> str:
    """The claims table (``lusv claims``): each cell's verdict coloured, then the evidence."""
    path = run_dir / CLAIMS_TABLE
    if not path.is_file():
        return "<p>No claims table yet: the results notebook (06) has not run.</p>"
    table = pd.read_csv(path, dtype=str).fillna("")
    head = "".join(f"<th>{html.escape(column)}</th>" for column in table.columns)
    rows = []
    for row in table.itertuples(index=False):
        cells = []
        for value in row:
            verdict, sep, rest = value.partition(": ")
            if sep and verdict in VERDICT_CLASSES:
                value = (f'<span class="verdict {VERDICT_CLASSES[verdict]}">{html.escape(verdict)}</span>: '
                         f"{html.escape(rest)}")
            else:
                value = html.escape(value)
            cells.append(f"<td>{value}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="claims"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _main_figures(run_dir: Path) -> str:
    shown = [run_dir / "figures" / name for name in MAIN_FIGURES if (run_dir / "figures" / name).is_file()]
    return "\n".join(
        f'<figure class="main-figure"><img src="{html.escape(p.relative_to(run_dir).as_posix())}" '
        f'alt="{html.escape(p.stem)}"><figcaption>{html.escape(FIGURE_CAPTIONS.get(p.name, p.stem))}</figcaption></figure>'
        for p in shown)


FIGURE_CAPTIONS = {"roc_test.png": "ROC curves, cross-validated (out-of-fold) test set",
                   "sweeps.png": "Macro AUC against the temporal kernel size K and the attention heads H, beside the paper",
                   "appendix_b_1.png": "The paper's attention figure (its Appendix B) for one clip, with Grad-CAM on the "
                                       "top frames (notebook 05)"}


def _headline(run_dir: Path) -> str:
    path = run_dir / HEADLINE_TABLE
    if not path.is_file():
        return "<p>No result table yet: the results notebook (06) has not run.</p>"
    table = with_model_names(pd.read_csv(path, dtype=str).fillna(""))
    return table.to_html(index=False, border=0, escape=True)


def _section(title: str, items: list[str], empty: str) -> str:
    return f"<h2>{title}</h2>\n" + ("\n".join(items) if items else f"<p>{empty}</p>")


def write_index(run_dir: str | os.PathLike, title: str | None = None) -> Path:
    """Write ``<run_dir>/index.html``: the claims table, the headline table (out-of-fold test AUCs
    with 95% CIs) with the main figures, each notebook's generated conclusion, links to the notebooks (rendered .html where it
    exists, else the .ipynb), the figures as thumbnails, and the result tables (CSV)."""
    run_dir = in_repository(run_dir)
    links = []
    for notebook in sorted(run_dir.glob("**/notebooks/*.ipynb")):
        page = notebook.with_suffix(".html")
        target = page if page.is_file() else notebook
        links.append(f'<li><a href="{html.escape(target.relative_to(run_dir).as_posix())}">'
                     f"{html.escape(notebook.stem)}</a></li>")
    conclusions = [
        f'<h3>{html.escape(path.stem)}</h3><div class="conclusion">{_markdown_block(path.read_text(encoding="utf-8"))}</div>'
        for path in sorted((run_dir / "conclusions").glob("*.md"))
    ]
    figures = [
        f'<figure><a href="{html.escape(p.relative_to(run_dir).as_posix())}"><img src="{html.escape(p.relative_to(run_dir).as_posix())}" '
        f'alt="{html.escape(p.stem)}"></a><figcaption>{html.escape(p.stem)}</figcaption></figure>'
        for p in sorted((run_dir / "figures").glob("*.png"))
    ]
    tables = [f'<li><a href="{html.escape(p.relative_to(run_dir).as_posix())}">{html.escape(p.name)}</a></li>'
              for p in sorted((run_dir / "tables").glob("*.csv"))]
    title = title or f"lusv study: {run_dir.name}"
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">Written {time.strftime("%Y-%m-%d %H:%M")} from {html.escape(str(run_dir))}.</p>',
        "<h2>The paper's claims: this run's verdicts</h2>", _claims(run_dir),
        '<p class="meta">Rules and each comparison\'s numbers: <a href="tables/claims.md">tables/claims.md</a>; '
        "several runs side by side: <code>lusv claims RUN [RUN ...]</code>.</p>",
        "<h2>Headline: out-of-fold test AUC (95% CI)</h2>", _headline(run_dir), _main_figures(run_dir),
        _section("What the run shows", conclusions, "No generated conclusions yet."),
        _section("Notebooks", ["<ul>", *links, "</ul>"] if links else [], "No executed notebooks yet."),
        _section("Figures", ['<div class="figures">', *figures, "</div>"] if figures else [], "No figures yet."),
        _section("Tables (CSV)", ["<ul>", *tables, "</ul>"] if tables else [], "No tables yet."),
        "</body></html>",
    ])
    index = run_dir / "index.html"
    with atomic_path(index) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lusv.report.html", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the study run folder, e.g. results/quick-synthetic")
    parser.add_argument("--no-render", action="store_true", help="only write index.html")
    args = parser.parse_args(argv)
    run_dir = in_repository(args.run_dir)
    if not run_dir.is_dir():
        print(f"lusv.report.html: error: no run folder {run_dir}", file=sys.stderr)
        return 2
    pages = [] if args.no_render else render_notebooks(run_dir)
    index = write_index(run_dir)
    print(f"report: {index} ({len(pages)} notebooks rendered to HTML)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
