"""Generated sentences at their boundaries (lusv.report.conclusions): p-values just below, at and above
0.05, CIs that touch or straddle 0.5, and ties in a ranking as the tables show them.

Every expected sentence is typed in here from the rule the sentence states (p < 0.05; a 95% CI
that excludes 0.5; AUCs as shown to three decimals), never produced by the function under test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lusv.report.conclusions import ablation_conclusion, attention_conclusion, comparison_conclusion, model_conclusion

NAN = float("nan")


def _summaries(macro: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    """An auc_summaries-shaped table: each model's macro (auc, ci_low, ci_high), patterns at 0.7."""
    rows = []
    for model, (auc, low, high) in macro.items():
        rows += [{"model": model, "pattern": p, "auc": 0.7, "ci_low": 0.6, "ci_high": 0.8}
                 for p in ("a_lines", "b_lines", "consolidation", "pleural_effusion", "micro")]
        rows.append({"model": model, "pattern": "macro", "auc": auc, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def _delong(**p_values: list[float]) -> pd.DataFrame:
    """A delong_table: USVN and C3D against LUV-Net, the given p-values per pattern column."""
    table = pd.DataFrame({"Model": ["usvn", "c3d"]})
    for column in ("A-lines", "B-lines", "Consolidation", "Pleural effusion"):
        table[column] = p_values.get(column.replace(" ", "_").replace("-", "_"), [NAN, NAN])
    return table


SUMMARIES = _summaries({"luvnet": (0.81, 0.75, 0.86), "usvn": (0.74, 0.66, 0.81), "c3d": (0.70, 0.61, 0.78)})


def test_only_p_values_below_005_are_called_significant_and_none_is_printed_across_the_line():
    delong = _delong(A_lines=[0.0499, 0.05], B_lines=[0.0501, 0.07], Consolidation=[0.0009, 0.012],
                     Pleural_effusion=[NAN, 0.04999])
    text = comparison_conclusion(SUMMARIES, delong, "luvnet", paper_table=None)
    assert ("Paired DeLong p < 0.05 against LUV-Net (4 of 7 pairs, uncorrected): USVN for A-lines (p = 0.0499), "
            "Consolidation (p < 0.001); C3D for Consolidation (p = 0.012), Pleural effusion (p = 0.04999).") in text
    for not_significant in ("0.050", "0.07", "B-lines"):
        assert not_significant not in text
    nothing = comparison_conclusion(SUMMARIES, _delong(A_lines=[0.05, 0.07], B_lines=[0.0501, 0.5]), "luvnet", None)
    assert "No paired DeLong test against LUV-Net reaches p < 0.05 (4 model-pattern pairs)." in nothing
    assert "No paired DeLong" in ablation_conclusion(SUMMARIES, _delong(A_lines=[0.07, 0.051]), "luvnet")


@pytest.mark.parametrize("low, high, verdict", [
    (0.51, 0.70, "above chance (its 95% CI excludes 0.5)"),
    (0.50, 0.70, "not distinguishable from chance (its 95% CI includes 0.5)"),  # touching 0.5 includes it
    (0.45, 0.62, "not distinguishable from chance (its 95% CI includes 0.5)"),  # straddling
    (0.30, 0.50, "not distinguishable from chance (its 95% CI includes 0.5)"),
    (0.30, 0.49, "below chance (its 95% CI lies under 0.5)"),
    (NAN, NAN, "without a CI to judge it against chance"),
])
def test_the_chance_verdict_follows_the_ci_at_its_boundaries(low, high, verdict):
    auc = 0.6 if np.isnan(low) else (low + high) / 2
    text = model_conclusion(_summaries({"usvn": (auc, low, high)}), "usvn", paper_table=None)
    assert f"the macro AUC is {verdict}." in text


def test_a_rank_counts_only_models_higher_as_the_table_shows_them_and_names_ties():
    distinct = _summaries({"usvn": (0.8126, 0.7, 0.9), "luvnet": (0.8124, 0.7, 0.9), "c3d": (0.6, 0.5, 0.7)})
    assert "LUV-Net ranks 2 of 3." in comparison_conclusion(distinct, None, "luvnet", None)  # 0.813 > 0.812
    # 0.8121 and 0.8124 are both shown as 0.812: the same rank, the tie said, whichever is listed first
    tied = _summaries({"usvn": (0.8124, 0.7, 0.9), "luvnet": (0.8121, 0.7, 0.9), "c3d": (0.6, 0.5, 0.7)})
    text = comparison_conclusion(tied, None, "luvnet", None)
    assert "LUV-Net ranks 1 of 3, tied to three decimals with USVN." in text
    below = _summaries({"usvn": (0.9, 0.8, 0.95), "c3d": (0.8124, 0.7, 0.9), "luvnet": (0.8121, 0.7, 0.9)})
    assert "LUV-Net ranks 2 of 3, tied to three decimals with C3D." in comparison_conclusion(below, None, "luvnet", None)
    last = _summaries({"usvn": (0.9, 0.8, 0.95), "c3d": (0.8, 0.7, 0.9), "luvnet": (0.7, 0.6, 0.8)})
    assert "LUV-Net ranks 3 of 3." in comparison_conclusion(last, None, "luvnet", None)


def test_sweep_values_tie_exactly_when_their_cells_show_the_same_macro_auc():
    def sweep(values):
        return {"num_heads": pd.DataFrame({"num_heads": [4, 8], "macro_pooled": values, "macro_ci_low": [0.7, 0.7],
                                           "macro_ci_high": [0.9, 0.9], "macro_mean": [0.8, 0.8],
                                           "macro_sd": [0.01, 0.02], "n_folds": [5, 5]})}

    shown_apart = ablation_conclusion(SUMMARIES, None, sweeps=sweep([0.8126, 0.8124]))  # 0.813 vs 0.812
    assert "highest here H = 4 (mean ± sd over the fold models 0.800 ± 0.010)" in shown_apart
    assert "tied" not in shown_apart
    shown_alike = ablation_conclusion(SUMMARIES, None, sweeps=sweep([0.8116, 0.8124]))  # both 0.812
    assert "highest here, tied to three decimals: H = 4, H = 8." in shown_alike


def test_attention_maps_are_called_on_the_region_only_below_005():
    def summary(p_value):
        return pd.DataFrame([{"pattern": "A-lines", "n_frames": 9, "share_inside": 0.30, "random_map_share": 0.05,
                              "lift": 0.25, "p_value": p_value, "empty_maps": 0}])

    for p_value, shown in ((0.07, "p = 0.070"), (0.05, "p = 0.050"), (0.0501, "p = 0.050")):
        text = attention_conclusion(None, summary(p_value))
        assert f"A-lines 0.300 vs 0.050 ({shown})" in text
        assert "For no pattern do the maps fall on the drawn region more than a random map would" in text
    text = attention_conclusion(None, summary(0.0499))
    assert "A-lines 0.300 vs 0.050 (p = 0.0499)" in text
    assert "more than a random map would for A-lines." in text
