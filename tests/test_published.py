"""lusv publish: the README's generated block and the results page say which command and date made
their numbers, and read them from the run's own tables (values typed in here from hand-made tables)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lusv.errors import ConfigError
from lusv.evaluation.claims import ClaimsTables
from lusv.evaluation.published import BEGIN, END, headline, replace_block, verdict_counts
from lusv.report.run_record import provenance, read_run_record, write_run_record


def _run(tmp_path, macro: dict[str, tuple[float, float, float]]):
    run_dir = tmp_path / "quick-synthetic"
    (run_dir / "tables").mkdir(parents=True)
    rows = [{"model": m, "pattern": "macro", "auc": a, "ci_low": lo, "ci_high": hi} for m, (a, lo, hi) in macro.items()]
    rows.append({"model": "luvnet", "pattern": "a_lines", "auc": 0.99, "ci_low": 0.9, "ci_high": 1.0})  # not the macro row
    pd.DataFrame(rows).to_csv(run_dir / "tables" / "test_auc_summary.csv", index=False)
    return run_dir


def _claims(cells: list[str]) -> ClaimsTables:
    summary = pd.DataFrame({"#": range(1, len(cells) + 1), "Claim": "c", "Where": "w", "The paper": "p", "run (kind)": cells})
    return ClaimsTables(summary, pd.DataFrame(), ["run (kind)"])


def test_the_headline_ranks_luvnet_as_the_table_shows_it_and_counts_each_verdict(tmp_path):
    # usvn is higher by hidden digits only (0.7172 vs 0.7168: both 0.717 as shown): a tie, so rank 2, not 3
    run_dir = _run(tmp_path, {"r2plus1d": (0.80, 0.7, 0.9), "usvn": (0.7172, 0.6, 0.8), "luvnet": (0.7168, 0.641, 0.789),
                              "c3d": (0.40, 0.3, 0.5)})
    write_run_record(run_dir, "bash run_all.sh quick", 717)
    tables = _claims(["holds: a", "holds: b", "reversed: c", "not resolved: d", "not tested here: no X"])
    assert verdict_counts(tables, "run (kind)") == {"holds": 2, "reversed": 1, "not resolved": 1, "not tested here": 1}
    line = headline(run_dir, tables, "run (kind)")
    finished = read_run_record(run_dir)["finished"][:10]
    assert line.startswith(f"| quick-synthetic | `bash run_all.sh quick` | {finished}, 11 min, ")
    assert "CPU cores" in line  # the machine
    assert line.endswith(" | 0.717 (0.64–0.79) | 2 of 4 | 2 hold, 1 reversed, 1 not resolved, 1 not tested here |")


def test_a_run_without_a_record_says_its_command_and_date_are_unknown(tmp_path):
    run_dir = _run(tmp_path, {"luvnet": (0.6, 0.5, 0.7)})
    assert headline(run_dir, _claims(["holds: a"]), "run (kind)") == (
        "| quick-synthetic | unknown (no run.json) | unknown | 0.600 (0.50–0.70) | 1 of 1 | 1 holds |")
    assert "command and date unknown" in provenance(run_dir)
    (run_dir / "run.json").write_text("{not json")
    assert read_run_record(run_dir) is None


def test_the_record_holds_the_command_duration_and_machine(tmp_path):
    path = write_run_record(tmp_path, "bash run_all.sh pretrained --data pocus", 3725.4)
    record = json.loads(path.read_text())
    assert record["command"] == "bash run_all.sh pretrained --data pocus" and record["seconds"] == 3725
    assert "CPU cores" in record["machine"]
    assert provenance(tmp_path).startswith("`bash run_all.sh pretrained --data pocus`, finished ")
    assert " in 62 min 5 s on " in provenance(tmp_path)


def test_only_the_text_between_the_markers_is_replaced():
    text = f"# Title\n\nbefore\n{BEGIN}\nold numbers\n{END}\nafter\n"
    assert replace_block(text, f"{BEGIN}\nnew\n{END}", "README.md") == f"# Title\n\nbefore\n{BEGIN}\nnew\n{END}\nafter\n"
    for broken in ("no markers", f"{END}\n{BEGIN}", f"{BEGIN}\n{BEGIN}\n{END}"):
        with pytest.raises(ConfigError, match="README.md: needs one"):
            replace_block(broken, "x", "README.md")


def test_a_readme_without_markers_is_refused_before_any_page_is_written(tmp_path):
    from lusv.evaluation.published import publish

    run_dir = _run(tmp_path, {"luvnet": (0.6, 0.5, 0.7)})
    readme = tmp_path / "README.md"
    readme.write_text("# a README without the markers\n")
    with pytest.raises(ConfigError, match="README.md: needs one"):
        publish([run_dir], tmp_path / "page.md", readme)
    assert not (tmp_path / "page.md").exists()
    assert readme.read_text() == "# a README without the markers\n"
