"""The study remembers its settings: prepare records them once, every later step reads them, and a
profile given anyway that disagrees with the study's is refused in one line naming both."""

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import nbformat
import papermill
import pytest

from lusv import study
from lusv.config import params_for
from lusv.errors import ConfigError

from tiny_study import copy_of_tiny_study

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


@pytest.fixture
def copied_study(tiny_data, tmp_path):
    """The tiny quick study under a folder of this test's own (its clips and cache shared, read-only)."""
    return copy_of_tiny_study(tiny_data, tmp_path / "study")


def test_prepare_records_the_study_settings(tiny_data):
    recorded = json.loads((tiny_data.root / "study" / "prepare" / "prepared.json").read_text())
    # typed in: what tests/tiny_study.py asked prepare for
    assert {key: recorded[key] for key in ("profile", "data", "clip_policy", "num_frames", "image_size", "num_folds",
                                           "seed", "held_out_fraction", "lusv_version")} == {
        "profile": "quick", "data": "synthetic", "clip_policy": "whole", "num_frames": 8, "image_size": 32,
        "num_folds": 3, "seed": 0, "held_out_fraction": 0.0, "lusv_version": "0.1.0"}
    assert recorded["data_path"] == str((tiny_data.root / "synthetic").resolve())
    shown = study.Prepared.load(tiny_data.root / "study").settings()
    assert shown["profile"] == "quick" and shown["frames"] == 8 and shown["window overlap"] is None


def test_a_later_step_given_another_profile_is_refused_naming_both(copied_study):
    with pytest.raises(ConfigError) as refused:
        study.train_folds(copied_study, "luvnet", profile="pretrained", epochs=1)
    message = str(refused.value)
    assert "'quick'" in message and "'pretrained'" in message and "\n" not in message
    with pytest.raises(ConfigError, match="prepared with profile 'quick', not 'paper'"):
        study.train_configurations(copied_study, {"usvn": {"model": "usvn"}}, profile="paper")  # in overrides too
    with pytest.raises(ConfigError, match="prepared with profile 'quick', not 'paper'"):
        study.temporal_ablation(copied_study, [3], [], profile="paper")
    assert not (copied_study.run_dir / "runs").exists(), "refused before anything trained"


def test_a_study_prepared_before_profiles_were_recorded_asks_for_one(copied_study):
    old = dataclasses.replace(copied_study, profile=None)
    with pytest.raises(ConfigError, match="did not record its profile"):
        old.resolve_profile()
    assert old.resolve_profile("quick") == "quick"


def test_preparing_an_existing_study_again_with_another_profile_is_refused(copied_study):
    with pytest.raises(ConfigError, match="holds a study prepared with profile 'quick', not 'pretrained'"):
        study.prepare(copied_study.run_dir, profile="pretrained", data="synthetic")


def test_every_run_records_the_profile_it_ran_under():
    assert params_for("pretrained", model="c3d").profile == "pretrained"
    assert params_for("quick").to_dict()["profile"] == "quick"
    with pytest.raises(ConfigError, match="name one profile"):
        params_for("quick", profile="paper")


def test_no_notebook_after_01_names_a_profile_in_its_parameters():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        names = {line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line}
        assert ("profile" in names) == (path.stem == "01_preprocess"), path.name


def test_notebook_02_with_a_profile_that_disagrees_stops_in_one_line(copied_study, tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as refused:
        papermill.execute_notebook(
            str(NOTEBOOKS / "02_train_folds.ipynb"), str(tmp_path / "02.ipynb"), kernel_name="python3",
            parameters={"run_dir": str(copied_study.run_dir), "overrides": {"profile": "pretrained", "epochs": 1}},
            progress_bar=False, cwd=str(NOTEBOOKS))
    assert refused.value.ename == "ConfigError"
    assert refused.value.evalue == (f"{copied_study.run_dir} was prepared with profile 'quick', not 'pretrained': "
                                    "leave the profile out (the study's is used) or prepare another study for "
                                    "'pretrained'")
    assert not (copied_study.run_dir / "runs").exists()


def test_lusv_train_given_a_study_reads_its_settings(copied_study, capsys):
    from lusv.cli import main

    assert main(["train", "--study", str(copied_study.run_dir), "--model", "usvn", "--fold", "1", "--epochs", "1",
                 "--max-batches-per-epoch", "1", "--batch-size", "4", "--num-workers", "0"]) == 0
    config = json.loads((copied_study.run_dir / "runs" / "usvn-fold1" / "config.json").read_text())["params"]
    assert (config["profile"], config["num_frames"], config["image_size"], config["clip_policy"]) == ("quick", 8, 32, "whole")
    assert config["labels"] == str(copied_study.labels_csv)
    assert main(["train", "--study", str(copied_study.run_dir), "--profile", "paper", "--model", "usvn"]) == 2
    assert "prepared with profile 'quick', not 'paper'" in capsys.readouterr().err


def test_run_all_refuses_a_profile_that_disagrees_with_the_study(copied_study):
    run = os.path.relpath(copied_study.run_dir, REPO / "results")
    result = subprocess.run(["bash", "run_all.sh", "pretrained", "--run", run], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"run_all.sh: results/{run} holds a study prepared with profile 'quick', not 'pretrained': leave the "
        "profile out, or pass --run NAME for a new study")
    assert not (copied_study.run_dir / "notebooks").exists()
