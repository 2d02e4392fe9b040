"""Issue 14, parts A2-A4 and B5-B10: no run can corrupt another, damaged files and full disks
end in one clear line, and the messages a user meets tell them what to do.

Every test here reproduces one defect of the issue (it failed before the fix). Disk-full is
simulated by making the writer raise what a full disk raises (OSError ENOSPC, or torch's
iostream RuntimeError); kills are real SIGKILLs of a subprocess.
"""

import errno
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lusv.infra import io, runlock
from lusv.cli import build_parser, main
from lusv.errors import CheckpointError, LabelsError, LusvError
from lusv.train import run
from videos import make_frames, write_test_video

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def _error_line(err: str, command: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"lusv {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    return run(**tiny_data.params(tmp_path_factory.mktemp("rel_runs"), fold=0, epochs=1, max_batches_per_epoch=1))


# ----------------------------------------------------------------------------- A2: one run per folder


def test_run_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    with runlock.run_lock(tmp_path / "run"):
        with pytest.raises(LusvError, match=rf"in use by process {os.getpid()} on {os.uname().nodename}"):
            with runlock.run_lock(tmp_path / "run"):
                pass
    with runlock.run_lock(tmp_path / "run"):  # released on exit
        pass


def test_run_lock_of_a_killed_holder_is_stale(tmp_path):
    code = "import os, signal, sys; from lusv.infra import runlock\nwith runlock.run_lock(sys.argv[1]):\n    os.kill(os.getpid(), signal.SIGKILL)"
    killed = _python(code, str(tmp_path / "run"))
    assert killed.returncode == -signal.SIGKILL
    assert "pid" in (tmp_path / "run" / runlock.RUN_LOCK_NAME).read_text()  # the dead holder's record stays...
    with runlock.run_lock(tmp_path / "run"):  # ...but does not block
        pass


def test_second_training_into_a_busy_run_folder_is_refused(tiny_data, tmp_path):
    params = tiny_data.params(tmp_path, fold=0, epochs=1, max_batches_per_epoch=1, run_name="shared")
    with runlock.run_lock(tmp_path / "shared"):
        with pytest.raises(LusvError, match=r"run folder .*shared is in use by process"):
            run(**params)
    assert not (tmp_path / "shared" / "config.json").exists()  # the refused run touched nothing
    run(**params)


# ----------------------------------------------------------------------------- A3: resume without checkpoint


def test_resume_without_a_checkpoint_says_it_starts_from_scratch(tiny_data, tmp_path, caplog):
    params = tiny_data.params(tmp_path, fold=0, epochs=1, max_batches_per_epoch=1, resume=True, run_name="fresh")
    with caplog.at_level("INFO", logger="lusv"):
        run(**params)
    assert any("resume=True but" in r.message and "no checkpoint.pt" in r.message and "starting from scratch" in r.message
               for r in caplog.records)


# ----------------------------------------------------------------------------- A4: one default profile


def test_train_and_prepare_default_to_the_same_profile_and_print_it(capsys):
    import inspect

    from lusv import study
    from lusv.config import DEFAULT_PROFILE, PROFILES, params_for
    from lusv.train.runner import _resolve_params

    parser = build_parser()
    assert DEFAULT_PROFILE == "quick"
    assert parser.parse_args(["train"]).profile is None  # no study given: DEFAULT_PROFILE, printed below
    assert parser.parse_args(["prepare", "--run-dir", "x"]).profile == DEFAULT_PROFILE
    assert inspect.signature(study.prepare).parameters["profile"].default == DEFAULT_PROFILE
    assert params_for() == PROFILES["quick"]
    assert _resolve_params(None, {"fold": 1}) == params_for("quick", fold=1)  # lusv.train.run(...) too
    assert main(["train", "--fold", "7", "--num-folds", "3"]) == 2
    assert "profile: quick (the default" in capsys.readouterr().err


# ----------------------------------------------------------------------------- B5: damaged checkpoints


def _flip_tensor_bytes(path: Path) -> None:
    """Overwrite 4 bytes inside the first tensor record with a NaN, as bit rot would."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 16)
    with open(path, "r+b") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(handle.read(4), dtype="<u2")
        handle.seek(info.header_offset + 30 + int(name_length) + int(extra_length) + 8)
        handle.write(np.array([np.nan], dtype=np.float32).tobytes())


def test_bit_rot_inside_a_tensor_is_refused(tmp_path):
    path = io.torch_save(tmp_path / "best.pt", {"w": torch.ones(64), "b": torch.zeros(3)})
    _flip_tensor_bytes(path)
    with pytest.raises(CheckpointError, match=r"best\.pt is damaged: .*checksum"):
        io.torch_load(path)


def test_non_finite_weights_are_refused(tmp_path):
    path = io.torch_save(tmp_path / "checkpoint.pt", {"model": {"w": torch.tensor([1.0, float("inf")])}, "epoch": 1})
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt holds non-finite values .*model\.w"):
        io.torch_load(path)
    io.torch_save(tmp_path / "ok.pt", {"loss": float("inf"), "w": torch.ones(2)})  # plain floats may be inf
    assert io.torch_load(tmp_path / "ok.pt")["loss"] == float("inf")


def test_predict_with_a_rotten_best_pt_exits_non_zero_without_nan(finished_run, tiny_data, tmp_path, capsys):
    import shutil

    damaged = tmp_path / "run"
    shutil.copytree(finished_run, damaged)
    _flip_tensor_bytes(damaged / "best.pt")
    clip = tiny_data.labels()["path"].iloc[0]
    assert main(["predict", clip, "--checkpoint", str(damaged), "--plot", str(tmp_path / "a.png")]) == 2
    captured = capsys.readouterr()
    assert "best.pt is damaged" in _error_line(captured.err, "predict")
    assert "nan" not in captured.out


def test_predict_never_prints_a_nan_probability(finished_run, tiny_data, tmp_path, monkeypatch, capsys):
    import lusv.predict.video

    monkeypatch.setattr(lusv.predict.video, "predict", lambda *a, **k: (np.full((1, 4), np.nan), None))
    clip = tiny_data.labels()["path"].iloc[0]
    assert main(["predict", clip, "--checkpoint", str(finished_run), "--plot", str(tmp_path / "a.png")]) == 2
    captured = capsys.readouterr()
    assert "non-finite probabilities" in _error_line(captured.err, "predict") and "nan" not in captured.out


# ----------------------------------------------------------------------------- B6: damaged cache headers


def test_any_damage_to_a_cache_entry_header_means_rebuild(tiny_data, tmp_path):
    from lusv.data.cache import CacheError, ClipCache
    from tiny_study import IMAGE_SIZE, NUM_FRAMES

    labels = tiny_data.labels().head(4)
    cache = ClipCache(tmp_path / "cache", NUM_FRAMES, IMAGE_SIZE)
    cache.build(labels, progress=False)
    originals = {cid: cache.load(cid)[0].copy() for cid in labels["clip_id"]}
    entries = {cid: cache.dir / "clips" / row["entry"] for cid, row in cache._rows.items()}
    clean = {cid: path.read_bytes() for cid, path in entries.items()}
    statuses = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        for cid, path in entries.items():
            damaged = bytearray(clean[cid])
            for position in rng.integers(10, 90, size=1 + seed % 3):  # inside the header dict
                damaged[position] = int(rng.integers(32, 127)) if seed % 2 else int(rng.integers(0, 256))
            path.write_bytes(bytes(damaged))
        reopened = ClipCache(tmp_path / "cache", NUM_FRAMES, IMAGE_SIZE)
        for cid in entries:  # a direct read refuses the entry with the cache's own error, or reads it intact
            try:
                np.testing.assert_array_equal(reopened.load(cid)[0], originals[cid])
            except (CacheError, AssertionError):
                pass
        report = reopened.build(labels, progress=False)
        statuses += report.table["status"].tolist()
        for cid in entries:
            np.testing.assert_array_equal(reopened.load(cid)[0], originals[cid])
    assert "rebuilt" in statuses


# ----------------------------------------------------------------------------- B7: full disk


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("basic_ios::clear: iostream error"),
])
def test_full_disk_during_a_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, failure):
    target = io.torch_save(tmp_path / "checkpoint.pt", {"epoch": torch.tensor(1)})

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(LusvError, match=rf"{tmp_path.name}: no space left on the device") as caught:
        io.torch_save(target, {"epoch": torch.tensor(2)})
    assert "\n" not in str(caught.value)
    monkeypatch.undo()
    assert int(io.torch_load(target)["epoch"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_full_disk_during_training_marks_the_run_failed(tiny_data, tmp_path, monkeypatch):
    real_save = torch.save
    saves = []

    def full_after_first_epoch(obj, f, *args, **kwargs):
        saves.append(Path(f).name)
        if len(saves) > 2:  # epoch 1 wrote best.pt and checkpoint.pt; epoch 2 finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_after_first_epoch)
    params = tiny_data.params(tmp_path, fold=0, epochs=2, max_batches_per_epoch=1, run_name="full")
    with pytest.raises(LusvError, match="no space left"):
        run(**params)
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["status"] == "failed" and "no space left" in config["failure"]
    monkeypatch.undo()
    assert io.torch_load(tmp_path / "full" / "checkpoint.pt")["epoch"] == 1  # previous checkpoint intact


# ----------------------------------------------------------------------------- B8: stale temporary files


def test_a_killed_write_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    code = ("import os, signal, sys; from lusv.infra import io\n"
            "with io.atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'x' * 1000)\n    os.kill(os.getpid(), signal.SIGKILL)")
    assert _python(code, str(tmp_path / "best.pt")).returncode == -signal.SIGKILL
    stale = [p.name for p in tmp_path.iterdir()]
    assert len(stale) == 1 and stale[0].startswith(".best.pt.") and stale[0].endswith(".tmp")
    # Another target's live temporary (its writer holds it) must survive.
    live = tmp_path / ".best.pt.abcd1234.tmp"
    with open(live, "wb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        other = tmp_path / ".log.csv.abcd1234.tmp"
        other.write_text("not ours")
        io.torch_save(tmp_path / "best.pt", {"w": torch.ones(1)})
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["best.pt", live.name, other.name])
    # At a run's start every unheld temporary of the folder goes, whatever its target.
    assert sorted(io.remove_stale_temp_files(tmp_path)) == sorted([live, other])
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_training_start_removes_stale_temp_files_of_its_folder(tiny_data, tmp_path):
    run_dir = tmp_path / "stale"
    run_dir.mkdir()
    (run_dir / ".checkpoint.pt.k1ll3d00.tmp").write_bytes(b"x" * 1000)
    (run_dir / ".predictions_val.csv.k1ll3d00.tmp").write_text("half")
    run(**tiny_data.params(tmp_path, fold=0, epochs=1, max_batches_per_epoch=1, run_name="stale", resume=True))
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- B9: messages


def _labels_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_trailing_empty_unnamed_columns_are_ignored(tmp_path):
    from lusv.data.labels import read_labels

    csv = _labels_csv(tmp_path / "labels.csv",
                      "clip_id,path,patient_id,a_lines,b_lines,consolidation,pleural_effusion,,\n"
                      "c1,c1.mp4,P1,1,0,0,1,,\nc2,c2.mp4,P2,0,1,,0,,\n")
    table = read_labels(csv)
    assert table["clip_id"].tolist() == ["c1", "c2"] and "" not in table.columns
    assert table["pleural_effusion"].tolist() == [1.0, 0.0]
    csv.write_text("clip_id,path,patient_id,a_lines,b_lines,consolidation,pleural_effusion,\nc1,c1.mp4,P1,1,0,0,1,note\n")
    with pytest.raises(LabelsError, match=r"line 2: column 8 has no name but holds 'note'"):
        read_labels(csv)


@pytest.mark.parametrize("delimiter, name", [(";", "semicolon"), ("\t", "tab")])
def test_semicolon_or_tab_delimited_csv_is_named(tmp_path, delimiter, name):
    from lusv.data.labels import read_labels

    header = delimiter.join(["clip_id", "path", "patient_id", "a_lines", "b_lines", "consolidation", "pleural_effusion"])
    csv = _labels_csv(tmp_path / "labels.csv", header + "\n" + delimiter.join(["c1", "c1.mp4", "P1", "1", "0", "0", "1"]) + "\n")
    with pytest.raises(LabelsError, match=rf"looks {name}-delimited: export it with commas"):
        read_labels(csv)


def test_another_models_checkpoint_is_named_in_one_line(finished_run, tmp_path):
    import shutil

    from lusv.config import params_for
    from lusv.inference import build_run_model, load_trained

    other = tmp_path / "run"
    shutil.copytree(finished_run, other)
    config = json.loads((other / "config.json").read_text())
    usvn = build_run_model(params_for("quick", **{**config["params"], "model": "usvn"}), weights="random")
    io.torch_save(other / "best.pt", usvn.state_dict())
    with pytest.raises(CheckpointError) as caught:
        load_trained(other)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    assert "looks like a usvn checkpoint" in message
    assert re.search(r"\d+ missing and \d+ unexpected key", message)


def test_too_few_patients_for_three_folds_gives_advice_and_the_skip_table(tmp_path, capsys):
    folder = tmp_path / "data"
    rows = []
    for index in range(4):
        write_test_video(folder / f"c{index}.mp4", make_frames(6, 32, 48, seed=index))
        rows.append({"clip_id": f"c{index}", "path": f"c{index}.mp4", "patient_id": f"P{index % 2}",
                     "a_lines": index % 2, "b_lines": 1, "consolidation": 0, "pleural_effusion": 0})
    (folder / "empty.mp4").write_bytes(b"")
    rows.append({"clip_id": "bad", "path": "empty.mp4", "patient_id": "P9", "a_lines": 1, "b_lines": 0,
                 "consolidation": 0, "pleural_effusion": 0})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    code = main(["prepare", "--run-dir", str(tmp_path / "run"), "--data", "folder", "--data-path",
                 str(folder / "labels.csv"), "--num-folds", "3", "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    captured = capsys.readouterr()
    line = _error_line(captured.err, "prepare")
    assert "at most 1" not in line and "at most 2" not in line
    assert "2 patient(s)" in line and "4 clip(s)" in line and "at least 3 patients" in line
    assert "empty file" in captured.out and "ingest_report.csv" in captured.out  # the skip table too


# ----------------------------------------------------------------------------- B10: one acquisition date


def _dated_folder(tmp_path: Path, dates: list[str]) -> Path:
    folder = tmp_path / "data"
    rows = []
    for index, date in enumerate(dates):
        write_test_video(folder / f"c{index}.mp4", make_frames(6, 32, 48, seed=index))
        rows.append({"clip_id": f"c{index}", "path": f"c{index}.mp4", "patient_id": f"P{index}", "a_lines": index % 2,
                     "b_lines": (index + 1) % 2, "consolidation": (index // 2) % 2, "pleural_effusion": 0,
                     "acquired_on": date})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


def test_a_single_acquisition_date_skips_the_temporal_test_set_with_a_warning(tmp_path, caplog):
    from lusv import study

    labels = _dated_folder(tmp_path, ["2020-04-20"] * 6)
    with caplog.at_level("WARNING", logger="lusv"):
        prepared = study.prepare(tmp_path / "run", data="folder", data_path=labels, num_folds=3,
                                 cache_root=tmp_path / "cache")
    assert prepared.temporal_csv is None
    assert pd.read_csv(prepared.folds_csv)["clip_id"].nunique() == 6
    assert any("same date" in r.message and "no temporally separated test set" in r.message for r in caplog.records)


def test_no_temporal_split_flag_keeps_every_clip_in_the_folds(tmp_path, capsys):
    labels = _dated_folder(tmp_path, [f"2020-04-2{i}" for i in range(8)])
    args = ["prepare", "--run-dir", str(tmp_path / "run"), "--data", "folder", "--data-path", str(labels),
            "--num-folds", "3", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    assert (tmp_path / "run" / "prepare" / "temporal_split.csv").is_file()
    assert pd.read_csv(tmp_path / "run" / "prepare" / "folds.csv")["clip_id"].nunique() < 8
    assert main([*args, "--no-temporal-split"]) == 0
    prepared = json.loads((tmp_path / "run" / "prepare" / "prepared.json").read_text())
    assert prepared["temporal_csv"] is None
    assert not (tmp_path / "run" / "prepare" / "temporal_split.csv").exists()  # no stale split left to mislead
    assert pd.read_csv(tmp_path / "run" / "prepare" / "folds.csv")["clip_id"].nunique() == 8



def test_notebook_and_run_all_offer_the_switch_too():
    import nbformat

    notebook = nbformat.read(REPO / "notebooks" / "01_preprocess.ipynb", as_version=4)
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    assert "temporal_split = True" in parameters.source
    assert "temporal_split=temporal_split" in "".join(c.source for c in notebook.cells if c.cell_type == "code")
    script = (REPO / "run_all.sh").read_text()
    assert "--no-temporal-split) temporal_split=False" in script and '-p temporal_split "$temporal_split"' in script
