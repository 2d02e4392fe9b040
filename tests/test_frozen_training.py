"""train_encoder=False: one run trains only the heads of a 2-D model on cached frozen-encoder features.

Through the real ``lusv.train.run`` on the tiny study: the files a run writes, a checkpoint that
still predicts clips (heads + the frozen encoder), the feature cache reused by a second model,
a run interrupted between checkpoints resumed to the same numbers, and the 3-D models refused.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lusv.infra import io
from lusv.config import params_for
from lusv.errors import ConfigError
from lusv.inference import load_trained, predict
from lusv.data.patterns import PATTERNS
from lusv.train import run

FROZEN = {"train_encoder": False, "feature_views": 2, "epochs": 3, "checkpoint_every": 2, "patience": 10,
          "max_batches_per_epoch": None, "lr": 1e-2}


def _probabilities(run_dir, role="test"):
    table = pd.read_csv(run_dir / f"predictions_{role}.csv", dtype={"clip_id": str, "patient_id": str})
    return table.set_index("clip_id")[[f"p_{p}" for p in PATTERNS]]


@pytest.fixture(scope="module")
def frozen_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("frozen")
    return run(**tiny_data.params(out, run_name="luvnet-frozen", **FROZEN))


def test_frozen_run_writes_a_run_whose_checkpoint_predicts_clips(frozen_run, tiny_data):
    config = json.loads((frozen_run / "config.json").read_text())
    assert config["status"] == "finished" and config["params"]["train_encoder"] is False
    assert len(pd.read_csv(frozen_run / "log.csv")) == 3
    assert config["features"]["views"] == 2 and config["features"]["clips"].get("ingested", 0) > 0

    folds = tiny_data.folds()
    test_ids = folds.loc[folds["fold"] == 0, "clip_id"].tolist()
    saved = _probabilities(frozen_run)
    assert sorted(saved.index) == sorted(test_ids) and saved.shape == (len(test_ids), 4)
    assert np.isfinite(saved.to_numpy()).all()
    temporal = tiny_data.temporal()
    assert len(_probabilities(frozen_run, "temporal_test")) == (temporal["split"] == "temporal_test").sum()

    # best.pt holds the heads and the frozen encoder: the whole model predicts clips as the run
    # did from cached features (float16 features: the same to rounding).
    from lusv.data.cache import ClipCache

    cache = ClipCache(tiny_data.cache_dir, 8, 32)
    clips, lengths = cache.load_many(saved.index.tolist())
    model = load_trained(frozen_run)
    np.testing.assert_allclose(predict(model, clips, lengths), saved.to_numpy(), atol=2e-3)

    # The encoder did not move: its weights equal a fresh build with the run's seed.
    torch.manual_seed(0)
    from lusv.inference import build_run_model
    from lusv.config import RunParams

    fresh = build_run_model(RunParams.from_dict(config["params"]))
    for name, value in fresh.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], value, rtol=0, atol=0)


def test_feature_cache_is_reused_by_another_model(frozen_run, tiny_data, tmp_path):
    second = run(**tiny_data.params(tmp_path, run_name="usvn-frozen", model="usvn", **FROZEN))
    first_record = json.loads((frozen_run / "config.json").read_text())["features"]
    record = json.loads((second / "config.json").read_text())["features"]
    assert record["dir"] == first_record["dir"]
    assert set(record["clips"]) == {"cached"}, record  # nothing computed again


def test_interrupted_frozen_run_resumes_to_the_same_numbers(frozen_run, tiny_data, tmp_path, monkeypatch):
    import lusv.train.runner as runner

    real = runner.train_one_epoch

    def crash_in_epoch_3(*args, epoch, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt  # killed after the checkpoint of epoch 2
        return real(*args, epoch=epoch, **kwargs)

    params = tiny_data.params(tmp_path, run_name="luvnet-frozen", **FROZEN)
    monkeypatch.setattr(runner, "train_one_epoch", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        run(**params)
    assert io.torch_load(tmp_path / "luvnet-frozen" / "checkpoint.pt")["epoch"] == 2
    monkeypatch.setattr(runner, "train_one_epoch", real)
    resumed = run(**{**params, "resume": True})
    pd.testing.assert_frame_equal(_probabilities(resumed), _probabilities(frozen_run))
    assert pd.read_csv(resumed / "log.csv")["val_loss"].tolist() == pd.read_csv(frozen_run / "log.csv")["val_loss"].tolist()


def test_3d_models_refuse_a_frozen_encoder(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="c3d is a 3-D CNN with no encoder to freeze"):
        run(**tiny_data.params(tmp_path, model="c3d", train_encoder=False))
    assert not (tmp_path / "c3d").exists()
    # The pretrained profile trains them end to end from scratch instead.
    c3d = params_for("pretrained", model="c3d")
    assert c3d.train_encoder is True and c3d.weights == "random" and c3d.width == 0.0625 and c3d.lr == 1e-3
    luvnet = params_for("pretrained", model="luvnet")
    assert luvnet.train_encoder is False and luvnet.lr == 1e-4 and luvnet.weight_decay == 5e-2
    # The small 2-D heads train faster than LUV-Net's (its lr left them at chance), on the same features.
    usvn = params_for("pretrained", model="usvn")
    assert usvn.train_encoder is False and usvn.lr == 1e-3 and usvn.weight_decay == 5e-2
    assert params_for("pretrained", model="usvn", lr=3e-4).lr == 3e-4, "the caller's override wins"
