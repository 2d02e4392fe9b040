"""The ``lusv`` command: ingestion over broken files, predict, train flags, evaluate.

Errors a user can cause (bad files, bad flags, unsafe checkpoints) must end in one line on
stderr and a non-zero exit, never a traceback; results are written next to the run.
"""

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from tiny_study import IMAGE_SIZE, NUM_FOLDS, NUM_FRAMES

import reference_stats as ref
from lusv.data.cache import ClipCache
from lusv.cli import main
from lusv.config import RunParams, params_for
from lusv.errors import ConfigError
from lusv.data.patterns import PATTERNS
from lusv.train import run
from videos import make_frames, write_test_video

BROKEN = {  # clip id -> (file, reason the ingest report must give)
    "bad-empty": ("empty.mp4", "empty file"),
    "bad-text": ("text.mp4", "corrupt or not a video"),
    "bad-truncated": ("truncated.mp4", "corrupt or not a video"),
    "bad-still": ("still.gif", "too few frames"),
    "bad-missing": ("missing.mp4", "missing file"),
}


def _write_broken_files(folder: Path, good: Path) -> None:
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("these are notes, not a video\n")
    (folder / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    write_test_video(folder / "still.gif", make_frames(1, 32, 48))


def _label_row(clip_id, path, patient, index):
    # Alternating labels so every pattern has both classes in every fold.
    return {"clip_id": clip_id, "path": path, "patient_id": patient, "a_lines": index % 2,
            "b_lines": (index + 1) % 2, "consolidation": (index // 2) % 2, "pleural_effusion": (index // 3) % 2}


@pytest.fixture(scope="module")
def broken_folder(tmp_path_factory) -> Path:
    """6 patients x 2 good clips plus the five broken files of BROKEN; returns labels.csv."""
    folder = tmp_path_factory.mktemp("user_data")
    rows = []
    for index in range(12):
        name = f"clip{index:02d}.mp4"
        write_test_video(folder / name, make_frames(6, 32, 48, seed=index))
        rows.append(_label_row(f"clip{index:02d}", name, f"P{index // 2}", index))
    _write_broken_files(folder, folder / "clip00.mp4")
    rows += [_label_row(cid, name, f"P{i}", i) for i, (cid, (name, _)) in enumerate(BROKEN.items())]
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


def _prepare(labels_csv: Path, tmp_path: Path) -> list[str]:
    return ["prepare", "--run-dir", str(tmp_path / "run"), "--profile", "quick", "--data", "folder",
            "--data-path", str(labels_csv), "--num-folds", "3", "--cache-dir", str(tmp_path / "cache")]


def _error_line(err: str, command: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"lusv {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ----------------------------------------------------------------------------- prepare


def test_prepare_skips_broken_files_and_reports_why(broken_folder, tmp_path, capsys):
    assert main(_prepare(broken_folder, tmp_path)) == 0
    out = capsys.readouterr().out

    report_path = tmp_path / "run" / "prepare" / "ingest_report.csv"
    report = pd.read_csv(report_path).set_index("clip_id")
    for clip_id, (_, reason) in BROKEN.items():
        assert (report.loc[clip_id, "status"], report.loc[clip_id, "reason"]) == ("skipped", reason), clip_id
    assert (report.drop(index=list(BROKEN))["status"] == "ingested").all() and len(report) == 17

    # The printed summary: one row per (status, reason) with its clip count, and where the report is.
    rows = [re.fullmatch(r"\s*(\w+)\s+(.+?)\s+(\d+)", line) for line in out.splitlines()[1:6]]
    summary = {(row[1], row[2]): int(row[3]) for row in rows}
    assert summary == {("ingested", "new entry"): 12, ("skipped", "corrupt or not a video"): 2,
                       ("skipped", "empty file"): 1, ("skipped", "too few frames"): 1, ("skipped", "missing file"): 1}
    assert out.splitlines()[0].split() == ["status", "reason", "clips"]
    assert str(report_path) in out

    # Only usable clips go on to the labels table and the patient-level folds.
    usable = pd.read_csv(tmp_path / "run" / "prepare" / "labels.csv")
    assert sorted(usable["clip_id"]) == [f"clip{i:02d}" for i in range(12)]
    folds = pd.read_csv(tmp_path / "run" / "prepare" / "folds.csv")
    assert sorted(folds["fold"].unique()) == [0, 1, 2]
    assert folds.groupby("patient_id")["fold"].nunique().max() == 1


def test_prepare_with_nothing_usable_exits_2_and_keeps_the_report(broken_folder, tmp_path, capsys):
    labels = pd.read_csv(broken_folder)
    only_broken = tmp_path / "data" / "labels.csv"
    only_broken.parent.mkdir()
    labels[labels["clip_id"].isin(BROKEN)].assign(
        path=lambda t: [str(broken_folder.parent / p) for p in t["path"]]
    ).to_csv(only_broken, index=False)

    assert main(_prepare(only_broken, tmp_path)) == 2
    captured = capsys.readouterr()
    message = _error_line(captured.err, "prepare")
    assert "no usable clip in 5 labelled clip(s)" in message and "empty file: 1" in message
    report_path = tmp_path / "run" / "prepare" / "ingest_report.csv"
    report = pd.read_csv(report_path)
    assert (report["status"] == "skipped").all() and set(report["clip_id"]) == set(BROKEN)
    assert str(report_path) in captured.out and "missing file" in captured.out  # the why, before the error


def test_prepare_reads_relative_paths_from_the_current_folder(broken_folder, tmp_path, monkeypatch, capsys):
    import json
    import os

    monkeypatch.chdir(tmp_path)
    data_path = os.path.relpath(broken_folder, tmp_path)
    assert main(["prepare", "--run-dir", "mine", "--profile", "quick", "--data", "folder",
                 "--data-path", data_path, "--num-folds", "3", "--cache-dir", "relcache"]) == 0
    prepared = json.loads((tmp_path / "mine" / "prepare" / "prepared.json").read_text())
    # Stored absolute: a later step started from another folder finds the same cache.
    assert prepared["cache_root"] == str(tmp_path / "relcache")
    assert (tmp_path / "relcache").is_dir()


def test_prepare_refuses_fewer_than_three_folds_before_decoding(broken_folder, tmp_path, capsys):
    args = _prepare(broken_folder, tmp_path)
    args[args.index("--num-folds") + 1] = "2"
    assert main(args) == 2
    assert "need at least 3 folds" in _error_line(capsys.readouterr().err, "prepare")
    assert not (tmp_path / "cache").exists()


def test_prepare_reads_day_first_dates_on_request(tmp_path, capsys):
    folder = tmp_path / "data"
    rows = []
    for index in range(6):
        write_test_video(folder / f"c{index}.mp4", make_frames(6, 32, 48, seed=index))
        rows.append({**_label_row(f"c{index}", f"c{index}.mp4", f"P{index}", index), "acquired_on": f"2{index}.04.2020"})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    args = ["prepare", "--run-dir", str(tmp_path / "run"), "--profile", "quick", "--data", "folder",
            "--data-path", str(folder / "labels.csv"), "--num-folds", "3", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 2
    assert "lusv prepare --dayfirst" in _error_line(capsys.readouterr().err, "prepare")
    assert main([*args, "--dayfirst"]) == 0
    labels = pd.read_csv(tmp_path / "run" / "prepare" / "labels.csv")
    assert labels["acquired_on"].tolist()[:2] == ["2020-04-20", "2020-04-21"]


# ----------------------------------------------------------------------------- a trained run


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli_runs")
    return run(**tiny_data.params(out, fold=0, epochs=1, max_batches_per_epoch=1))


def test_predict_prints_four_probabilities_and_writes_an_attention_plot(trained_run, tiny_data, tmp_path, capsys):
    test_predictions = pd.read_csv(trained_run / "predictions_test.csv", dtype={"clip_id": str})
    clip_id = test_predictions["clip_id"].iloc[0]
    clip_path = tiny_data.labels().set_index("clip_id").loc[clip_id, "path"]
    plot = tmp_path / "attention.png"

    assert main(["predict", clip_path, "--checkpoint", str(trained_run / "best.pt"), "--plot", str(plot)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:4]] == list(PATTERNS)
    printed = np.array([float(line.split()[1]) for line in lines[:4]])
    # Decoding the video gives exactly what training cached, so predict agrees with the run's own test predictions.
    expected = test_predictions.iloc[0][[f"p_{p}" for p in PATTERNS]].to_numpy(dtype=float)
    np.testing.assert_allclose(printed, expected, atol=6e-4)
    assert lines[4] == f"attention plot: {plot}"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 1000


def test_predict_writes_its_figure_into_the_current_folder_not_beside_the_clip(trained_run, tiny_data, tmp_path,
                                                                                 monkeypatch, capsys):
    clip_path = Path(tiny_data.labels()["path"].iloc[0])
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["predict", str(clip_path), "--checkpoint", str(trained_run)]) == 0
    expected = here / f"{clip_path.name}.attention.png"
    assert capsys.readouterr().out.splitlines()[4] == f"attention plot: {expected}"
    assert expected.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(clip_path.parent.glob("*.attention.png")), "nothing written into the dataset's folder"


class _Payload:
    def __reduce__(self):
        return (print, ("executed",))


def _pickled_code_run(trained_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "unsafe_run"
    shutil.copytree(trained_run, copy)
    torch.save({"model": _Payload()}, copy / "best.pt")
    return copy


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing clip", r"nope\.mp4 does not exist"),
        ("corrupt clip", r"text\.mp4 cannot be decoded"),
        ("missing checkpoint", r"checkpoint .*absent\.pt does not exist"),
        ("run folder without best.pt", r"best\.pt does not exist"),
        ("pickled code", r"refusing to load .*best\.pt: it carries pickled code"),
    ],
)
def test_predict_bad_inputs_end_in_one_line(case, expected, trained_run, tiny_data, broken_folder, tmp_path, capsys):
    good_clip = tiny_data.labels()["path"].iloc[0]
    clip, checkpoint, extra = good_clip, str(trained_run / "best.pt"), []
    if case == "missing clip":
        clip = str(tmp_path / "nope.mp4")
    elif case == "corrupt clip":
        clip = str(broken_folder.parent / "text.mp4")
    elif case == "missing checkpoint":
        checkpoint = str(trained_run / "absent.pt")
    elif case == "run folder without best.pt":
        shutil.copytree(trained_run, tmp_path / "copy")
        (tmp_path / "copy" / "best.pt").unlink()
        checkpoint = str(tmp_path / "copy")
    elif case == "pickled code":
        checkpoint = str(_pickled_code_run(trained_run, tmp_path) / "best.pt")

    status = main(["predict", clip, "--checkpoint", checkpoint, *extra])
    captured = capsys.readouterr()
    assert status != 0 and captured.out == ""
    assert re.search(expected, _error_line(captured.err, "predict"))
    assert "executed" not in captured.out + captured.err


def test_predict_prints_the_probabilities_even_when_the_plot_cannot_be_written(trained_run, tiny_data, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    unwritable = tmp_path / "file.txt" / "attention.png"  # a folder that is a file
    status = main(["predict", tiny_data.labels()["path"].iloc[0], "--checkpoint", str(trained_run),
                   "--plot", str(unwritable)])
    captured = capsys.readouterr()
    assert status == 1
    assert [line.split()[0] for line in captured.out.splitlines()] == list(PATTERNS)
    assert re.search(r"attention\.png not written: .*(Not a directory|File exists)", _error_line(captured.err, "predict"))


def test_predict_with_a_model_without_attention_says_so(tiny_data, tmp_path, capsys):
    plain_run = run(**tiny_data.params(tmp_path, model="cnn_lstm", epochs=1, max_batches_per_epoch=1))
    capsys.readouterr()  # the training's own progress line
    assert main(["predict", tiny_data.labels()["path"].iloc[0], "--checkpoint", str(plain_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[4] == "no attention plot: model 'cnn_lstm' has no attention over frames"


def test_predict_in_a_real_process_prints_only_the_error(trained_run, tiny_data, tmp_path):
    unsafe = _pickled_code_run(trained_run, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "lusv.cli", "predict", tiny_data.labels()["path"].iloc[0], "--checkpoint", str(unsafe)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [_error_line(done.stderr, "predict")]  # no log noise, no traceback
    assert "weights_only=True" in done.stderr and "executed" not in done.stderr


# ----------------------------------------------------------------------------- train and evaluate


def test_train_help_lists_every_run_parameter(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    for field in dataclasses.fields(RunParams):
        assert "--" + field.name.replace("_", "-") in out, field.name
    assert "(f+1) % num_folds" in " ".join(out.split())  # a literal % in a help text survives argparse


def test_bare_boolean_train_flags_mean_true():
    from lusv.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--resume"]).resume is True
    assert parser.parse_args(["train", "--resume", "false", "--fold", "1"]).resume is False
    assert parser.parse_args(["train", "--augment", "--fold", "1"]).augment is True
    assert parser.parse_args(["train"]).resume is None  # unset: the profile decides


def test_train_with_an_impossible_fold_is_a_config_error(capsys):
    with pytest.raises(ConfigError, match="fold=9"):
        params_for("quick", fold=9)
    assert main(["train", "--profile", "quick", "--fold", "9"]) == 2
    message = _error_line(capsys.readouterr().err, "train")
    assert "fold=9" in message and "0..4" in message


def test_train_never_reuses_another_files_entry_under_the_same_clip_id(tiny_data, tmp_path, capsys):
    """Two datasets with the same clip ids in one cache (cache_dir defaults to a shared data/cache)."""
    cache_dir = tmp_path / "shared_cache"
    shutil.copytree(tiny_data.cache_dir, cache_dir)
    other = tmp_path / "other"
    shutil.copytree(tiny_data.source_dir, other)
    labels = tiny_data.labels()
    first, second = (Path(p).relative_to(tiny_data.source_dir) for p in labels["path"].iloc[:2])
    (other / first).write_bytes((tiny_data.source_dir / second).read_bytes())  # other content, same id

    argv = ["train", "--profile", "quick", "--labels", str(other / "labels.csv"), "--splits", str(tiny_data.folds_csv),
            "--temporal-split", str(tiny_data.temporal_csv), "--cache-dir", str(cache_dir),
            "--out-dir", str(tmp_path / "runs"), "--num-frames", str(NUM_FRAMES), "--image-size", str(IMAGE_SIZE),
            "--num-folds", str(NUM_FOLDS), "--epochs", "1", "--max-batches-per-epoch", "1", "--batch-size", "4",
            "--num-workers", "0", "--clip-policy", "whole"]  # the tiny study's T-frame clips, not quick's windows
    assert main(argv) == 0
    assert Path(capsys.readouterr().out.strip().splitlines()[-1]).is_dir()

    cache = ClipCache(cache_dir, NUM_FRAMES, IMAGE_SIZE)
    assert all(Path(p).is_relative_to(other) for p in cache.manifest["path"])
    original = ClipCache(tiny_data.cache_dir, NUM_FRAMES, IMAGE_SIZE)
    first_id, second_id = labels["clip_id"].iloc[:2]
    np.testing.assert_array_equal(cache.load(first_id)[0], original.load(second_id)[0])


def test_evaluate_prints_per_pattern_aucs_with_cis(trained_run, capsys):
    predictions_csv = trained_run / "predictions_test.csv"
    assert main(["evaluate", str(predictions_csv)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"== {predictions_csv}"
    assert lines[1].split()[:4] == ["pattern", "auc", "ci_low", "ci_high"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(PATTERNS) | {"macro", "micro"} <= set(rows)
    predictions = pd.read_csv(predictions_csv)
    for pattern in PATTERNS:
        known = predictions[pattern].notna()
        y, score = predictions.loc[known, pattern], predictions.loc[known, f"p_{pattern}"]
        expected = roc_auc_score(y, score)
        assert float(rows[pattern][1]) == pytest.approx(expected, abs=6e-4), pattern
        if min((y == 1).sum(), (y == 0).sum()) >= 2 and 0 < expected < 1:  # a DeLong CI exists
            low, high = ref.delong_ci(y, score)[1:]
            assert [float(v) for v in rows[pattern][2:4]] == pytest.approx([low, high], abs=6e-4), pattern


def test_evaluate_prints_the_delong_logit_ci_of_a_hand_worked_example(tmp_path, capsys):
    # positives 0.8 0.6 0.3, negatives 0.5 0.2 0.1: AUC 8/9, DeLong variance 2/81, logit CI
    # expit(ln 8 -+ 1.959964 * sqrt(2/81) / (8/81)) = (0.261, 0.995); see tests/test_metrics.py.
    scores, labels = [0.8, 0.6, 0.3, 0.5, 0.2, 0.1], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    table = pd.DataFrame({"clip_id": [f"c{i}" for i in range(6)], "patient_id": [f"P{i}" for i in range(6)],
                          "fold": 0, **{f"p_{p}": scores for p in PATTERNS}, **{p: labels for p in PATTERNS}})
    table.to_csv(tmp_path / "hand.csv", index=False)
    assert main(["evaluate", str(tmp_path / "hand.csv"), "--n-boot", "0"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    for pattern in PATTERNS:
        assert rows[pattern][1:7] == ["0.889", "0.261", "0.995", "3", "3", "delong-logit"], pattern


def test_evaluate_missing_file_is_one_line(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "none.csv")]) == 1
    assert "none.csv" in _error_line(capsys.readouterr().err, "evaluate")
