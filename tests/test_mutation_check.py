"""scripts/mutation_check.py: its list stays in step with the code (every snippet found exactly
once), and the check fails when a planted bug survives or its snippet never runs."""

import importlib.util
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_check", REPO / "scripts" / "mutation_check.py")
mutation_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutation_check)
Mutation = mutation_check.Mutation


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


def test_a_snippet_runs_when_a_line_of_it_or_of_the_statement_it_starts_in_ran():
    source = "def f(x):\n    y = g(x,\n          padding=1)\n    return y\n"
    assert mutation_check.snippet_lines(source, "padding=1)") == (2, 3)  # the call's statement starts on line 2
    assert mutation_check.snippet_lines(source, "    return y\n") == (4, 4)
    assert mutation_check.snippet_lines(source, "y = g(x,\n          padding=1)\n    return") == (2, 4)


def _fake_repository(root: Path) -> None:
    (root / "lusv").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "lusv" / "__init__.py").write_text('"""A stand-in package."""\n')
    (root / "lusv" / "calc.py").write_text(textwrap.dedent('''\
        def double(x):
            return 2 * x


        def unused(x):
            return x + 1


        def half(x):
            return x / 2
        '''))
    (root / "tests" / "test_calc.py").write_text(textwrap.dedent('''\
        from lusv.calc import double, half


        def test_double():
            assert double(3) == 6


        def test_half_only_by_type():  # a weak test: a wrong value passes
            assert isinstance(half(4), float)
        '''))


def test_the_check_fails_when_a_planted_bug_survives_or_its_snippet_never_runs(tmp_path, capsys):
    _fake_repository(tmp_path / "repo")
    mutations = [Mutation("double-triples", "return 2 * x", "return 3 * x", "test_calc", "double"),
                 Mutation("half-by-three", "return x / 2", "return x / 3", "test_calc", "half"),
                 Mutation("dead-snippet", "return x + 1", "return x + 2", "test_calc", "double")]
    assert mutation_check.check(mutations, tmp_path / "repo", timeout=120) == 2
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.split() and line.split()[0] in
             {m.name for m in mutations}}
    assert lines == {"double-triples": "caught", "half-by-three": "MISSED", "dead-snippet": "DEAD"}, out
    assert "1 of 3 mutations caught" in out
