"""Plant known bugs one at a time in a temporary copy of lusv and check that the tests catch each.

    python scripts/mutation_check.py            # every mutation (CI runs this after the suite)
    python scripts/mutation_check.py --only youden-ties-lowest
    python scripts/mutation_check.py --list     # names, and whether each snippet is found once

A mutation is (name, snippet, replacement, test module, pytest -k selection). The snippet is looked
up in every .py file under lusv/, not in a fixed file, so moving code between modules does not
break the list; a snippet found in no place or in several is reported and counts as a failure
(edit the list together with the code).

Each selection is first run unmutated under coverage.py (the baseline: it must pass, or a failure
with the bug planted would prove nothing). A mutation whose snippet is never executed by its
selection is DEAD, a failure: its bug could not be caught however good the tests, and a dead
snippet (code the CPU path no longer reaches, say) must not pass quietly. "Executed" means a line
of the snippet, or the first line of the statement it starts in, ran; code that tests run only in
a subprocess is not seen, so select in-process tests. Then the bug is planted: "caught" when pytest
fails, "MISSED" when it passes. The first FAILED line is shown so that you can judge the reason
(a wrong value, not a crash). Exit status 1 when any mutation is missed or dead, any snippet is
not found exactly once or any baseline fails.

Add a mutation whenever a bug slipped past the tests once: it keeps the new test honest. The list
is grouped by the five kinds of weak test of docs/contributing.md.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
COPIED = ("lusv", "tests", "benchmarks", "pyproject.toml")


class Mutation(NamedTuple):
    name: str
    snippet: str
    replacement: str
    test_module: str  # tests/<test_module>.py
    selection: str  # its tests that must catch the bug (pytest -k)

    @property
    def tests(self) -> tuple[str, ...]:
        """The pytest arguments, relative to the repository root."""
        return (f"tests/{self.test_module}.py", "-k", self.selection)


# Selections shared by several mutations: one baseline each. Cheap tests, or tests behind one
# expensive fixture (the tiny study, the held-out study), are selected together.
METRICS = "delong_ci or youden or slow_bootstrap"
TEMPORAL = "temporal or even_kernel"
AUGMENTATIONS = "flip_alone or paper_augmentations_only"
HELD_OUT = "sets_the_held_out_patients_apart or every_fold_model_predicts or linear_probe"
WINDOWS = "starts or labels or touching"
VIDEO_LEVEL = "any_positive or patient_resampled or slow_patient_bootstrap or saved_beside"
PROBE_AND_EXTERNAL = "linear_probe_writes or later_patterns"
CONCLUSIONS = "significant or chance or rank or sweep or attention"

MUTATIONS: tuple[Mutation, ...] = (
    # ------------------------------------------------------------ statistics against textbook references
    Mutation("delong-logit-without-factor",
             "half = z * se / (auc * (1 - auc))", "half = z * se",
             "test_metrics", METRICS),
    Mutation("delong-quantile-one-sided",
             "z = stats.norm.ppf(1 - alpha / 2)", "z = stats.norm.ppf(1 - alpha)",
             "test_metrics", METRICS),
    Mutation("youden-ties-lowest",
             "best = int(np.flatnonzero(j >= j.max() - 1e-9)[0])", "best = int(np.flatnonzero(j >= j.max() - 1e-9)[-1])",
             "test_metrics", METRICS),
    Mutation("temporal-relu-before-batchnorm",
             "y = torch.relu(self.norm(conv))  # (B, F, T)",
             "y = self.norm(torch.relu(conv))  # (B, F, T)",
             "test_models", TEMPORAL),
    Mutation("temporal-branch-times-zero",
             "fused = spatial + self.temporal(h, mask)", "fused = spatial + 0 * self.temporal(h, mask)",
             "test_models", TEMPORAL),
    # The CPU path (one matmul): the Conv1d's own padding argument is only reached on a GPU.
    Mutation("temporal-even-k-extra-frame-before",
             "left = (kernel - 1) // 2", "left = kernel // 2",
             "test_models", TEMPORAL),
    # ------------------------------------------------------------ leakage checks and clip policies
    Mutation("one-fold-per-patient-check-off",
             "leaking = folds_per_patient.index[folds_per_patient > 1].tolist()", "leaking = []",
             "test_splits", "saved_folds"),
    Mutation("folds-vs-labels-patient-check-off",
             'moved = folds[folds["patient_id"] != folds["clip_id"].map(patient_of)]', "moved = folds.iloc[:0]",
             "test_train", "another_patient"),
    Mutation("temporal-test-clip-in-folds-check-off",
             'in_both = ids & set(folds["clip_id"])', "in_both = set()",
             "test_train", "temporal_test_clip_in_folds"),
    Mutation("flip-drawn-per-frame",
             "x = self._flip_rotate(x, flip=u[:, 0] < self.flip_p, turn=u[:, 1] * 2 - 1)",
             "x = self._flip_rotate(x.reshape(b * t, 1, 1, s, s), "
             "flip=torch.rand(b * t, generator=generator, dtype=torch.float64).to(x) < self.flip_p, "
             "turn=(u[:, 1] * 2 - 1).repeat_interleave(t)).reshape(b, t, 1, s, s)",
             "test_datasets", AUGMENTATIONS),
    Mutation("paper-augmentations-with-intensity-jitter",
             "return ClipAugment(brightness=0.0, contrast=0.0, gamma=0.0, blur_p=0.0, noise_p=0.0)",
             "return ClipAugment()",
             "test_datasets", AUGMENTATIONS),
    Mutation("held-out-clips-left-in-the-folds",
             'kept = held_out.loc[held_out["split"] == "development", "clip_id"]', 'kept = held_out["clip_id"]',
             "test_held_out", HELD_OUT),
    Mutation("window-tail-dropped",
             "    if starts[-1] + window < video_frames:  # the tail: one more window aligned to the end",
             "    if False:",
             "test_windows", WINDOWS),
    Mutation("window-label-from-its-first-frame-only",
             "present = {pattern for first, final, pattern in spans if first <= last and final >= start}",
             "present = {pattern for first, final, pattern in spans if first <= start <= final}",
             "test_windows", WINDOWS),
    Mutation("video-label-needs-every-window-positive",
             "out[pattern] = grouped[pattern].max()", "out[pattern] = grouped[pattern].min()",
             "test_video_level", VIDEO_LEVEL),
    Mutation("video-level-ci-resamples-windows",
             'summary = summarize_predictions(table, ci="bootstrap"',
             'summary = summarize_predictions(table.assign(patient_id=table["clip_id"]), ci="bootstrap"',
             "test_video_level", VIDEO_LEVEL),
    # ------------------------------------------------------------ kind 1: computations checked only by shape
    Mutation("linear-probe-fit-on-the-test-fold",
             '    predictors = fit_patterns(x("train"), roles["train"])',
             '    predictors = fit_patterns(x("test"), roles["test"])',
             "test_external", PROBE_AND_EXTERNAL),
    # The fold ensemble's mean (the study's set-apart sets; on main also the probe's, via ensemble_mean).
    Mutation("fold-ensemble-is-its-first-model",
             '    means = stacked.groupby("clip_id", sort=False)[probability_columns].mean().reset_index(drop=True)',
             '    means = stacked.groupby("clip_id", sort=False)[probability_columns].first().reset_index(drop=True)',
             "test_held_out", HELD_OUT),
    Mutation("paper-table3-is-table1",
             '"paper_table3": compare_with_paper(summary, 3),', '"paper_table3": compare_with_paper(summary, 1),',
             "test_paper", "paper_results"),
    Mutation("paper-table2-from-the-test-folds",
             'tables["paper_table2"] = compare_with_paper(fold_summary_table(temporal_by_fold_model), 2)',
             'tables["paper_table2"] = compare_with_paper(summary, 2)',
             "test_paper", "paper_results"),
    Mutation("paper-per-fold-ci-at-90-percent",
             "auc, low, high = delong_ci(labels[:, j], scores[:, j], alpha=alpha)",
             "auc, low, high = delong_ci(labels[:, j], scores[:, j], alpha=2 * alpha)",
             "test_paper", "paper_results"),
    # ------------------------------------------------------------ kind 2: test data that cannot tell right from wrong
    Mutation("bootstrap-ci-at-90-percent",
             "low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])",
             "low, high = np.percentile(finite, [100 * alpha, 100 * (1 - alpha)])",
             "test_metrics", METRICS),
    Mutation("bootstrap-never-draws-the-last-patient",
             "drawn = rng.integers(0, n_patients, size=(n_boot, n_patients))",
             "drawn = rng.integers(0, max(n_patients - 1, 1), size=(n_boot, n_patients))",
             "test_metrics", METRICS),
    Mutation("paper-per-fold-micro-is-macro",
             'rows.append((int(fold), "micro", micro_auc(labels, scores), np.nan, np.nan))',
             'rows.append((int(fold), "micro", macro_auc(labels, scores), np.nan, np.nan))',
             "test_paper", "paper_results"),
    Mutation("paper-delong-rows-not-matched-by-clip",
             'other = table.set_index("clip_id").loc[ref.index]', 'other = table.set_index("clip_id")',
             "test_paper", "paper_results"),
    Mutation("linear-probe-mean-over-padding",
             "return (stacked.astype(np.float64) * mask[..., None]).sum(axis=1) / np.maximum(lengths, 1)[:, None]",
             "return (stacked.astype(np.float64) * mask[..., None]).sum(axis=1) / stacked.shape[1]",
             "test_external", "mean_pooling"),
    Mutation("linear-probe-unlabelled-as-negative",
             "        known = ~np.isnan(y_train)\n        predictors.append(fit_pattern(",
             "        known = ~np.isnan(y_train) | True\n        y_train = np.nan_to_num(y_train)\n"
             "        predictors.append(fit_pattern(",
             "test_external", "mean_pooling"),
    Mutation("external-later-pattern-labels-swapped",
             "        for pattern in PATTERNS:\n            frame[pattern] = scored[pattern].to_numpy(float)",
             "        for pattern, column in zip(PATTERNS, [*PATTERNS[:2], *PATTERNS[:1:-1]]):\n"
             "            frame[pattern] = scored[column].to_numpy(float)",
             "test_external", PROBE_AND_EXTERNAL),
    Mutation("external-later-pattern-auc-of-another-column",
             '        score = predictions[f"p_{pattern}"].to_numpy(float)\n        labelled',
             '        score = predictions[f"p_{PATTERNS[min(PATTERNS.index(pattern), 1)]}"].to_numpy(float)\n'
             "        labelled",
             "test_external", PROBE_AND_EXTERNAL),
    Mutation("window-label-misses-a-span-on-its-last-frame",
             "present = {pattern for first, final, pattern in spans if first <= last and final >= start}",
             "present = {pattern for first, final, pattern in spans if first < last and final >= start}",
             "test_windows", WINDOWS),
    Mutation("feature-views-drawn-alike-for-every-clip",
             "generator = torch.Generator().manual_seed(_seed_for(self.seed, clip_id, view))",
             "generator = torch.Generator().manual_seed(_seed_for(self.seed, view))",
             "test_features", "two_ids"),
    # ------------------------------------------------------------ kind 3: models and paths left out of a property test
    Mutation("frame-based-mean-over-padded-frames",
             "logits = masked_mean(frame_logits, mask)", "logits = frame_logits.mean(dim=1)",
             "test_models", "padded"),
    Mutation("frame-based-max-over-padded-frames",
             "logits = frame_logits.masked_fill(~mask.unsqueeze(-1), torch.finfo(frame_logits.dtype).min).amax(dim=1)",
             "logits = frame_logits.amax(dim=1)",
             "test_models", "padded"),
    Mutation("video-transformer-samples-padded-frames",
             "index = torch.round(steps[None, :] * (lengths.to(x.device, torch.float64)[:, None] - 1)).long()",
             "index = torch.round(steps[None, :] * (total - 1) + 0 * lengths[:, None]).long()",
             "test_models", "padded"),
    Mutation("small-swin-fed-the-padding",
             "return VideoTransformer(net, num_frames, None)", "return VideoTransformer(net, None, None)",
             "test_models", "padded"),
    Mutation("augmentation-the-same-every-epoch",
             "augment_generator = torch.Generator().manual_seed(derive_seed(p.seed, epoch, dist.rank))",
             "augment_generator = torch.Generator().manual_seed(derive_seed(p.seed, 0, dist.rank))",
             "test_train", "augmented_anew"),
    Mutation("feature-view-the-same-every-epoch",
             "        loader.dataset.set_epoch(epoch)  # cached features",
             "        loader.dataset.set_epoch(0)  # cached features",
             "test_train", "augmented_anew"),
    # ------------------------------------------------------------ kind 4: outputs no test read
    Mutation("best-pt-holds-the-last-epoch",
             "best = unwrap(r.model).state_dict() if improved else r.unsaved_best",
             "best = unwrap(r.model).state_dict()",
             "test_train", "early_stopping"),
    Mutation("best-pt-drops-the-best-held-in-memory",
             "best = unwrap(r.model).state_dict() if improved else r.unsaved_best",
             "best = unwrap(r.model).state_dict() if improved else None",
             "test_train", "early_stopping"),
    Mutation("video-max-table-holds-the-mean",
             '"video_max": level_table(summaries, ("video_max",))}', '"video_max": level_table(summaries, ("video_mean",))}',
             "test_video_level", VIDEO_LEVEL),
    Mutation("training-table-shows-the-last-epoch",
             'best = log.loc[log["val_loss"].idxmin()] if len(log) else None',
             "best = log.iloc[-1] if len(log) else None",
             "test_report", "training_table"),
    # ------------------------------------------------------------ kind 5: generated sentences at their boundaries
    Mutation("conclusion-significant-below-0.1",
             'if math.isfinite(p := float(row.get(DISPLAY_NAMES[pattern], float("nan")))) and p < ALPHA]',
             'if math.isfinite(p := float(row.get(DISPLAY_NAMES[pattern], float("nan")))) and p < 0.1]',
             "test_conclusions", CONCLUSIONS),
    Mutation("conclusion-p-rounded-across-0.05",
             "    while digits < 10 and (float(", "    while False and (float(",
             "test_conclusions", CONCLUSIONS),
    Mutation("conclusion-chance-judged-by-the-upper-bound",
             '    if low > 0.5:\n        return "above chance', '    if high > 0.5:\n        return "above chance',
             "test_conclusions", CONCLUSIONS),
    Mutation("conclusion-ci-touching-0.5-excludes-it",
             '    if low > 0.5:\n        return "above chance', '    if low >= 0.5:\n        return "above chance',
             "test_conclusions", CONCLUSIONS),
    Mutation("conclusion-rank-by-hidden-digits",
             "    higher = sum(1 for value in shown.values() if math.isfinite(value) and value > mine)",
             "    higher = ranked.index(reference)",
             "test_conclusions", CONCLUSIONS),
    Mutation("conclusion-sweep-tie-within-5e-4",
             "        tied = table[shown == shown.max()][knob].tolist()",
             '        tied = table[table["macro_pooled"] >= table["macro_pooled"].max() - 5e-4][knob].tolist()',
             "test_conclusions", CONCLUSIONS),
    Mutation("conclusion-maps-on-the-region-below-0.1",
             "significant = [row for row in rated.itertuples() if math.isfinite(row.p_value) and row.p_value < ALPHA]",
             "significant = [row for row in rated.itertuples() if math.isfinite(row.p_value) and row.p_value < 0.1]",
             "test_conclusions", CONCLUSIONS),
)


def locate(root: Path, snippet: str) -> tuple[Path | None, str]:
    """(the one file under root/lusv holding the snippet, "") or (None, why not)."""
    places = [(path, path.read_text(encoding="utf-8").count(snippet)) for path in sorted((root / "lusv").rglob("*.py"))]
    places = [(path, n) for path, n in places if n]
    if not places:
        return None, "snippet not found"
    if len(places) > 1 or places[0][1] > 1:
        where = ", ".join(f"{path.relative_to(root)} x{n}" for path, n in places)
        return None, f"snippet found in several places ({where})"
    return places[0][0], ""


def snippet_lines(source: str, snippet: str) -> tuple[int, int]:
    """(first, last) line numbers that tell whether the snippet ran: from the first line of the
    innermost statement its first line belongs to (coverage records a statement there) to the
    snippet's own last line."""
    start = source[: source.index(snippet)].count("\n") + 1
    end = start + snippet.rstrip("\n").count("\n")
    containing = [node.lineno for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.stmt) and node.lineno <= start <= (node.end_lineno or node.lineno)]
    return max(containing, default=start), end


def copy_repo(target: Path, source: Path = REPO) -> None:
    for name in COPIED:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        elif path.is_file():
            shutil.copy2(path, target / name)


def run_pytest(root: Path, tests: tuple[str, ...], timeout: int, coverage_file: Path | None = None) -> tuple[bool, str]:
    """(passed, first FAILED/ERROR line or the last output line); under coverage.py (lusv/ only)
    when ``coverage_file`` is given."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "400"}  # wide: the FAILED line keeps its message
    runner = [sys.executable, "-m"]
    if coverage_file is not None:
        runner += ["coverage", "run", f"--data-file={coverage_file}", f"--include={root.resolve() / 'lusv'}/*", "-m"]
    command = [*runner, "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tests]
    try:
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s"
    lines = done.stdout.splitlines()
    reason = next((line for line in lines if line.startswith(("FAILED", "ERROR"))), lines[-1] if lines else "")
    if done.returncode == 5:  # no test selected: a selection that rotted must not count as caught
        return False, "no test selected: " + reason
    if done.returncode != 0 and not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return done.returncode == 0, reason


def executed_lines(coverage_file: Path) -> dict[str, set[int]]:
    """Resolved file path -> lines executed, from a coverage.py data file."""
    from coverage import CoverageData

    data = CoverageData(basename=str(coverage_file))
    data.read()
    return {str(Path(name).resolve()): set(data.lines(name) or ()) for name in data.measured_files()}


def is_executed(path: Path, snippet: str, executed: dict[str, set[int]]) -> tuple[bool, int]:
    """(whether a line of the snippet ran, the snippet's first line)."""
    first, last = snippet_lines(path.read_text(encoding="utf-8"), snippet)
    ran = executed.get(str(path.resolve()), set())
    return any(first <= line <= last for line in ran), first


def check_import_location(root: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    found = subprocess.run([sys.executable, "-c", "import lusv; print(lusv.__file__)"], cwd=root, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(root.resolve()):
        sys.exit(f"mutation_check: the copy imports lusv from {found}, not from {root}: the bugs would not be seen")


def baselines(root: Path, mutations, timeout: int) -> tuple[int, dict[tuple[str, ...], dict[str, set[int]]]]:
    """Run each selection once, unmutated, under coverage: (failures, selection -> executed lines)."""
    failures, executed = 0, {}
    for index, tests in enumerate(dict.fromkeys(m.tests for m in mutations)):
        data_file = root / f".coverage-{index}"
        passed, reason = run_pytest(root, tests, timeout, data_file)
        print(f"baseline {' '.join(tests)}: {'passes' if passed else 'FAILS: ' + reason}", flush=True)
        failures += not passed
        executed[tests] = executed_lines(data_file) if passed and data_file.is_file() else {}
    return failures, executed


def plant(root: Path, m: Mutation, executed: dict | None, timeout: int) -> bool:
    """Plant one bug and run its selection; prints the verdict; True when caught."""
    path, problem = locate(root, m.snippet)
    if path is None:
        print(f"{m.name:48s} ERROR    {problem}", flush=True)
        return False
    where = path.relative_to(root)
    if executed is not None:
        ran, line = is_executed(path, m.snippet, executed.get(m.tests, {}))
        where = f"{where}:{line}"
        if not ran:
            print(f"{m.name:48s} DEAD     {where}: no line of the snippet runs in {' '.join(m.tests)}", flush=True)
            return False
    original = path.read_text(encoding="utf-8")
    try:
        path.write_text(original.replace(m.snippet, m.replacement), encoding="utf-8")
        passed, reason = run_pytest(root, m.tests, timeout)
    finally:
        path.write_text(original, encoding="utf-8")
    caught = not passed and not reason.startswith(("no test selected", "timed out"))
    verdict = "caught " if caught else ("ERROR  " if not passed else "MISSED ")
    print(f"{m.name:48s} {verdict}  {where}: {reason}", flush=True)
    return caught


def check(mutations, source: Path = REPO, skip_baseline: bool = False, timeout: int = 600) -> int:
    """Plant every mutation in a copy of ``source``; the number of failures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="lusv-mutants-") as tmp:
        root = Path(tmp)
        copy_repo(root, source)
        check_import_location(root)
        executed = None
        if not skip_baseline:
            failures, executed = baselines(root, mutations, timeout)
            if failures:
                print("the unmutated tests fail: fix them first, a failure with a bug planted would prove nothing")
                return failures
        else:
            print("--skip-baseline: neither the baselines nor whether each snippet runs are checked")
        failures = sum(not plant(root, m, executed, timeout) for m in mutations)
    print(f"{len(mutations) - failures} of {len(mutations)} mutations caught")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    parser.add_argument("--list", action="store_true", help="list the mutations and check their snippets, run nothing")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="do not run the selections unmutated first (nor check that each snippet runs)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per pytest run")
    args = parser.parse_args(argv)
    mutations = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = sorted(set(args.only or ()) - {m.name for m in MUTATIONS})
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; known: {', '.join(m.name for m in MUTATIONS)}")

    if args.list:
        bad = 0
        for m in mutations:
            path, problem = locate(REPO, m.snippet)
            bad += path is None
            print(f"{m.name:48s} {problem or path.relative_to(REPO)}   [{' '.join(m.tests)}]")
        return 1 if bad else 0
    return 1 if check(mutations, REPO, args.skip_baseline, args.timeout) else 0


if __name__ == "__main__":
    sys.exit(main())
