"""scripts/mutation_check.py's list stays in step with the code: every snippet is found exactly once."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_check", REPO / "scripts" / "mutation_check.py")
mutation_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutation_check)


@pytest.mark.parametrize("mutation", mutation_check.MUTATIONS, ids=lambda m: m.name)
def test_each_snippet_is_found_once_and_its_tests_exist(mutation):
    path, problem = mutation_check.locate(REPO, mutation.snippet)
    assert path is not None, f"{mutation.name}: {problem}; update scripts/mutation_check.py with the code"
    assert mutation.replacement != mutation.snippet
    assert (REPO / mutation.tests[0]).is_file()


def test_locate_refuses_missing_and_repeated_snippets(tmp_path):
    (tmp_path / "lusv" / "sub").mkdir(parents=True)
    (tmp_path / "lusv" / "a.py").write_text("x = 1\ny = 2\n")
    (tmp_path / "lusv" / "sub" / "b.py").write_text("y = 2\n")
    assert mutation_check.locate(tmp_path, "x = 1") == (tmp_path / "lusv" / "a.py", "")
    assert mutation_check.locate(tmp_path, "z = 3") == (None, "snippet not found")
    path, problem = mutation_check.locate(tmp_path, "y = 2")
    assert path is None and problem == "snippet found in several places (lusv/a.py x1, lusv/sub/b.py x1)"


def test_mutation_names_are_unique():
    names = [m.name for m in mutation_check.MUTATIONS]
    assert len(names) == len(set(names))
