"""Every study notebook runs under papermill, in order, on tiny synthetic data (and on the POCUS
development portion when it sits beside the repository), and writes what it promises."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from pocus_data import POCUS_ROOT, requires_pocus

papermill = pytest.importorskip("papermill")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
# Smallest settings every model accepts (C3D needs 16 frames to survive its pools).
TINY_TRAINING = {"epochs": 2, "max_batches_per_epoch": 2, "batch_size": 4}
TINY_DATA = {"num_frames": 16, "image_size": 32}

pytestmark = pytest.mark.slow


def execute(name: str, out_dir: Path, **parameters) -> nbformat.NotebookNode:
    output = out_dir / f"{name}.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(output), parameters=parameters, kernel_name="python3",
        progress_bar=False, cwd=str(NOTEBOOKS),
    )  # fmt: skip
    return nbformat.read(output, as_version=4)


# What a progress bar leaves in a saved output: carriage returns, tqdm's "|####  | 3/10 [00:01<00:02"
PROGRESS_FRAGMENT = re.compile(r"\r|\d+%\||\|\s*\d+/\d+\s*\[\d")
MAX_LOG_LINES = 30


def check_readable(notebook: nbformat.NotebookNode, name: str) -> None:
    """No progress-bar fragments and little log text (stream outputs) in an executed notebook,
    and a generated conclusion at the end of every results notebook."""
    streams = [o for cell in notebook.cells if cell.cell_type == "code"
               for o in cell.get("outputs", []) if o.get("output_type") == "stream"]
    text = "".join(o["text"] for o in streams)
    assert not PROGRESS_FRAGMENT.search(text), f"{name}: progress-bar fragment in {text[:300]!r}"
    assert len(text.splitlines()) < MAX_LOG_LINES, f"{name}: {len(text.splitlines())} lines of log text:\n{text}"
    printed_headings = [line for line in text.splitlines() if line in ("auc_table", "delong_p", "thresholds")]
    assert not printed_headings, f"{name}: headings belong in markdown cells"
    if name != "01_preprocess":  # 06 ends with its claims table, right after its conclusion
        ending = notebook.cells[-3:] if name == "06_results" else notebook.cells[-1:]
        last = [o for cell in ending for o in cell.get("outputs", []) if "text/markdown" in o.get("data", {})]
        assert last and "What this run shows" in last[0]["data"]["text/markdown"], f"{name}: no generated conclusion"


def outputs_of(notebook: nbformat.NotebookNode, mime: str) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", []) if mime in o.get("data", {})]


def test_every_notebook_has_a_parameters_cell_and_no_function_definitions():
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01_preprocess", "02_train_folds", "03_baselines", "04_ablation_temporal",
                     "05_attention", "06_results", "07_external_pocus", "08_external_validation", "09_use_the_model"]  # fmt: skip
    for name in names:
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
        assert "def " not in code and "class " not in code, f"{name}: logic belongs in the lusv package"


def test_study_notebooks_run_in_order_on_tiny_synthetic_data(tmp_path):
    run_dir = tmp_path / "study"
    executed = tmp_path / "executed"
    executed.mkdir()
    common = {"run_dir": str(run_dir)}  # the profile is the study's, given to 01 alone

    nb = execute("01_preprocess", executed, **common, profile="quick", **TINY_DATA, data_path=str(tmp_path / "synthetic"),
                 cache_root=str(tmp_path / "cache"), synthetic={"n_clips": 40, "n_patients": 20, "num_frames": 16, "frame_size": 48})  # fmt: skip
    assert outputs_of(nb, "image/png"), "01 shows the example frames"
    check_readable(nb, "01_preprocess")
    folds = pd.read_csv(run_dir / "prepare" / "folds.csv")
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    assert folds.groupby("patient_id")["fold"].nunique().max() == 1
    assert (run_dir / "prepare" / "ingest_report.csv").is_file()
    assert (run_dir / "prepare" / "temporal_split.csv").is_file()
    held_out = pd.read_csv(run_dir / "prepare" / "held_out.csv")  # the quick profile holds 10% of the patients out
    assert not set(held_out.loc[held_out["split"] == "held_out", "patient_id"]) & set(folds["patient_id"])

    check_readable(execute("02_train_folds", executed, **common, overrides=TINY_TRAINING), "02_train_folds")
    oof = pd.read_csv(run_dir / "oof" / "luvnet.test.csv")
    windows = pd.read_csv(run_dir / "prepare" / "windows.csv")  # the quick profile cuts videos into windows
    development = windows[windows["video_id"].isin(folds["clip_id"])]
    assert sorted(oof["clip_id"]) == sorted(development["clip_id"]), "each development window predicted exactly once"
    assert set(oof["video_id"]) == set(folds["clip_id"]), "every development video"
    assert len(list((run_dir / "runs").glob("luvnet-fold*/best.pt"))) == 5

    check_readable(execute("03_baselines", executed, **common, linear_probe=True,  # off by default in quick
                           overrides={**TINY_TRAINING, "max_batches_per_epoch": 1}), "03_baselines")
    for model in ("usvn", "c3d", "r2plus1d", "cnn_lstm", "frame_based", "linear_probe"):  # the quick roster + probe
        assert len(pd.read_csv(run_dir / "oof" / f"{model}.test.csv")) == len(oof)

    nb = execute("04_ablation_temporal", executed, **common, kernel_sizes=[3, 5], head_counts=[4, 8], n_boot=50,
                 overrides=TINY_TRAINING)
    check_readable(nb, "04_ablation_temporal")
    assert (run_dir / "oof" / "luvnet_k3.test.csv").is_file() and (run_dir / "oof" / "luvnet_h4.test.csv").is_file()
    assert (run_dir / "oof" / "luvnet_no_temporal.test.csv").is_file()
    assert not (run_dir / "runs" / "luvnet_k5-fold0").exists(), "K=5 is the quick profile's LUV-Net: reused"
    assert not (run_dir / "runs" / "luvnet_h8-fold0").exists(), "H=8 is the quick profile's LUV-Net: reused"
    assert pd.read_csv(run_dir / "tables" / "sweep_num_heads.csv")["n_folds"].tolist() == [5, 5], "every fold"
    assert len(pd.read_csv(run_dir / "tables" / "paper_table8.csv")) == 15
    assert (run_dir / "figures" / "sweeps.png").is_file()
    assert "The paper's sweep is a single fold (its Table 9)" in (run_dir / "conclusions" / "04_ablation_temporal.md").read_text()

    nb = execute("05_attention", executed, run_dir=str(run_dir), n_examples=2, max_saliency_clips=3)
    check_readable(nb, "05_attention")
    assert len(outputs_of(nb, "image/png")) >= 3, "summary plot + 2 Appendix B figures"
    scores = [o for o in outputs_of(nb, "text/html") if "pointing_game" in o["data"]["text/html"]]
    assert len(scores) == 2, "05 scores attention (frames) and Grad-CAM (regions) against the synthetic truth"
    assert "Grad-CAM on each pattern's top attended frames" in (run_dir / "conclusions" / "05_attention.md").read_text()

    nb = execute("06_results", executed, run_dir=str(run_dir), n_boot=50)
    check_readable(nb, "06_results")
    for name in ("per_fold", "fold_vs_pooled", "paper_table1", "paper_table2", "paper_table3", "table4"):
        assert (run_dir / "tables" / f"paper_{name}.csv").is_file(), name
    assert len(pd.read_csv(run_dir / "tables" / "paper_paper_table1.csv")) == 10, "every paper row, trained or not"
    levels = pd.read_csv(run_dir / "tables" / "test_levels.csv")
    assert set(levels["level"]) == {"window", "video_mean", "video_max"} and "luvnet_h4" in set(levels["model"])
    assert "macro AUC per window (the paper's unit" in (run_dir / "conclusions" / "06_results.md").read_text()
    assert any("LUV-Net (ResNet-50)" in o["data"]["text/html"] and "parameters (M), difference" in o["data"]["text/html"]
               for o in outputs_of(nb, "text/html")), "06 shows Table 4 beside the paper"
    from lusv.report.paper_claims import CLAIMS

    claims = pd.read_csv(run_dir / "tables" / "claims.csv", dtype=str)
    assert claims["#"].tolist() == [c.id for c in CLAIMS], "06 ends with the claims table, every claim a row"
    assert claims.iloc[:, -1].str.match(r"^(holds|reversed|not resolved|not tested here): ").all()
    assert claims.set_index("#").iloc[:, -1]["11"].split(":")[0] != "not tested here", "synthetic: attention is scored"
    assert "The paper's claims" in "".join(c.source for c in nb.cells[-2:] if c.cell_type == "markdown")
    for name in ("01_preprocess", "02_train_folds", "06_results"):
        assert "INFO" in (run_dir / "logs" / f"{name}.log").read_text(), "the full log goes to the run folder"

    from lusv.report.html import main as html_report

    shutil.copytree(executed, run_dir / "notebooks")
    assert html_report([str(run_dir)]) == 0
    page = (run_dir / "index.html").read_text()
    assert "<td>LUV-Net K=3</td>" in page and 'href="notebooks/05_attention.html"' in page
    first_table = page.split("<table", 1)[1].split("</table>", 1)[0]
    assert all(html.escape(c.words) in first_table for c in CLAIMS), "index.html opens with the claims table"
    assert (run_dir / "notebooks" / "05_attention.html").stat().st_size > 50_000, "figures embedded in the page"
    table = pd.read_csv(run_dir / "tables" / "test_auc_table.csv")
    assert {"luvnet", "usvn", "c3d", "r2plus1d", "cnn_lstm", "luvnet_no_temporal", "luvnet_k3"} <= set(table.iloc[:, 0])
    assert (run_dir / "tables" / "test_delong_p.csv").is_file()
    assert (run_dir / "tables" / "temporal_test_auc_table.csv").is_file()
    assert (run_dir / "tables" / "held_out_auc_table.csv").is_file()
    assert (run_dir / "figures" / "roc_test.png").stat().st_size > 10_000
    assert outputs_of(nb, "image/png")


@requires_pocus
def test_external_pocus_notebook_on_the_real_clips(tmp_path, tiny_data):
    run_dir = tmp_path / "pocus"
    # the profile is the main study's (the tiny study recorded 'quick'), not a parameter of 07
    nb = execute("07_external_pocus", tmp_path, study_dir=str(tiny_data.root / "study"), run_dir=str(run_dir), data_path=str(POCUS_ROOT),
            num_frames=8, image_size=32, cache_root=str(tmp_path / "cache"), n_boot=50, models=["luvnet"],
            overrides={"epochs": 1, "max_batches_per_epoch": 2})  # fmt: skip
    report = pd.read_csv(run_dir / "prepare" / "ingest_report.csv")
    assert (report["status"] != "skipped").sum() == 100
    assert len(pd.read_csv(run_dir / "oof" / "luvnet.test.csv")) + len(
        pd.read_csv(run_dir / "prepare" / "temporal_split.csv").query("split == 'temporal_test'")
    ) == 100
    assert {"luvnet", "linear_probe"} <= set(pd.read_csv(run_dir / "tables" / "test_auc_table.csv").iloc[:, 0])
    check_readable(nb, "07_external_pocus")


def test_a_subset_run_trains_only_its_runs_and_later_notebooks_report_them(tmp_path):
    """run_all.sh --models luvnet,usvn,luvnet_no_temporal --folds 0, as it passes them (raw text):
    one run per named model, on fold 0 only, and notebooks 05-07 report those without error."""
    run_dir = tmp_path / "study"
    executed = tmp_path / "executed"
    executed.mkdir()
    subset = {"models": "luvnet,usvn,luvnet_no_temporal", "folds": "0"}
    execute("01_preprocess", executed, run_dir=str(run_dir), profile="quick", **TINY_DATA,
            data_path=str(tmp_path / "synthetic"), cache_root=str(tmp_path / "cache"),
            synthetic={"n_clips": 30, "n_patients": 15, "num_frames": 16, "frame_size": 32})
    for name in ("02_train_folds", "03_baselines", "04_ablation_temporal"):
        check_readable(execute(name, executed, run_dir=str(run_dir), overrides=TINY_TRAINING, **subset), name)
    assert sorted(p.name for p in (run_dir / "runs").iterdir()) == ["luvnet-fold0", "luvnet_no_temporal-fold0",
                                                                   "usvn-fold0"]
    folds = pd.read_csv(run_dir / "prepare" / "folds.csv")
    windows = pd.read_csv(run_dir / "prepare" / "windows.csv")
    fold0 = sorted(windows.loc[windows["video_id"].isin(folds.loc[folds["fold"] == 0, "clip_id"]), "clip_id"])
    assert sorted(pd.read_csv(run_dir / "oof" / "usvn.test.csv")["clip_id"]) == fold0, "fold 0's test windows only"

    check_readable(execute("05_attention", executed, run_dir=str(run_dir), n_examples=1, max_saliency_clips=2),
                   "05_attention")
    check_readable(execute("06_results", executed, run_dir=str(run_dir), n_boot=20), "06_results")
    table = pd.read_csv(run_dir / "tables" / "test_auc_table.csv")
    assert sorted(table.iloc[:, 0]) == ["luvnet", "luvnet_no_temporal", "usvn"], "what was trained, nothing else"
    per_fold = pd.read_csv(run_dir / "tables" / "paper_per_fold.csv")
    assert set(per_fold["fold"]) == {0}
    if POCUS_ROOT.is_dir():  # notebook 07 takes the same subset (its reference, LUV-Net, always trains)
        external = run_dir / "external_pocus"
        check_readable(execute("07_external_pocus", executed, study_dir=str(run_dir), run_dir=str(external),
                               data_path=str(POCUS_ROOT), num_frames=8, image_size=32, cache_root=str(tmp_path / "pc"),
                               n_boot=20, subset="usvn", folds="0", overrides={"epochs": 1, "max_batches_per_epoch": 2}),
                       "07_external_pocus")
        assert sorted(p.name for p in (external / "runs").iterdir()) == ["luvnet-fold0", "usvn-fold0"]
        assert sorted(pd.read_csv(external / "tables" / "test_auc_table.csv").iloc[:, 0]) == [
            "linear_probe", "luvnet", "usvn"]
