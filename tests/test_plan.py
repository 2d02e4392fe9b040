"""The study's plan (``lusv plan``, ``run_all.sh --plan``) and its subsets (``--models``, ``--folds``):
the run counts against the roster and sweep grids computed here from the published tables, the
costs against hand counts and a real run's files, and the errors a user sees."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from lusv.errors import ConfigError
from lusv.models import roster
from lusv.report.paper import published_table

REPO = Path(__file__).resolve().parents[1]


def independent_run_count(profile: str, comparators: list[str], kernel_sizes: list[int], head_counts: list[int],
                          own_k: int, own_h: int, folds: int = 5) -> int:
    """LUV-Net (notebook 02) + the comparators (03) + every sweep point but the profile's own K and H,
    which are LUV-Net itself, + the no-temporal ablation (04), each on every fold."""
    sweeps = [k for k in kernel_sizes if k != own_k] + [h for h in head_counts if h != own_h]
    return folds * (1 + len(comparators) + len(sweeps) + 1)


def test_run_counts_of_every_profile_match_the_roster_and_the_sweep_grids():
    table1 = published_table(1)["key"].tolist()
    paper = independent_run_count("paper", [k for k in table1 if k != "luvnet"], published_table(8)["kernel_size"].tolist(),
                                  published_table(9)["num_heads"].tolist(), own_k=13, own_h=8)
    assert paper == 155  # 10 Table 1 rows, 14 + 6 sweep points, the ablation: 31 configurations x 5 folds
    quick = independent_run_count("quick", ["usvn", "c3d", "r2plus1d", "cnn_lstm", "frame_based"], [5, 13], [4, 8],
                                  own_k=5, own_h=8)
    # pretrained: the 3-D CNNs and the sweep points K = 5 and H = 4 are opt-in (--models)
    pretrained = independent_run_count("pretrained", ["usvn", "cnn_lstm", "frame_based"], [13], [8], own_k=13, own_h=8)
    for profile, expected in (("paper", paper), ("quick", quick), ("pretrained", pretrained)):
        configurations = roster.study_configurations(profile)
        assert 5 * sum(len(c) for c in configurations.values()) == expected, profile
    assert "luvnet" not in roster.study_configurations("paper")["04_ablation_temporal"], "reused from notebook 02"


def test_a_subset_names_keys_of_any_notebook_and_adds_opt_in_comparators():
    plan = roster.study_configurations("pretrained", "luvnet,c3d,luvnet_k5")
    assert {nb: list(c) for nb, c in plan.items()} == {
        "02_train_folds": ["luvnet"], "03_baselines": ["c3d"], "04_ablation_temporal": ["luvnet_k5"]}
    assert roster.opt_in("pretrained") == ["c3d", "r2plus1d", "luvnet_k5", "luvnet_h4"]
    assert not {"c3d", "r2plus1d"} & set(roster.baselines("pretrained")), "the 3-D CNNs are opt-in there"
    assert roster.study_configurations("quick", ["luvnet_k7"])["04_ablation_temporal"] == {
        "luvnet_k7": {"model": "luvnet", "kernel_size": 7}}, "a sweep point off the grid, by its key"
    assert roster.with_linear_probe("pretrained", models=["luvnet"]) is False
    assert roster.with_linear_probe("pretrained", models=["luvnet", "linear_probe"]) is True


def test_a_bad_subset_is_refused_in_one_line_naming_it():
    with pytest.raises(ConfigError, match=r"unknown model key\(s\) 'lvunet' for profile 'quick'; known: luvnet, "):
        roster.check_models("quick", "luvnet,lvunet")
    with pytest.raises(ConfigError, match=r"folds 0,5: give fold numbers in 0..4"):
        roster.check_folds("0,5", 5)
    with pytest.raises(ConfigError, match="folds x"):
        roster.check_folds("x", 5)
    assert roster.check_folds("1,0,1", 5) == [0, 1] and roster.check_folds(2, 5) == [2]


def test_saved_activations_are_counted_as_by_hand():
    from lusv.train.step_cost import saved_activation_bytes

    with torch.device("meta"):
        stack = nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 10))
        x = torch.empty(8, 100)
        # Linear 1 keeps its input (8 x 100), ReLU its output (8 x 200), which Linear 2 keeps too
        # (the same storage, counted once); the weights are parameters, not activations.
        assert saved_activation_bytes(lambda: stack(x), stack.parameters()) == 4 * (8 * 100 + 8 * 200)


def test_model_figures_equal_the_papers_table_4_and_the_whole_model_count():
    from lusv.config import params_for
    from lusv.models.cost import model_cost
    from lusv.inference import build_run_model
    from lusv.train.step_cost import model_figures

    for model, options in (("luvnet", {"encoder": "tiny", "weights": "random"}), ("c3d", {"width": 0.0625})):
        p = params_for("quick", model=model, **options)
        figures = model_figures(p)
        whole = model_cost(lambda: build_run_model(p), p.num_frames, p.image_size)  # the model counted in one piece
        assert figures.parameters == whole.parameters
        assert figures.gmac_per_clip == pytest.approx(whole.gmac, rel=1e-9)
    frozen = model_figures(params_for("pretrained"))
    assert frozen.trained_parameters < frozen.parameters and frozen.encoder_gmac_per_clip > 1.0
    assert frozen.step_gmac_per_clip < frozen.gmac_per_clip / 10, "the frozen encoder is not in a training step"


def test_checkpoint_disk_of_the_plan_matches_a_real_runs_files(tiny_data, tmp_path):
    from lusv.config import params_for
    from lusv.train import run
    from lusv.train.step_cost import checkpoint_bytes, model_figures

    run_dir = run(**tiny_data.params(tmp_path, epochs=1, max_batches_per_epoch=1))
    written = (run_dir / "checkpoint.pt").stat().st_size + (run_dir / "best.pt").stat().st_size
    planned = checkpoint_bytes(model_figures(params_for("quick", **tiny_data.params(tmp_path))))
    assert planned == pytest.approx(written, rel=0.15), "fp32 tensors dominate; the rest is pickle and RNG state"


def test_a_plan_on_a_prepared_study_counts_its_clips_and_measures_its_steps(tiny_data):
    from lusv.data.prepared import Prepared
    from lusv.train import study_plan

    prepared = Prepared.load(tiny_data.root / "study")
    plan = study_plan("quick", run_dir=prepared.run_dir, models="luvnet,usvn", folds="0", device="cpu")
    assert plan.runs == 2 and [m.key for m in plan.models] == ["luvnet", "usvn"]
    folds, temporal = tiny_data.folds(), tiny_data.temporal()
    per_fold = folds["fold"].value_counts()
    k = prepared.num_folds
    assert plan.counts.train == pytest.approx(len(folds) - 2 * len(folds) / k)
    assert plan.counts.val == pytest.approx(sum(per_fold[(f + 1) % k] for f in range(k)) / k)
    assert plan.counts.predicted == pytest.approx(2 * len(folds) / k + (temporal["split"] == "temporal_test").sum())
    luvnet = plan.models[0]
    assert luvnet.step.measured and luvnet.step.seconds > 0 and luvnet.step.peak_mib > 0
    p, step = luvnet.params, luvnet.step
    epoch = math.ceil(math.ceil(plan.counts.train / p.batch_size) / p.grad_accum) * step.seconds + \
        math.ceil(plan.counts.val / p.batch_size) * step.eval_seconds
    assert luvnet.run_seconds == pytest.approx(p.epochs * epoch + math.ceil(plan.counts.predicted / p.batch_size)
                                               * step.eval_seconds)
    text = plan.text()
    assert "2 training runs (02_train_folds 1, 03_baselines 1, 04_ablation_temporal 0)" in text
    assert "measured: 2 steps after a warm-up on cpu" in text


@pytest.mark.slow
def test_run_all_plan_prints_the_paper_plan_on_a_cpu_and_trains_nothing(tmp_path):
    run = f"plan-test-{os.getpid()}"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(["bash", "run_all.sh", "paper", "--plan", "--run", run], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "155 training runs (02_train_folds 5, 03_baselines 45, 04_ablation_temporal 105)" in out
    assert "Per model, on one A100-class GPU (estimated):" in out
    luvnet = next(line for line in out.splitlines() if line.split()[:1] == ["luvnet"])
    assert "136.22" in luvnet and "304.67" in luvnet, "the paper's Table 4: 136 M parameters, 304.68 GMAC"
    assert "Total: 155 runs, at most" in out and "device-hours" in out and "GB (checkpoint.pt" in out
    assert not (REPO / "results" / run).exists(), "a plan creates no study folder"


def test_lusv_plan_refuses_a_subset_without_luvnet_in_a_study_that_never_trained_it(tmp_path, capsys):
    from lusv.cli import main

    assert main(["plan", "--profile", "quick", "--run-dir", str(tmp_path / "none"), "--models", "usvn", "--check"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"lusv plan: error: --models leaves out luvnet, which every table compares against, and {tmp_path / 'none'} "
        "has no finished run of it: add luvnet")
    assert main(["plan", "--profile", "quick", "--models", "luvnet,usvn", "--folds", "0", "--check"]) == 0
    assert "plan: 2 training runs (2 configurations x 1 folds)" in capsys.readouterr().out


def test_a_model_trained_on_other_folds_is_left_out_of_the_comparisons_with_a_warning(tmp_path, caplog):
    from lusv.evaluation.out_of_fold import comparable_keys
    from lusv.infra.io import write_csv

    def predictions(folds: dict[str, int]) -> pd.DataFrame:
        return pd.DataFrame({"clip_id": list(folds), "patient_id": list(folds), "fold": list(folds.values()),
                             "model_fold": list(folds.values()), "p_a_lines": 0.5, "a_lines": 1.0})

    every_fold = {"a": 0, "b": 0, "c": 1, "d": 1}
    write_csv(tmp_path / "oof" / "luvnet.test.csv", predictions(every_fold))
    write_csv(tmp_path / "oof" / "linear_probe.test.csv", predictions(every_fold))
    write_csv(tmp_path / "oof" / "usvn.test.csv", predictions({"a": 0, "b": 0}))  # a --folds 0 run
    with caplog.at_level("WARNING"):
        assert comparable_keys(tmp_path) == ["linear_probe", "luvnet"]
    assert ("usvn is left out of the comparisons: its out-of-fold predictions come from fold(s) 0, luvnet's from "
            "fold(s) 0, 1") in caplog.text
    assert comparable_keys(tmp_path, ["usvn"]) == ["usvn"], "without the reference there is nothing to compare against"
