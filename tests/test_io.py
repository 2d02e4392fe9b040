"""lusv.infra.io: atomic writes keep the old file on failure and give normal permissions; unsafe
or damaged checkpoints are refused with a one-line message; recorded parameters are compared
key by key; tables keep their ids as strings."""

import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch

from lusv.infra import io
from lusv.errors import CheckpointError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_written_files_have_the_permissions_of_a_plain_open(tmp_path):
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    written = [
        io.write_text(tmp_path / "a.txt", "x"),
        io.write_json(tmp_path / "a.json", {"a": 1}),
        io.write_csv(tmp_path / "a.csv", pd.DataFrame({"a": [1]})),
        io.save_npy(tmp_path / "a.npy", np.zeros(3, np.uint8)),
        io.torch_save(tmp_path / "a.pt", {"w": torch.zeros(2)}),
    ]
    expected = 0o666 & ~_current_umask()
    assert stat.S_IMODE(reference.stat().st_mode) == expected
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path.name  # mkstemp alone gives 0600
    assert _leftovers(tmp_path) == []


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = io.write_text(tmp_path / "results.csv", "old\n")
    with pytest.raises(ZeroDivisionError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half a ne")
            1 / 0  # a crash while writing
    assert target.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_round_trips(tmp_path):
    frame = pd.DataFrame({"clip_id": ["a", "b"], "p": [0.25, 0.5]})
    pd.testing.assert_frame_equal(pd.read_csv(io.write_csv(tmp_path / "f.csv", frame)), frame)
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(np.load(io.save_npy(tmp_path / "a.npy", array)), array)
    state = {"w": torch.arange(4.0), "epoch": 3}
    loaded = io.torch_load(io.torch_save(tmp_path / "c.pt", state))
    assert loaded["epoch"] == 3 and torch.equal(loaded["w"], state["w"])


class _Payload:
    """torch.save must pickle a reference to code (print) to store this."""

    def __reduce__(self):
        return (print, ("executed",))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
        (lambda p: p.write_text("hello\n"), r"corrupt, truncated or not a checkpoint"),
        (lambda p: p.write_bytes(b"PK\x03\x04garbage"), r"corrupt, truncated or not a checkpoint"),
        (lambda p: p.write_bytes(io.torch_save(p, {"w": torch.zeros(256)}).read_bytes()[:300]), r"corrupt"),
        (lambda p: torch.save({"model": _Payload()}, p), r"refusing to load .*pickled code.*weights_only=True: Unsupported global"),
        (lambda p: None, r"does not exist"),
    ],
    ids=["empty", "text", "bad-zip", "truncated", "pickled-code", "missing"],
)
def test_bad_checkpoints_give_one_line_checkpoint_errors(tmp_path, capsys, make, message):
    path = tmp_path / "best.pt"
    make(path)
    with pytest.raises(CheckpointError, match=message) as caught:
        io.torch_load(path)
    text = str(caught.value)
    assert str(path) in text and "\n" not in text
    assert "executed" not in capsys.readouterr().out  # the pickled call never ran


class _SystemCall:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_blocked_module_refusal_is_named_in_one_line(tmp_path):
    # torch words this refusal differently from an unknown global: both must read as a refusal.
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "model": _SystemCall()}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*weights_only=True: .*GLOBAL (posix|nt)\.system") as caught:
        io.torch_load(path)
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------- recorded parameters


def test_recorded_mismatch_says_none_empty_or_what_changed(tmp_path):
    record = tmp_path / "params.json"
    assert io.recorded_mismatch(record, {"seed": 0}) is None  # no record yet
    record.write_text("{not json")
    assert io.recorded_mismatch(record, {"seed": 0}) is None  # unreadable: as if absent
    record.write_text("[1, 2]")
    assert io.recorded_mismatch(record, {"seed": 0}) is None  # not a parameters object
    io.write_record(record, {"seed": 0, "n_clips": 8, "probe": "mixed", "old_key": 1})
    assert io.recorded_mismatch(record, {"seed": 0, "n_clips": 8}) == []  # keys only in the record are not compared
    changed = io.recorded_mismatch(record, {"seed": 1, "n_clips": 8, "probe": "linear", "new_key": 2})
    assert [d.key for d in changed] == ["new_key", "probe", "seed"]  # sorted by key
    assert ", ".join(map(str, changed)) == "new_key: None -> 2, probe: 'mixed' -> 'linear', seed: 0 -> 1"
    assert io.recorded_mismatch(record, {"seed": 1, "probe": "linear"}, ignore={"probe"}) == [("seed", 0, 1)]
    # an already loaded record (e.g. the parameters saved in a checkpoint) works the same way
    assert io.recorded_mismatch({"lr": 0.1, "epochs": 3}, {"lr": 0.1, "epochs": 5}) == [("epochs", 3, 5)]
    assert io.recorded_mismatch(None, {"lr": 0.1}) is None


def test_read_table_keeps_ids_as_strings(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("clip_id,patient_id,fold,size\n007,0042,1,12\n")
    table = io.read_table(path, dtype={"size": float})
    assert table["clip_id"].tolist() == ["007"] and table["patient_id"].tolist() == ["0042"]
    assert table["fold"].tolist() == [1] and table["size"].dtype == float
