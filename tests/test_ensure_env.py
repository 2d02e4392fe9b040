"""scripts/ensure_env.sh: a disk too small for torch is named before pip starts filling it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_checkout(tmp_path):
    """A checkout with the setup script and a venv that has neither torch nor pip (made in ~1 s)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "ensure_env.sh", tmp_path / "scripts")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True)
    return tmp_path


def _source_ensure_env(root: Path, min_free_gb: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH")}
    env["LUSV_MIN_FREE_GB"] = str(min_free_gb)
    return subprocess.run(["bash", "-c", "source scripts/ensure_env.sh"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_too_little_disk_for_torch_is_one_clear_line_before_pip(fresh_checkout):
    free_gb = shutil.disk_usage(fresh_checkout).free // 2**30
    result = _source_ensure_env(fresh_checkout, min_free_gb=free_gb + 1000)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (f"lusv: installing torch needs about {free_gb + 1000} GB free beside "
                         f"{fresh_checkout / '.venv'}; only {free_gb} GB are free "
                         "(free some space, or activate an environment that has torch)")
    assert not any("pip" in line for line in lines[:-1])
    assert not (fresh_checkout / ".venv" / ".lusv-install-stamp").exists()


def test_enough_disk_goes_on_to_pip(fresh_checkout):
    # The venv has no pip, so reaching the install shows the disk check let it through.
    result = _source_ensure_env(fresh_checkout, min_free_gb=0)
    assert result.returncode == 1
    assert "No module named pip" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "lusv: pip install failed (see above)"
