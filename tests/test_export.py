"""``lusv export`` and batch ``lusv predict``: the exported fold ensemble scores a video exactly as
the study did, bad exports and bad files are one clear line each, and a killed batch continues.

The expected numbers come from the study's own files (``oof/<key>.temporal_test.csv``, the fold
ensemble the study wrote while training; ``tables/temporal_test_thresholds.csv``, the thresholds
its results step chose), from a textbook Youden loop written here, and from hashlib: never from
the export or predict code under test.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_study import IMAGE_SIZE, NUM_FOLDS, NUM_FRAMES, SYNTHETIC

import lusv
from lusv.cli import main
from lusv.data.patterns import PATTERNS
from videos import make_frames, write_test_video

P = [f"p_{p}" for p in PATTERNS]
TRAIN = {"epochs": 1, "max_batches_per_epoch": 1, "batch_size": 4, "num_workers": 0}


def _prepare(tiny_data, root: Path, **policy):
    from lusv.study import prepare

    return prepare(root, profile="quick", data="synthetic", data_path=tiny_data.source_dir,
                   synthetic={**SYNTHETIC, "progress": False}, image_size=IMAGE_SIZE, num_folds=NUM_FOLDS, seed=0,
                   temporal_test_fraction=0.25, held_out_fraction=0.0, cache_root=tiny_data.cache_dir, **policy)


@pytest.fixture(scope="module")
def study(tiny_data, tmp_path_factory):
    """A tiny study of its own (the shared tiny study's clips and cache): LUV-Net end to end and
    with a frozen encoder, 3 folds each, results tables made; both exported."""
    from lusv import study as steps

    root = tmp_path_factory.mktemp("export_study")
    prepared = _prepare(tiny_data, root / "study", num_frames=NUM_FRAMES, clip_policy="whole")
    steps.train_folds(prepared, "luvnet", **TRAIN)
    steps.train_folds(prepared, "luvnet", key="luvnet_frozen", train_encoder=False, **TRAIN)
    steps.results(prepared.run_dir, keys=["luvnet"], n_boot=20)
    for key in ("luvnet", "luvnet_frozen"):
        assert main(["export", "--study", str(prepared.run_dir), "--key", key, "--out", str(root / key)]) == 0
    return prepared, root


def _temporal_test(prepared, key: str) -> tuple[pd.DataFrame, list[str]]:
    """The study's fold-ensemble predictions of its temporally separated videos, and their files."""
    ensemble = pd.read_csv(prepared.run_dir / "oof" / f"{key}.temporal_test.csv", dtype={"clip_id": str, "video_id": str})
    paths = pd.read_csv(prepared.labels_csv, dtype={"clip_id": str}).set_index("clip_id")["path"]
    videos = ensemble["video_id"] if "video_id" in ensemble else ensemble["clip_id"]
    return ensemble, [paths[v] for v in dict.fromkeys(videos)]


def _textbook_youden(y: np.ndarray, score: np.ndarray) -> float:
    """The observed score maximising sensitivity + specificity - 1 (score >= t positive; the highest t on ties)."""
    known = ~np.isnan(y)
    y, score = y[known].astype(bool), score[known]
    best, best_j = None, -np.inf
    for t in sorted(set(score), reverse=True):
        j = np.mean(score[y] >= t) - np.mean(score[~y] >= t)
        if j > best_j + 1e-12:
            best, best_j = t, j
    return float(best)


@pytest.mark.parametrize("key", ["luvnet", "luvnet_frozen"])
def test_predict_gives_the_studys_fold_ensemble_probabilities_and_calls(study, key, tmp_path, capsys):
    prepared, root = study
    ensemble, files = _temporal_test(prepared, key)
    out = tmp_path / "predictions.csv"
    assert main(["predict", *files, "--model", str(root / key), "--out", str(out)]) == 0
    got = pd.read_csv(out)
    assert got["status"].tolist() == ["ok"] * len(files) and got["frames"].tolist() == [NUM_FRAMES] * len(files)
    np.testing.assert_allclose(got[P].to_numpy(), ensemble[P].to_numpy(), rtol=0, atol=1e-6)

    validation = pd.read_csv(prepared.run_dir / "oof" / f"{key}.val.csv")
    thresholds = {p: _textbook_youden(validation[p].to_numpy(float), validation[f"p_{p}"].to_numpy(float)) for p in PATTERNS}
    exported = json.loads((root / key / "thresholds.json").read_text())["thresholds"]
    assert exported == pytest.approx(thresholds, abs=0)
    if key == "luvnet":  # the study's own results step chose the same thresholds for its fold ensemble
        table = pd.read_csv(prepared.run_dir / "tables" / "temporal_test_thresholds.csv")
        thresholds = dict(zip(table.loc[table["model"] == "luvnet", "pattern"], table.loc[table["model"] == "luvnet", "threshold"]))
    for pattern in PATTERNS:
        expected = (ensemble[f"p_{pattern}"] >= thresholds[pattern]).astype(int).tolist()
        assert got[f"call_{pattern}"].tolist() == expected


def test_an_export_is_self_contained_safetensors_json_and_a_manifest_of_every_file(study):
    prepared, root = study
    folder = root / "luvnet"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["README.md", "config.json", "manifest.json", "thresholds.json",
                     *(f"weights/fold{f}.safetensors" for f in range(NUM_FOLDS))]
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    assert set(manifest) == set(files) - {"manifest.json"}
    for name, entry in manifest.items():
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    for name in files:  # no pickle anywhere: pickles start with the PROTO opcode, torch's zip files with PK
        head = (folder / name).read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK"
    config = json.loads((folder / "config.json").read_text())
    run = json.loads((prepared.run_dir / "runs" / "luvnet-fold0" / "config.json").read_text())
    assert config["study"]["git_commit"] == run["git_sha"] and config["lusv_version"] == lusv.__version__
    assert config["input"]["num_frames"] == NUM_FRAMES and config["input"]["image_size"] == IMAGE_SIZE
    assert config["input"]["crop"]["threshold"] == 16 and config["input"]["normalisation"]["mean"] == [0.485, 0.456, 0.406]
    assert not any(str(prepared.run_dir) in str(v) for v in config["run_params"].values()), "no local path of the study"


def test_the_model_card_reads_its_numbers_from_the_studys_tables(study):
    prepared, root = study
    card = (root / "luvnet" / "README.md").read_text()
    header = card.split("---")[1]
    assert "license:" in header and "roc_auc" in header and "not-a-medical-device" in header
    assert "**Not a medical device. Research use only.**" in card
    summary = pd.read_csv(prepared.run_dir / "tables" / "test_auc_summary.csv")
    macro = summary.loc[(summary["model"] == "luvnet") & (summary["pattern"] == "macro"), "auc"].item()
    assert f"value: {macro:.4f}" in header
    labels = pd.read_csv(prepared.labels_csv)
    folds = pd.read_csv(prepared.folds_csv)
    development = labels[labels["clip_id"].isin(folds["clip_id"])]
    assert f"| development (the folds) | {len(development)} | {development['patient_id'].nunique()} |" in card
    assert f"{len(labels)} usable clips of {labels['patient_id'].nunique()} patients" in card


def _copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root / "luvnet", tmp_path / "export"))


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lusv predict: error:"), err
    return lines[0]


def _future(folder: Path) -> None:
    """An export as a future lusv would write it: a newer version and format, its manifest consistent."""
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "lusv_version": "9.0.0", "format": 2}))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["config.json"]["sha256"] = hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("case, expected", [
    ("changed weights", r"weights/fold1\.safetensors has changed since it was exported"),
    ("missing file", r"thresholds\.json is missing \(the manifest lists it\)"),
    ("missing manifest", r"manifest\.json is missing"),
    ("future version", r"exported by lusv 9\.0\.0; this is lusv " + re.escape(lusv.__version__)),
])
def test_a_damaged_or_incompatible_export_is_refused_in_one_line(study, case, expected, tmp_path, capsys):
    prepared, root = study
    folder = _copy(root, tmp_path)
    if case == "changed weights":
        data = bytearray((folder / "weights" / "fold1.safetensors").read_bytes())
        data[-1] ^= 1  # one bit of one weight
        (folder / "weights" / "fold1.safetensors").write_bytes(bytes(data))
    elif case == "missing file":
        (folder / "thresholds.json").unlink()
    elif case == "missing manifest":
        (folder / "manifest.json").unlink()
    else:
        _future(folder)
    _, files = _temporal_test(prepared, "luvnet")
    out = tmp_path / "predictions.csv"
    assert main(["predict", files[0], "--model", str(folder), "--out", str(out)]) == 2
    assert re.search(expected, _one_error_line(capsys.readouterr().err))
    assert not out.exists()


def test_loading_an_export_unpickles_nothing(study, monkeypatch):
    import pickle

    import torch

    from lusv.predict.exported import load_model

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling while loading an export")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = load_model(study[1] / "luvnet")
    assert len(loaded.models) == NUM_FOLDS and loaded.thresholds is not None


@pytest.fixture()
def messy_folder(study, tmp_path) -> tuple[Path, list[str]]:
    """Two good videos (one in a subfolder), a truncated one, an empty one, a text file."""
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    write_test_video(folder / "a_good.mp4", make_frames(10, 40, 48, seed=1))
    write_test_video(folder / "sub" / "b_good.avi", make_frames(12, 40, 48, seed=2))
    good = (folder / "a_good.mp4").read_bytes()
    (folder / "c_broken.mp4").write_bytes(good[: len(good) // 3])
    (folder / "d_empty.mp4").write_bytes(b"")
    (folder / "e_notes.txt").write_text("not a video\n")
    return folder, ["a_good.mp4", "c_broken.mp4", "d_empty.mp4", "e_notes.txt", "sub/b_good.avi"]


def test_a_folder_with_broken_empty_and_non_video_files_keeps_every_row(study, messy_folder, tmp_path, capsys):
    folder, names = messy_folder
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(folder), "--model", str(study[1] / "luvnet"), "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index("clip_id")
    assert sorted(table.index) == sorted(names)
    assert table.loc[["a_good.mp4", "sub/b_good.avi"], "status"].tolist() == ["ok", "ok"]
    assert table.loc[["a_good.mp4", "sub/b_good.avi"], P].notna().all().all()
    assert table.loc["c_broken.mp4", "status"] == "failed" and "cannot be decoded" in table.loc["c_broken.mp4", "reason"]
    assert table.loc["d_empty.mp4", "status"] == "failed" and "empty (zero-byte)" in table.loc["d_empty.mp4", "reason"]
    assert table.loc["e_notes.txt", "status"] == "skipped" and "not a video format" in table.loc["e_notes.txt", "reason"]
    assert table.loc[["c_broken.mp4", "d_empty.mp4", "e_notes.txt"], P].isna().all().all()
    printed = capsys.readouterr().out
    assert "2 video(s) predicted" in printed and "2 could not be read, 1 not videos" in printed


@pytest.mark.parametrize("where", ["a file as folder", "read-only folder"])
def test_an_output_path_that_cannot_be_written_is_one_line_before_any_work(study, messy_folder, where, tmp_path,
                                                                          capsys, monkeypatch):
    import os

    folder, _ = messy_folder
    if where == "a file as folder":
        (tmp_path / "file.txt").write_text("x")
        out = tmp_path / "file.txt" / "predictions.csv"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "predictions.csv"
        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: a read-only folder is writable")
    called = []
    monkeypatch.setattr("lusv.predict.batch.model_inputs", lambda *a: called.append(a))
    assert main(["predict", str(folder), "--model", str(study[1] / "luvnet"), "--out", str(out)]) == 2
    assert re.search(r"cannot write predictions to .*predictions\.csv .*nothing was predicted",
                     _one_error_line(capsys.readouterr().err))
    assert called == [], "no video is read before the output is known to be writable"


def test_a_killed_batch_keeps_its_rows_and_the_same_command_continues(study, messy_folder, tmp_path, monkeypatch, capsys):
    import lusv.predict.batch as batch

    folder, names = messy_folder
    out = tmp_path / "predictions.csv"
    command = ["predict", str(folder), "--model", str(study[1] / "luvnet"), "--out", str(out), "--batch-size", "1"]
    assert main(command) == 0
    complete = pd.read_csv(out).set_index("clip_id")
    out.unlink()

    real, calls = batch._score_and_write, []

    def killed_on_the_second_video(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "_score_and_write", killed_on_the_second_video)
    assert main(command) == 130
    kept = pd.read_csv(out)
    assert kept.loc[kept["status"] == "ok", "clip_id"].tolist() == ["a_good.mp4"]
    with open(out, "a") as handle:
        handle.write("sub/b_good.avi,ok,,12,1,0.1")  # a line cut short by the kill
    monkeypatch.setattr(batch, "_score_and_write", real)
    capsys.readouterr()
    assert main(command) == 0
    assert "1 video(s) predicted, 1 kept from an earlier run" in capsys.readouterr().out
    final = pd.read_csv(out).set_index("clip_id")
    assert list(final.index) == names
    pd.testing.assert_frame_equal(final[["status", *P]], complete[["status", *P]])


def test_a_predictions_file_of_another_model_is_refused(study, messy_folder, tmp_path, capsys):
    folder, _ = messy_folder
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(folder / "a_good.mp4"), "--model", str(study[1] / "luvnet"), "--out", str(out)]) == 0
    before = out.read_text()
    assert main(["predict", str(folder / "a_good.mp4"), "--model", str(study[1] / "luvnet_frozen"), "--out", str(out)]) == 2
    assert "holds predictions of another model" in _one_error_line(capsys.readouterr().err)
    assert out.read_text() == before


def test_a_single_best_pt_is_one_fold_model_and_plots_are_written(study, tmp_path, capsys):
    prepared, _ = study
    run = prepared.run_dir / "runs" / "luvnet-fold1"
    own = pd.read_csv(run / "predictions_temporal_test.csv", dtype={"clip_id": str})
    _, files = _temporal_test(prepared, "luvnet")
    out, plots = tmp_path / "predictions.csv", tmp_path / "figures"
    assert main(["predict", *files[:2], "--model", str(run / "best.pt"), "--out", str(out), "--plots", str(plots)]) == 0
    got = pd.read_csv(out)
    np.testing.assert_allclose(got[P].to_numpy(), own[P].to_numpy()[:2], rtol=0, atol=1e-6)
    assert got[[f"call_{p}" for p in PATTERNS]].isna().all().all(), "a single run has no ensemble thresholds"
    figures = sorted(plots.glob("*.attention.png"))
    assert [f.name for f in figures] == sorted(f"{Path(f).name}.attention.png" for f in files[:2])
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figures)
    assert "no decision thresholds" in capsys.readouterr().out


def test_a_windows_export_scores_a_video_as_the_mean_of_its_windows(tiny_data, tmp_path):
    """Under the windows policy the study's video score is the mean of its windows' fold-ensemble
    probabilities (computed here with pandas); --per-window gives the windows themselves."""
    from lusv import study as steps

    prepared = _prepare(tiny_data, tmp_path / "study", num_frames=4, clip_policy="windows", window_overlap=1)
    steps.train_folds(prepared, "luvnet", **TRAIN)
    assert main(["export", "--study", str(prepared.run_dir), "--out", str(tmp_path / "export")]) == 0
    windows, files = _temporal_test(prepared, "luvnet")
    out = tmp_path / "predictions.csv"
    assert main(["predict", *files, "--model", str(tmp_path / "export"), "--out", str(out), "--per-window"]) == 0
    expected = windows.groupby("video_id", sort=False)[P].mean()
    got = pd.read_csv(out)
    np.testing.assert_allclose(got[P].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-6)
    assert got["windows"].tolist() == windows.groupby("video_id", sort=False).size().tolist()
    per_window = pd.read_csv(tmp_path / "predictions.windows.csv")
    np.testing.assert_allclose(per_window[P].to_numpy(), windows[P].to_numpy(), rtol=0, atol=1e-6)
    assert per_window["start"].tolist()[:3] == [0, 3, 4]  # 8 frames, T = 4, overlap 1: 0, 3 and the tail at 4


@pytest.mark.slow
def test_notebook_09_exports_the_study_and_predicts_its_set_apart_videos(study, tmp_path):
    papermill = pytest.importorskip("papermill")
    import nbformat

    from lusv.paths import REPO_ROOT

    prepared, _ = study
    output = tmp_path / "09.ipynb"
    papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "09_use_the_model.ipynb"), str(output), kernel_name="python3",
                               parameters={"run_dir": str(prepared.run_dir)}, progress_bar=False)
    notebook = nbformat.read(output, as_version=4)
    ensemble, files = _temporal_test(prepared, "luvnet")
    predictions = pd.read_csv(prepared.run_dir / "use_the_model" / "predictions.csv")
    np.testing.assert_allclose(predictions[P].to_numpy(), ensemble[P].to_numpy(), rtol=0, atol=1e-6)
    assert (prepared.run_dir / "export" / "luvnet" / "manifest.json").is_file()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "one video's attention figure"
    assert any("Not a medical device" in o.get("data", {}).get("text/markdown", "") for o in outputs), "the model card"
    streams = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert len(streams.splitlines()) < 10 and "\r" not in streams, streams
    conclusion = (prepared.run_dir / "conclusions" / "09_use_the_model.md").read_text()
    assert f"scored {len(files)} of {len(files)} files" in conclusion
    called = (predictions["call_a_lines"] == 1).sum()
    assert f"A-lines {called}," in conclusion, "the conclusion counts the calls of the table"


@pytest.mark.slow
def test_the_predict_benchmark_times_both_sides_on_the_same_output(study, tmp_path):
    import sys

    from lusv.paths import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT))  # the benchmarks/ package at the repository root
    from benchmarks import bench_predict

    folder = tmp_path / "clips"
    folder.mkdir()
    for seed in range(2):
        write_test_video(folder / f"clip{seed}.mp4", make_frames(9, 40, 48, seed=seed))
    rows = bench_predict.run(study[1] / "luvnet_frozen", folder, baseline_clips=1)
    assert [row.unit for row in rows] == ["clips/s"] * 4
    assert all(row.value > 0 for row in rows) and rows[1].ratio == pytest.approx(rows[1].value / rows[0].value)
    assert rows[0].extra["max_abs_difference"] <= 1e-6, "both sides compute the same probabilities"
    assert (rows[0].extra["clips"], rows[0].extra["baseline_clips"]) == (2, 1)


def test_a_folder_search_reads_dicom_without_a_suffix(study, tmp_path):
    pytest.importorskip("pydicom")
    pytest.importorskip("PIL")
    from pydicom.data import get_testdata_file

    dicom = get_testdata_file("examples_ybr_color.dcm", download=False)  # 30-frame ultrasound, ships in the wheel
    if dicom is None:
        pytest.skip("pydicom's bundled ultrasound example is not installed")
    folder = tmp_path / "export_from_the_scanner" / "series1"
    folder.mkdir(parents=True)
    shutil.copy(dicom, folder / "IM000001")  # scanners often write DICOM without a suffix
    (folder / "IM000001.json").write_text("{}")
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(tmp_path / "export_from_the_scanner"), "--model", str(study[1] / "luvnet"),
                 "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index("clip_id")
    assert table.loc["series1/IM000001", "status"] == "ok" and table.loc["series1/IM000001", "frames"] == NUM_FRAMES
    assert table.loc["series1/IM000001.json", "status"] == "skipped"


def test_the_model_card_shows_the_studys_external_validation(study, tmp_path):
    prepared, _ = study
    external = prepared.run_dir / "external" / "hospital-b"
    external.mkdir(parents=True)
    rows = [{"model": "luvnet", "pattern": p, "n_labelled": 40, "n_pos": 10, "n_neg": 30, "auc": a, "ci_low": lo,
             "ci_high": hi, "threshold": 0.5, "sensitivity": 0.75, "specificity": 0.6, "note": ""}
            for p, a, lo, hi in zip(PATTERNS, [0.812, 0.7, np.nan, 0.9], [0.70, 0.5, np.nan, 0.8], [0.90, 0.85, np.nan, 0.97])]
    pd.DataFrame(rows).to_csv(external / "external_auc.csv", index=False)
    try:
        assert main(["export", "--study", str(prepared.run_dir), "--out", str(tmp_path / "export")]) == 0
    finally:
        shutil.rmtree(prepared.run_dir / "external")
    card = (tmp_path / "export" / "README.md").read_text()
    assert "### External validation: hospital-b" in card
    assert "| A-lines | 40 | 0.812 (0.70–0.90) | 0.750 | 0.600 |" in card
    assert "| Consolidation | 40 | n/a |" in card, "an AUC the external data could not give stays n/a"
    assert f"value: {np.mean([0.812, 0.7, 0.9]):.4f}" in card.split("---")[1]
