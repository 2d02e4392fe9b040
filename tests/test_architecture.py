"""The house rules of lusv/ (README, Layout): small rooms, short functions, one direction of flow.

Read from the source text (ast), nothing is imported or run. A module over 400 lines or a
function over 60 lines needs its reason in its docstring ("Long because ..."); a module may
import only modules of its own layer or the layers below it.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lusv"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
REASON = "long because"

# The flow of the study, bottom up: sources/cache -> datasets -> models -> train -> study -> cli.
LAYERS = [
    {"lusv", "patterns", "errors", "paths", "io", "runlock", "config", "labels", "video", "video_writer", "devices",
     "bootstrap", "names", "roster", "console"},
    {"sources", "cache", "splits", "temporal_split", "folds", "windows"},
    {"datasets", "features"},
    {"models"},
    {"metrics", "explain", "saliency", "inference"},
    {"report", "paper", "video_level", "sweeps", "conclusions", "train", "executors", "linear_probe"},
    {"out_of_fold", "study", "truth", "notebook", "html_report", "external"},
    {"cli"},
]
LAYER_OF = {room: index for index, rooms in enumerate(LAYERS) for room in rooms}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _room(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "lusv" if parts == ("__init__",) else parts[0]


def _imported_rooms(tree: ast.AST) -> set[str]:
    """lusv rooms a module imports, leaving out imports under ``if TYPE_CHECKING:`` (annotations only)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    rooms = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lusv":
            names = [node.module] if node.module != "lusv" else [f"lusv.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "lusv"]
        rooms.update(name.split(".")[1] if "." in name else "lusv" for name in names)
    return rooms


def test_every_room_has_a_layer():
    rooms = {_room(path) for path in _modules()}
    assert rooms <= set(LAYER_OF), f"add {sorted(rooms - set(LAYER_OF))} to LAYERS (and the README's Layout)"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small_with_an_opening_docstring_and_imports_nothing_above_it(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree) or ""
    assert docstring or path.name == "__main__.py", "every room opens with a docstring saying what it is for"
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES or REASON in docstring.lower(), f"{lines} lines"
    room = _room(path)
    above = {other for other in _imported_rooms(tree) if LAYER_OF.get(other, -1) > LAYER_OF[room]}
    assert not above, f"{room} (layer {LAYER_OF[room]}) imports {sorted(above)} from a layer above it"


def test_inference_does_not_import_training():
    tree = ast.parse((PACKAGE / "inference.py").read_text(encoding="utf-8"))
    assert "train" not in _imported_rooms(tree)


def test_long_functions_say_why():
    too_long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and REASON not in (ast.get_docstring(node) or "").lower():
                    too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert not too_long
