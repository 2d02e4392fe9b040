"""The paper's claims as data: what LUV-Net (Lee et al., MIDL 2025) says, where, and what would test it.

One ``Claim`` per statement a reader would take away from the paper: its words in short, where
the paper makes it (table, section), the comparison it implies (which study configuration is
claimed better than which, on which test set, by which metric) and the paper's own numbers, read
from the published tables shipped with lusv (``lusv.report.paper.published_table``; nothing is
copied twice). Configurations are the study keys of ``lusv.models.roster`` (``luvnet``,
``usvn``, ``luvnet_random_init``...). ``lusv.report.verdicts`` judges a claim on a run's
predictions, and ``lusv.evaluation.claims`` gathers them for every run.

Kinds of claim, each judged by its own stated rule (``lusv.report.verdicts.RULES``):

* ``comparison``: each ``(better, worse)`` pair of configurations on the test set ``split``;
* ``best_value``: the claimed value of a LUV-Net knob (``kernel_size`` K, ``num_heads`` H) is
  the best of the values the run trained;
* ``chance``: notebook 05's attention / Grad-CAM scores against chance (``scores``: which table);
* ``cost``: Table 4's size and compute, counted (``lusv.models.cost``), never trained.

The last claim is lusv's own question, not the paper's (``source``): where an encoder is frozen,
do LUV-Net's heads beat a logistic regression on the same features (``lusv.evaluation.linear_probe``)?
"""

from __future__ import annotations

from dataclasses import dataclass

from lusv.models.roster import TABLE_1
from lusv.report.names import model_name
from lusv.report.paper import published_table

PAPER = "the paper"
KINDS = ("comparison", "best_value", "chance", "cost")
SPLIT_NAMES = {"test": "cross-validated development set (out-of-fold)",
               "temporal_test": "temporally separated test set (fold ensemble)"}
# Where a CPU profile trains a smaller network in place of the paper's, a comparison uses it and
# says so (lusv.models.roster: the quick and pretrained rosters train R(2+1)D-18, not -34).
STAND_INS = {"r2plus1d_34": "r2plus1d"}
TRANSFORMERS = ("mvit_b", "swin_b")
VIDEO_CNNS = ("c3d", "r2plus1d_34")


@dataclass(frozen=True)
class Claim:
    """One claim. ``comparisons``: (claimed better, claimed worse) study keys, judged on ``split``
    by macro AUC; ``knob``/``value``: a best-value claim; ``scores``: the chance table of notebook
    05 (``attention`` or ``regions``); ``table``: the paper's table the numbers come from."""

    id: str
    words: str
    where: str
    kind: str
    split: str | None = None
    comparisons: tuple[tuple[str, str], ...] = ()
    table: int | None = None
    knob: str | None = None
    value: int | None = None
    scores: str | None = None
    note: str = ""
    source: str = PAPER
    metric: str = "macro AUC"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id}: kind {self.kind!r} is not one of {KINDS}")

    def keys(self) -> set[str]:
        """Every study key the claim's comparisons need."""
        return {key for pair in self.comparisons for key in pair}


def _luvnet_against(keys) -> tuple[tuple[str, str], ...]:
    return tuple(("luvnet", key) for key in keys if key != "luvnet")


CLAIMS: tuple[Claim, ...] = (
    Claim("1", "LUV-Net (DenseNet-161, ImageNet weights) has the highest macro AUC of the Table 1 models, "
          "cross-validated", "Table 1", "comparison", "test", _luvnet_against(TABLE_1), table=1),
    Claim("2", "LUV-Net has the highest macro AUC of the Table 1 models on the temporally separated set",
          "Table 2", "comparison", "temporal_test", _luvnet_against(TABLE_1), table=2),
    Claim("3", "The temporal module improves LUV-Net", "Table 3", "comparison", "test",
          (("luvnet", "luvnet_no_temporal"),), table=3),
    Claim("4", "ImageNet pretraining improves LUV-Net", "Table 1 (no-pretraining row)", "comparison", "test",
          (("luvnet", "luvnet_random_init"),), table=1),
    Claim("5", "DenseNet-161 is a better LUV-Net encoder than ResNet-50", "Table 1", "comparison", "test",
          (("luvnet", "luvnet_resnet50"),), table=1),
    Claim("6", "Pattern-specific attention beats a single attention (LUV-Net vs USVN)", "Table 1, Section 3",
          "comparison", "test", (("luvnet", "usvn"),), table=1),
    Claim("7", "The video transformers trained from scratch lag the CNN-based video models (C3D, R(2+1)D)",
          "Table 1, Section 4", "comparison", "test",
          tuple((cnn, transformer) for cnn in VIDEO_CNNS for transformer in TRANSFORMERS), table=1,
          note="the paper's CNN-LSTM (0.607) is below both transformers, so the claim is read for the 3-D CNNs"),
    Claim("8", "K = 13 is the best temporal kernel size", "Table 8 (one fold)", "best_value", knob="kernel_size",
          value=13, table=8, note="Table 8 peaks at K = 13 on macro AUC but at K = 23 on micro AUC"),
    Claim("9", "H = 8 is the best number of attention heads", "Table 9 (one fold)", "best_value", knob="num_heads",
          value=8, table=9, note="Table 9 ties H = 2 and H = 8 on macro AUC"),
    Claim("10", "LUV-Net costs about what USVN costs (compute per clip)", "Table 4", "cost", table=4,
          comparisons=(("luvnet", "usvn"),), metric="GMAC per 30 x 256 x 256 clip"),
    Claim("11", "Attention peaks on the frames that show the pattern", "Appendix B (Figure 3)", "chance",
          scores="attention", metric="attention AUC against the per-frame truth"),
    Claim("12", "The image regions the model looks at hold the pattern", "Appendix B (Figure 3)", "chance",
          scores="regions", metric="Grad-CAM share inside the drawn region vs a random map"),
    Claim("13", "LUV-Net's heads beat a linear probe on the same frozen features", "lusv's reference row",
          "comparison", "test", (("luvnet", "linear_probe"),), source="lusv",
          note="not a claim of the paper: the pretrained profile's reference (lusv.evaluation.linear_probe)"),
)


def claim(claim_id: str) -> Claim:
    """The claim with id ``claim_id``; KeyError naming the known ids."""
    for entry in CLAIMS:
        if entry.id == claim_id:
            return entry
    raise KeyError(f"no claim {claim_id!r}; known: {', '.join(c.id for c in CLAIMS)}")


def _auc_cell(table, key: str) -> str | None:
    row = table[table["key"] == key]
    if row.empty:
        return None
    return f"{model_name(key)} {row['macro_mean'].iloc[0]:.3f} ± {row['macro_sd'].iloc[0]:.3f}"


def _sweep_numbers(entry: Claim) -> str:
    table = published_table(entry.table)
    knob, symbol = table.columns[0], {"kernel_size": "K", "num_heads": "H"}[entry.knob]
    claimed = table[table[knob] == entry.value].iloc[0]
    best_macro, best_micro = table.loc[table["macro"].idxmax()], table.loc[table["micro"].idxmax()]
    return (f"macro {claimed['macro']:.3f} at {symbol} = {entry.value} (highest {best_macro['macro']:.3f}); "
            f"micro highest at {symbol} = {int(best_micro[knob])} ({best_micro['micro']:.3f})")


def _cost_numbers() -> str:
    table = published_table(4).set_index("key")
    return "; ".join(f"{model_name(key)} {table.loc[key, 'gmac']:.2f} GMAC, {table.loc[key, 'params_m']:.2f} M parameters"
                     for key in ("luvnet", "usvn"))


def paper_numbers(entry: Claim) -> str:
    """The paper's own numbers behind a claim, from its published tables (macro AUC mean ± sd
    over its 5 folds for Tables 1-3)."""
    if entry.source != PAPER:
        return "not in the paper"
    if entry.kind == "best_value":
        return _sweep_numbers(entry)
    if entry.kind == "cost":
        return _cost_numbers()
    if entry.kind == "chance":
        return "shown on example clips, not scored"
    table = published_table(entry.table)
    betters = {better for better, _ in entry.comparisons}
    if len(betters) == 1 and len(entry.comparisons) > 2:  # one model against many: it and the strongest other
        (better,) = betters
        others = table[table["key"].isin([worse for _, worse in entry.comparisons])]
        strongest = others.loc[others["macro_mean"].idxmax(), "key"]
        return f"{_auc_cell(table, better)}; highest other {_auc_cell(table, strongest)}"
    keys = list(dict.fromkeys(key for pair in entry.comparisons for key in pair))
    return "; ".join(cell for cell in (_auc_cell(table, key) for key in keys) if cell)
