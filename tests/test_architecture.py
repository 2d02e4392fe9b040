"""The house rules of lusv/ (docs/architecture.md): folders by concern, small rooms, short
functions, one direction of flow, no circles, no reaching into another module's privates.

Read from the source text (ast), nothing is imported or run. A module over 400 lines or a
function over 60 lines needs its reason in its docstring ("Long because ..."): the size is a
reason to split a module by concept, never to trim its text. A room (a subpackage, or a module
at the top level) may import only rooms of its own layer or the layers below it.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lusv"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
REASON = "long because"

# The flow of the study, bottom up: files and devices -> data -> models -> statistics -> a trained
# model's inference -> training -> tables and figures -> explanations -> evaluation of a study ->
# prediction on video files -> the study's steps -> the command line.
LAYERS = [
    {"lusv", "errors", "paths", "config", "infra"},
    {"data"},
    {"models"},
    {"stats"},
    {"inference"},
    {"train"},
    {"report"},
    {"explain"},
    {"evaluation"},
    {"predict"},
    {"study"},
    {"cli"},
]
LAYER_OF = {room: index for index, rooms in enumerate(LAYERS) for room in rooms}
# The top level holds the entry points and what every room needs; everything else lives in a folder.
TOP_LEVEL_MODULES = {"__init__", "study", "cli", "config", "errors", "paths"}
# Subpackages whose inside is private: other rooms import what the package itself exports.
SEALED_PACKAGES = {"train"}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in _modules()}


def _room(module: str) -> str:
    parts = module.split(".")
    return "lusv" if len(parts) == 1 else parts[1]


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported lusv module, names taken from it, line) for every import of a module, wherever it
    stands (function-local imports included: a circle hidden in a function is still a circle)."""
    found = []
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] != "lusv":
                continue
            names = [alias.name for alias in node.names]
            submodules = [f"{module}.{name}" for name in names if f"{module}.{name}" in MODULES]
            found += [(sub, [], node.lineno) for sub in submodules]
            rest = [name for name in names if f"{module}.{name}" not in MODULES]
            if rest or not submodules:
                found.append((module, rest, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.split(".")[0] == "lusv"]
    return found


def _graph() -> dict[str, set[str]]:
    return {module: {imported for imported, _, _ in _imports(path) if imported in MODULES and imported != module}
            for module, path in MODULES.items()}


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each sorted."""
    index, low, on_stack, stack, circles = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def private_imports(modules: dict[str, Path]) -> list[str]:
    """``from lusv.x import _name`` where ``_name`` is another module's private name."""
    found = []
    for module, path in modules.items():
        for imported, names, line in _imports(path):
            private = [name for name in names if name.startswith("_") and not name.startswith("__")]
            if private and imported != module:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} takes {', '.join(private)} from {imported}")
    return found


def test_every_room_has_a_layer_and_the_top_level_holds_only_entry_points():
    rooms = {_room(module) for module in MODULES}
    assert rooms <= set(LAYER_OF), f"add {sorted(rooms - set(LAYER_OF))} to LAYERS (and docs/architecture.md)"
    top_level = {path.stem for path in PACKAGE.glob("*.py")}
    assert top_level <= TOP_LEVEL_MODULES, f"{sorted(top_level - TOP_LEVEL_MODULES)}: put them in the folder of their concern"


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_module_is_small_with_an_opening_docstring_and_imports_nothing_above_it(module):
    path = MODULES[module]
    source = path.read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(source)) or ""
    assert docstring or path.name == "__main__.py", "every room opens with a docstring saying what it is for"
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES or REASON in docstring.lower(), f"{lines} lines: split it by concept"
    room = _room(module)
    above = {_room(imported) for imported, _, _ in _imports(path) if LAYER_OF.get(_room(imported), -1) > LAYER_OF[room]}
    assert not above, f"{room} (layer {LAYER_OF[room]}) imports {sorted(above)} from a layer above it"


def test_no_import_circles():
    assert find_circles(_graph()) == []


def test_no_module_imports_another_modules_private_names():
    assert private_imports(MODULES) == []


def test_sealed_packages_are_used_through_what_they_export():
    reaching_in = []
    for module, path in MODULES.items():
        for imported, _, line in _imports(path):
            parts = imported.split(".")
            if len(parts) > 2 and parts[1] in SEALED_PACKAGES and _room(module) != parts[1]:
                reaching_in.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert reaching_in == [], "import from lusv.train (its __init__ exports what others use)"


def test_inference_does_not_import_training():
    inference = [module for module in MODULES if _room(module) == "inference"]
    assert inference and not any(_room(imported) == "train" for module in inference
                                 for imported, _, _ in _imports(MODULES[module]))


def test_long_functions_say_why():
    too_long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and REASON not in (ast.get_docstring(node) or "").lower():
                    too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert not too_long


# The checks above must be able to fail: each is run on a small made-up package.
def _fake_package(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    modules = {}
    for name, text in files.items():
        path = tmp_path / "lusv" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for path in sorted((tmp_path / "lusv").rglob("*.py")):
        parts = path.relative_to(tmp_path).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def test_a_circle_and_a_private_import_are_found(tmp_path, monkeypatch):
    modules = _fake_package(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/a.py": "from lusv.data.b import thing\n",
        "data/b.py": "def thing():\n    from lusv.data import a  # hidden in a function: still a circle\n",
        "data/c.py": "from lusv.data.b import _helper\n",
    })
    monkeypatch.setattr(__import__(__name__), "MODULES", modules)
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "lusv")
    graph = {module: {imported for imported, _, _ in _imports(path) if imported in modules and imported != module}
             for module, path in modules.items()}
    assert find_circles(graph) == [["lusv.data.a", "lusv.data.b"]]
    assert private_imports(modules) == ["lusv/data/c.py:1 takes _helper from lusv.data.b"]


def test_the_readme_stays_short_and_every_page_it_links_exists():
    """The README is what a newcomer reads to the end; everything else is a docs/ page it links."""
    import re

    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    links = set(re.findall(r"\]\(((?:docs|notebooks|data|results)/[^)#]+)\)", readme))
    assert {"docs/architecture.md", "docs/contributing.md", "docs/protocol.md"} <= links
    assert [link for link in links if not (PACKAGE.parent / link).exists()] == []
    pages = {f"docs/{path.name}" for path in (PACKAGE.parent / "docs").glob("*.md")}
    assert pages <= links, f"{sorted(pages - links)}: link every docs page from the README"


def test_the_architecture_page_names_every_folder_and_module():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    folders = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert [folder for folder in sorted(folders) if f"{folder}/" not in page] == []
    for folder in ("data", "report", "evaluation", "explain", "inference", "stats", "infra"):
        modules = {path.stem for path in (PACKAGE / folder).glob("*.py")} - {"__init__", "__main__"}
        assert [module for module in sorted(modules) if module not in page] == [], folder
