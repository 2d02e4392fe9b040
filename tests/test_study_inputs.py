"""Issue 25, "with the same eye": what lusv reads of a study or run folder written by another
process or another lusv version says what is wrong in one line (prepared.json, a run's
config.json, a checkpoint to resume from)."""

import json

import pytest
import torch

from lusv.config import params_for
from lusv.data.prepared import Prepared
from lusv.errors import CheckpointError, ConfigError
from lusv.inference import build_run_model, load_trained
from lusv.infra import io
from lusv.train import checkpoint

from tiny_study import copy_of_tiny_study


@pytest.fixture
def prepared_json(tiny_data, tmp_path):
    return copy_of_tiny_study(tiny_data, tmp_path / "study").prepare_dir / "prepared.json"


@pytest.mark.parametrize("damage, says", [
    (lambda record: "{ half a file", r"prepared\.json is unreadable or damaged \(JSONDecodeError"),
    (lambda record: json.dumps({**record, "frame_rate_policy": "new"}),
     r"written by another lusv version \(0\.1\.0\) with settings this one does not know \(frame_rate_policy\)"),
    (lambda record: json.dumps({k: v for k, v in record.items() if k != "num_frames"}),
     r"lacks settings of a prepared study"),
    (lambda record: json.dumps({"profile": "quick"}), r"is not a prepared study's record"),
])
def test_a_damaged_or_foreign_prepared_json_is_one_line(prepared_json, damage, says):
    prepared_json.write_text(damage(json.loads(prepared_json.read_text())))
    with pytest.raises(ConfigError, match=says) as caught:
        Prepared.load(prepared_json.parent.parent)
    assert "\n" not in str(caught.value)


def test_a_damaged_run_record_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    io.torch_save(run / "best.pt", {"w": torch.ones(1)})
    (run / "config.json").write_text('{"status": "finished"}')  # no params: not a run's record
    with pytest.raises(CheckpointError, match=r"config\.json is damaged or not a lusv run record \(KeyError"):
        load_trained(run)


def test_resuming_a_checkpoint_of_another_version_is_one_line(tmp_path):
    p = params_for("quick", model="usvn", out_dir=str(tmp_path), run_name="run")
    model = build_run_model(p)
    optimizer = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    saved = {"format": checkpoint.CHECKPOINT_FORMAT, "params": p.to_dict(), "model": {"other.weight": torch.ones(2)},
             "optimizer": optimizer.state_dict(), "scaler": {}, "epoch": 1, "best_val_loss": 0.5, "best_epoch": 1,
             "bad_epochs": 0, "history": [], "training_done": False}
    io.torch_save(tmp_path / "lacking.pt", saved)  # no "rng": an older or newer format
    with pytest.raises(CheckpointError, match=r"lacking\.pt lacks rng: it was written by another lusv version"):
        checkpoint.restore(tmp_path / "lacking.pt", p, tmp_path, model, optimizer, scaler)
    io.torch_save(tmp_path / "other.pt", {**saved, "rng": {}})
    with pytest.raises(CheckpointError, match=r"other\.pt does not fit the usvn model this lusv builds \(Error\(s\) in "
                                              r"loading state_dict"):
        checkpoint.restore(tmp_path / "other.pt", p, tmp_path, model, optimizer, scaler)
