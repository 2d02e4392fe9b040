"""The clips of one run's fold: read the labels and split files a run names, check them, hand out roles.

``lusv.data.splits`` makes and saves splits; this module reads them back for one training run
(``load_fold_data(params, run_dir)``) and refuses anything that could leak before a model sees a
clip: a temporal-test clip inside the folds, a folds file naming clips the labels do not know or
giving a clip another patient than the labels do, and a patient in two roles. Roles of fold f:
test = fold f, validation = fold (f + 1) % K, training = the other folds; the test sets set apart
before the folds, the temporal test set and the held-out test set (if any), are predicted by
every fold's model.

A sibling of ``lusv.data.splits`` rather than part of it: that module is about making splits (and is
long enough), this one is about what a run reads from the files, under the run's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from lusv.config import RunParams
from lusv.data.labels import read_labels
from lusv.data.splits import assert_no_patient_overlap, fold_roles, load_or_make_folds
from lusv.errors import ConfigError, LabelsError, LeakageError, name_a_few
from lusv.infra.devices import Distributed
from lusv.infra.io import read_table


@dataclass
class FoldData:
    """The clips of each role for one fold, as labels-table rows (clip_id, patient_id, fold, patterns)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    temporal_test: Optional[pd.DataFrame] = None
    held_out: Optional[pd.DataFrame] = None
    skipped: dict[str, str] = field(default_factory=dict)

    def roles(self) -> dict[str, pd.DataFrame]:
        out = {"train": self.train, "val": self.val, "test": self.test}
        for role in SET_APART:
            if getattr(self, role) is not None:
                out[role] = getattr(self, role)
        return out


# The test sets set apart before the folds: role (= the split value in its file) -> RunParams field.
SET_APART = {"temporal_test": "temporal_split", "held_out": "held_out"}


def read_split_table(path: str, required: Iterable[str], what: str) -> pd.DataFrame:
    """A split CSV with ids read as strings; ConfigError if absent, LabelsError if a column is missing."""
    if not Path(path).is_file():
        raise ConfigError(f"{what} file {path} does not exist: check the path or make it with lusv.data.splits")
    table = read_table(path)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise LabelsError(f"{what} file {path} lacks column(s) {missing} (needed: {list(required)})")
    return table


def load_fold_data(p: RunParams, run_dir: Path, dist: Distributed = Distributed()) -> FoldData:
    """Read labels, folds and temporal split; check them for leakage; return each role's rows."""
    if not p.labels:
        raise ConfigError("no labels CSV given: set labels=<path to the labels CSV> (see lusv.data.labels)")
    labels = read_labels(p.labels)
    labels = labels.assign(clip_id=labels["clip_id"].astype(str), patient_id=labels["patient_id"].astype(str))

    set_apart = _set_apart_ids(p)
    apart_ids = set().union(*set_apart.values())
    if len(apart_ids) < sum(map(len, set_apart.values())):
        raise LeakageError(f"clip(s) {name_a_few(set.intersection(*set_apart.values()), sort=True)} are in both the "
                           f"temporal test set ({p.temporal_split}) and the held-out set ({p.held_out})")

    folds = _read_or_make_folds(p, labels, apart_ids, run_dir, dist)
    _check_folds_against_labels(p, folds, labels, set_apart)

    roles = fold_roles(folds, p.fold, p.num_folds)
    indexed = labels.set_index("clip_id", drop=False)
    fold_of = folds.set_index("clip_id")["fold"].astype(int)
    tables = {role: indexed.loc[ids].assign(fold=fold_of.loc[ids].to_numpy()).reset_index(drop=True) for role, ids in roles.items()}
    # fold_roles checks this too; checking here keeps training safe whatever builds the roles.
    assert_no_patient_overlap(tables["train"], tables["val"], names=("train", "validation"))
    assert_no_patient_overlap(tables["train"], tables["test"], names=("train", "test"))
    assert_no_patient_overlap(tables["val"], tables["test"], names=("validation", "test"))

    apart_tables = {}
    for role, ids in set_apart.items():
        missing = ids - set(labels["clip_id"])
        if missing:
            raise LabelsError(
                f"{role} split {getattr(p, SET_APART[role])} names clip(s) not in the labels CSV: "
                f"{name_a_few(missing, sort=True)}"
            )
        apart_tables[role] = indexed.loc[sorted(ids)].assign(fold=p.fold).reset_index(drop=True)
        seen = pd.concat([tables["train"], tables["val"]])
        assert_no_patient_overlap(seen, apart_tables[role], names=("development (train/validation)", role))
    return FoldData(tables["train"], tables["val"], tables["test"], **apart_tables)


def _set_apart_ids(p: RunParams) -> dict[str, set[str]]:
    """The clip ids of each test set set apart before the folds whose file ``p`` names, by role."""
    out = {}
    for role, field_name in SET_APART.items():
        path = getattr(p, field_name)
        if path:
            table = read_split_table(path, ("clip_id", "split"), field_name.replace("_", " "))
            out[role] = set(table.loc[table["split"] == role, "clip_id"])
    return out


def _read_or_make_folds(
    p: RunParams, labels: pd.DataFrame, apart_ids: set[str], run_dir: Path, dist: Distributed
) -> pd.DataFrame:
    """The folds file ``p.splits``, or (unset) folds of the development clips saved in the run dir."""
    if p.splits:
        return read_split_table(p.splits, ("clip_id", "patient_id", "fold"), "splits")
    development = labels[~labels["clip_id"].isin(apart_ids)]
    if dist.is_main:  # rank 0 makes and saves the folds; the other ranks then reuse the file
        load_or_make_folds(development, run_dir / "splits.csv", num_folds=p.num_folds, seed=p.split_seed)
    dist.barrier()
    folds = load_or_make_folds(development, run_dir / "splits.csv", num_folds=p.num_folds, seed=p.split_seed)
    return folds.assign(clip_id=folds["clip_id"].astype(str), patient_id=folds["patient_id"].astype(str))


def _check_folds_against_labels(p: RunParams, folds: pd.DataFrame, labels: pd.DataFrame,
                                set_apart: dict[str, set[str]]) -> None:
    """Refuse folds that hold clips of a set-apart test set, name unknown clips, or move a clip to another patient."""
    for role, ids in set_apart.items():
        in_both = ids & set(folds["clip_id"])
        if in_both:
            what = "temporal test set" if role == "temporal_test" else "held-out test set"
            raise LeakageError(
                f"clip(s) {name_a_few(in_both, sort=True)} of the {what} ({getattr(p, SET_APART[role])}) are also in "
                f"the folds ({p.splits}): make the folds from the development clips only "
                "(lusv.study.prepare does this)"
            )
    unknown = set(folds["clip_id"]) - set(labels["clip_id"])
    if unknown:
        raise LabelsError(
            f"splits file {p.splits} names clip(s) not in the labels CSV {p.labels}: {name_a_few(unknown, sort=True)}"
        )
    # The labels table is the authority on patients: a folds file that disagrees could hide leakage.
    patient_of = labels.set_index("clip_id")["patient_id"]
    moved = folds[folds["patient_id"] != folds["clip_id"].map(patient_of)]
    if len(moved):
        raise LeakageError(
            f"splits file {p.splits} gives clip(s) {name_a_few(moved['clip_id'], sort=True)} another patient than the labels "
            f"CSV {p.labels}: remake the splits from the current labels"
        )
