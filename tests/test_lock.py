"""The environment is locked: requirements-lock.txt holds every package the README commands install
(scripts/ensure_env.sh installs from it, with hashes), and it agrees with pyproject.toml.

Issue 25, part 7. When this fails after editing pyproject.toml, refresh the lock with
`bash scripts/lock.sh` (docs/contributing.md) and commit both files.
"""

import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements-lock.txt"
REFRESH = "refresh the lock: bash scripts/lock.sh"


def _lock_entries(text: str) -> dict[str, dict]:
    """name -> {version, marker, hashes, via} of every package of a uv/pip-compile lock file."""
    entries, current = {}, None
    for line in text.splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if pin:
            current = entries[canonicalize_name(pin[1])] = {"version": Version(pin[2]), "marker": pin[3],
                                                              "hashes": [], "via": []}
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            current["hashes"].append(line.strip().split(":", 1)[1].rstrip(" \\"))
        elif current is not None and line.strip().startswith("#"):
            current["via"].append(line.strip("# ").removeprefix("via").strip())
    return entries


def _project_requirements() -> list[Requirement]:
    """What ensure_env.sh installs: the dependencies and the ``test`` extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"] + project["optional-dependencies"]["test"]]


def check_agreement(requirements: list[Requirement], lock_text: str) -> list[str]:
    """Every way pyproject's requirements and the lock disagree, one line each (empty: they agree)."""
    entries = _lock_entries(lock_text)
    problems = []
    wanted = {canonicalize_name(r.name) for r in requirements}
    for requirement in requirements:
        entry = entries.get(canonicalize_name(requirement.name))
        if entry is None:
            problems.append(f"{requirement.name} is in pyproject.toml but not in the lock")
        elif requirement.specifier and entry["version"] not in requirement.specifier:
            problems.append(f"{requirement.name}: pyproject.toml wants {requirement.specifier}, the lock has {entry['version']}")
    direct = {name for name, entry in entries.items() if any("lusv (pyproject.toml)" in via for via in entry["via"])}
    problems += [f"{name} is locked as a dependency of lusv but pyproject.toml no longer asks for it"
                 for name in sorted(direct - wanted)]
    problems += [f"{name} has no hash in the lock" for name, entry in entries.items() if not entry["hashes"]]
    return problems


def test_the_lock_agrees_with_pyproject():
    problems = check_agreement(_project_requirements(), LOCK.read_text())
    assert not problems, f"{'; '.join(problems)}: {REFRESH}"


def test_the_agreement_check_catches_an_added_a_dropped_and_a_moved_dependency():
    requirements, lock = _project_requirements(), LOCK.read_text()
    assert check_agreement(requirements + [Requirement("einops>=0.7")], lock) == [
        "einops is in pyproject.toml but not in the lock"]
    without_tqdm = [r for r in requirements if r.name != "tqdm"]
    assert check_agreement(without_tqdm, lock) == [
        "tqdm is locked as a dependency of lusv but pyproject.toml no longer asks for it"]
    moved = [Requirement("torch==2.13.0") if r.name == "torch" else r for r in requirements]
    assert check_agreement(moved, lock) == ["torch: pyproject.toml wants ==2.13.0, the lock has 2.14.1"]
    unhashed = re.sub(r"(?m)^(tqdm==\S+) \\\n(\s+--hash=\S+ \\\n)*\s+--hash=\S+\n", r"\1\n", lock)
    assert "tqdm has no hash in the lock" in check_agreement(requirements, unhashed)


def test_every_package_of_this_platform_is_locked_with_hashes_and_installed_at_its_version():
    """The environment the tests run in is the locked one (what ensure_env.sh installed)."""
    from importlib.metadata import PackageNotFoundError, version

    environment = default_environment()
    from packaging.markers import Marker

    drift = []
    for name, entry in _lock_entries(LOCK.read_text()).items():
        if entry["marker"] and not Marker(entry["marker"]).evaluate(environment):
            continue  # another platform's or Python's package
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            drift.append(f"{name} (not installed)")
            continue
        if installed != entry["version"]:
            drift.append(f"{name} {installed} (locked {entry['version']})")
    assert not drift, f"the environment differs from requirements-lock.txt: {', '.join(drift)}; rerun scripts/ensure_env.sh"


def test_environment_yml_installs_the_same_lock():
    text = (REPO / "environment.yml").read_text()
    pip_lines = [line.strip().removeprefix("- ").strip() for line in text.split("- pip:", 1)[1].splitlines() if line.strip()]
    assert pip_lines == ["--require-hashes", "-r requirements-lock.txt"]
    conda = [line.strip()[2:] for line in text.split("dependencies:", 1)[1].split("- pip:", 1)[0].splitlines()
             if line.strip().startswith("- ")]
    assert conda == ["python=3.11", "pip"]  # no package from conda beside the lock
