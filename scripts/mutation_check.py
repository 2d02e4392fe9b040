"""Plant known bugs one at a time in a temporary copy of lusv and check that the tests catch each.

    python scripts/mutation_check.py            # every mutation (a few minutes)
    python scripts/mutation_check.py --only youden-ties-lowest --skip-baseline
    python scripts/mutation_check.py --list     # names, and whether each snippet is found once

A mutation is (name, snippet, replacement, test module, pytest -k selection). The snippet is looked up in every
.py file under lusv/, not in a fixed file, so moving code between modules does not break the
list; a snippet found in no place or in several is reported and counts as a failure (edit the
list together with the code). Each selection is first run unmutated (baseline: it must pass, or
a failure would prove nothing), then with the bug planted: "caught" when pytest fails, "MISSED"
when it passes. The first FAILED line is shown so that you can judge the reason. Exit status 1
when any mutation is missed, any snippet is not found exactly once or any baseline fails.

Add a mutation whenever a bug slipped past the tests once: it keeps the new test honest.
"""

from __future__ import annotations

import argparse
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


MUTATIONS: tuple[Mutation, ...] = (
    Mutation("delong-logit-without-factor",
             "half = z * se / (auc * (1 - auc))", "half = z * se",
             "test_metrics", "delong_ci"),
    Mutation("delong-quantile-one-sided",
             "z = stats.norm.ppf(1 - alpha / 2)", "z = stats.norm.ppf(1 - alpha)",
             "test_metrics", "delong_ci"),
    Mutation("youden-ties-lowest",
             "best = int(np.flatnonzero(j >= j.max() - 1e-9)[0])", "best = int(np.flatnonzero(j >= j.max() - 1e-9)[-1])",
             "test_metrics", "youden"),
    Mutation("temporal-relu-before-batchnorm",
             "y = torch.relu(self.norm(conv))  # (B, F, T)",
             "y = self.norm(torch.relu(conv))  # (B, F, T)",
             "test_models", "temporal"),
    Mutation("temporal-branch-times-zero",
             "fused = spatial + self.temporal(h, mask)", "fused = spatial + 0 * self.temporal(h, mask)",
             "test_models", "temporal"),
    Mutation("temporal-even-k-padding-k-over-2",
             'kernel_size, padding="same", bias=False)', "kernel_size, padding=kernel_size // 2, bias=False)",
             "test_models", "temporal or even_kernel"),
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
             "test_datasets", "flip_alone"),
    Mutation("paper-augmentations-with-intensity-jitter",
             "return ClipAugment(brightness=0.0, contrast=0.0, gamma=0.0, blur_p=0.0, noise_p=0.0)",
             "return ClipAugment()",
             "test_datasets", "paper_augmentations_only"),
    Mutation("held-out-clips-left-in-the-folds",
             'kept = held_out.loc[held_out["split"] == "development", "clip_id"]', 'kept = held_out["clip_id"]',
             "test_held_out", "sets_the_held_out_patients_apart"),
    Mutation("window-tail-dropped",
             "    if starts[-1] + window < video_frames:  # the tail: one more window aligned to the end",
             "    if False:",
             "test_windows", "starts or labels_hand_worked"),
    Mutation("window-label-from-its-first-frame-only",
             "present = {pattern for first, final, pattern in spans if first <= last and final >= start}",
             "present = {pattern for first, final, pattern in spans if first <= start <= final}",
             "test_windows", "labels"),
    Mutation("video-label-needs-every-window-positive",
             "out[pattern] = grouped[pattern].max()", "out[pattern] = grouped[pattern].min()",
             "test_video_level", "any_positive"),
    Mutation("video-level-ci-resamples-windows",
             'summary = summarize_predictions(table, ci="bootstrap"',
             'summary = summarize_predictions(table.assign(patient_id=table["clip_id"]), ci="bootstrap"',
             "test_video_level", "patient_resampled"),
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


def copy_repo(target: Path) -> None:
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        elif source.is_file():
            shutil.copy2(source, target / name)


def run_pytest(root: Path, tests: tuple[str, ...], timeout: int) -> tuple[bool, str]:
    """(passed, first FAILED/ERROR line or the last output line)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "400"}  # wide: the FAILED line keeps its message
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tests]
    try:
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s"
    lines = done.stdout.splitlines()
    reason = next((line for line in lines if line.startswith(("FAILED", "ERROR"))), lines[-1] if lines else "")
    if done.returncode == 5:  # no test selected: a selection that rotted must not count as caught
        return False, "no test selected: " + reason
    return done.returncode == 0, reason


def check_import_location(root: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    found = subprocess.run([sys.executable, "-c", "import lusv; print(lusv.__file__)"], cwd=root, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(root.resolve()):
        sys.exit(f"mutation_check: the copy imports lusv from {found}, not from {root}: the bugs would not be seen")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    parser.add_argument("--list", action="store_true", help="list the mutations and check their snippets, run nothing")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the selections unmutated first")
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
            print(f"{m.name:40s} {problem or path.relative_to(REPO)}   [{' '.join(m.tests)}]")
        return 1 if bad else 0

    failures = 0
    with tempfile.TemporaryDirectory(prefix="lusv-mutants-") as tmp:
        root = Path(tmp)
        copy_repo(root)
        check_import_location(root)
        if not args.skip_baseline:
            for tests in dict.fromkeys(m.tests for m in mutations):
                passed, reason = run_pytest(root, tests, args.timeout)
                print(f"baseline {' '.join(tests)}: {'passes' if passed else 'FAILS: ' + reason}", flush=True)
                failures += not passed
            if failures:
                print("the unmutated tests fail: fix them first, a failure with a bug planted would prove nothing")
                return 1
        for m in mutations:
            path, problem = locate(root, m.snippet)
            if path is None:
                print(f"{m.name:40s} ERROR   {problem}", flush=True)
                failures += 1
                continue
            original = path.read_text(encoding="utf-8")
            try:
                path.write_text(original.replace(m.snippet, m.replacement), encoding="utf-8")
                passed, reason = run_pytest(root, m.tests, args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            caught = not passed and not reason.startswith(("no test selected", "timed out"))
            failures += not caught
            verdict = "caught " if caught else ("ERROR  " if not passed else "MISSED ")
            print(f"{m.name:40s} {verdict} {path.relative_to(root)}: {reason}", flush=True)
    print(f"{len(mutations) - failures} of {len(mutations)} mutations caught")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
