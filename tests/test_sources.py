"""The data-source registry: one list of names for study, the CLI and run_all.sh; default
locations and cache folder names per source."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from lusv import study
from lusv.cli import build_parser
from lusv.errors import ConfigError
from lusv.data.sources import SOURCES, get_source, source_names

REPO = Path(__file__).resolve().parents[1]


def test_names_come_from_one_registry_for_study_cli_and_shell():
    assert source_names() == ["synthetic", "pocus", "folder"]
    for name in source_names():
        assert build_parser().parse_args(["prepare", "--run-dir", "r", "--data", name]).data == name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prepare", "--run-dir", "r", "--data", "nope"])
    listed = subprocess.run([sys.executable, "-m", "lusv.data.sources"], cwd=REPO, capture_output=True, text=True,
                            check=True)
    assert listed.stdout.split() == source_names()


def test_default_locations_and_their_absence():
    assert get_source("pocus").location() == REPO.parent / "shared" / "data" / "pocus"
    assert study.dataset_location("synthetic", None, {"seed": 1, "n_clips": 3}) == REPO / "data" / "synthetic" / "n_clips3-seed1"
    assert get_source("synthetic").location() == REPO / "data" / "synthetic" / "default"
    assert get_source("folder").location("/x/labels.csv") == Path("/x/labels.csv")
    with pytest.raises(ConfigError, match="data='folder' needs data_path: the labels CSV"):
        study.dataset_location("folder")
    shell = subprocess.run([sys.executable, "-m", "lusv.data.sources", "--default-location", "folder"], cwd=REPO,
                           capture_output=True, text=True)
    assert shell.returncode == 2 and "--data folder needs --data-path" in shell.stderr
    with pytest.raises(ConfigError, match=r"unknown data source 'nope'.*'folder', 'pocus', 'synthetic'"):
        study.dataset_location("nope")


def test_cache_names_keep_datasets_apart():
    assert study.dataset_name("pocus", "/data/pocus_v2") == "pocus-pocus_v2"
    digest = hashlib.sha1(b"/study/site_a/labels.csv").hexdigest()[:8]
    assert study.dataset_name("folder", "/study/site_a/labels.csv") == f"folder-site_a-labels-{digest}"
    assert [name for name, source in SOURCES.items() if source.has_frame_truth] == ["synthetic"]
