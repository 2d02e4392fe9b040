"""Issue 25, part 1: a full disk ends in one line and a run marked "failed", on a real filesystem too.

On a real full disk torch raises "iostream error" and then, closing its archive, a second
RuntimeError ("unexpected pos ...") whose context is the first. The simulated test raises that
chain; the real test trains into a 14 MB tmpfs mounted in a private user + mount namespace
(``unshare -rm``), the issue's repro, and is skipped, with the reason, where the machine does not
allow such a mount.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lusv.errors import DiskFullError
from lusv.infra import io

REPO = Path(__file__).resolve().parents[1]


def test_a_full_disk_error_wrapped_in_another_is_still_a_full_disk(tmp_path, monkeypatch):
    target = io.torch_save(tmp_path / "checkpoint.pt", {"epoch": torch.tensor(1)})

    def real_full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        try:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                               "file data/0: basic_ios::clear: iostream error")
        except RuntimeError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2815296 vs 2815188")

    monkeypatch.setattr(torch, "save", real_full_disk)
    with pytest.raises(DiskFullError, match=rf"cannot write checkpoint\.pt in .*{tmp_path.name}: no space left"):
        io.torch_save(target, {"epoch": torch.tensor(2)})
    monkeypatch.undo()
    assert int(io.torch_load(target)["epoch"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_an_unrelated_runtime_error_is_not_called_a_full_disk(tmp_path, monkeypatch):
    def broken(obj, f, *args, **kwargs):
        try:
            raise ValueError("a bug")
        except ValueError:
            raise RuntimeError("unexpected pos 1 vs 2")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        io.torch_save(tmp_path / "x.pt", {})


def _small_filesystem_or_skip(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("no unshare command: cannot mount a small filesystem without privileges")
    probe = tmp_path / "probe"
    probe.mkdir()
    tried = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs '{probe}'"],
                           capture_output=True, text=True, timeout=30)
    if tried.returncode != 0:
        reason = (tried.stderr.strip().splitlines() or ["refused"])[-1]
        pytest.skip(f"this machine does not allow a tmpfs in a user namespace ({reason})")


def test_a_real_full_disk_gives_one_line_and_marks_the_run_failed(tiny_data, tmp_path):
    _small_filesystem_or_skip(tmp_path)
    mount, outside = tmp_path / "small", tmp_path / "outside"
    mount.mkdir()
    outside.mkdir()
    # Inside the namespace: mount 14 MB, train 3 epochs into it (a checkpoint is ~8 MB), then copy
    # out what must be checked before the namespace, and the filesystem with it, goes away.
    script = r'''
mount -t tmpfs -o size=14m tmpfs "$MNT" || exit 90
"$PY" -m lusv.cli train --study "$STUDY" --out-dir "$MNT" --epochs 3 --max-batches-per-epoch 1 --num-workers 0 2>"$OUT/stderr.txt"
echo $? > "$OUT/rc"
cp "$MNT/luvnet-fold0/config.json" "$OUT/" 2>/dev/null
"$PY" -c 'import sys; from lusv.infra import io; print(int(io.torch_load(sys.argv[1])["epoch"]))' \
    "$MNT/luvnet-fold0/checkpoint.pt" > "$OUT/checkpoint_epoch" 2>&1
ls -a "$MNT/luvnet-fold0" > "$OUT/files"
'''
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MNT": str(mount), "OUT": str(outside),
           "PY": sys.executable, "STUDY": str(tiny_data.root / "study")}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    err = (outside / "stderr.txt").read_text()
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("lusv train: error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0], err
    assert (outside / "rc").read_text().strip() != "0"
    config = json.loads((outside / "config.json").read_text())
    assert config["status"] == "failed" and "no space left" in config["failure"]
    assert int((outside / "checkpoint_epoch").read_text()) >= 1  # the previous checkpoint is whole
    assert not [name for name in (outside / "files").read_text().split() if name.endswith(".tmp")]
