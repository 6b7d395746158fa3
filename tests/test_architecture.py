"""The package's shape, as docs/architecture.md draws it: every module sits in one layer of the doc's layer table,
imports only from its own unit or from layers below (or from a unit of its own layer where the doc's table says
so), no two modules import each other in a circle, and no module is over 400 lines.

The doc is the source of truth: a module added to the package without a place in the table, or an import that
climbs a layer, fails here with the file and line of the import.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / "nift").rglob("*.py"))}


MODULES = _modules()


def _imports(mod: str, path: Path) -> list[tuple[str, int]]:
    """Every nift module `mod` imports (at module level or inside a function), with the line of the import."""
    out = []
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from nift import io` imports the module nift.io; `from nift.io import x` the module nift.io
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            out += [(s, node.lineno) for s in subs] or [(target, node.lineno)]
    return [(t, line) for t, line in out if t == "nift" or t.startswith("nift.")]


def _known(target: str) -> str:
    """The module an import names (`nift.distill.Request` is a name inside the module `nift.distill`)."""
    while target not in MODULES and "." in target:
        target = target.rpartition(".")[0]
    return target


def _unit(mod: str) -> str:
    """A module's unit: its top-level module or subpackage under nift (`nift.eval.stats` -> `eval`)."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "nift"


def _doc_table(heading: str) -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#|\Z)", text, re.M | re.S)
    assert m, f"{DOC}: no section {heading!r}"
    rows = [line for line in m.group(1).splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows]


def _layers() -> dict[str, int]:
    """unit -> layer index (0 = bottom) from the doc's layer table, listed top first."""
    rows = _doc_table("Layers")
    out = {}
    for i, (_, units, *_rest) in enumerate(reversed(rows)):
        for u in re.findall(r"`([\w.]+)`", units):
            assert u not in out, f"{DOC}: {u} is in two layers"
            out[u] = i
    return out


def _same_layer_uses() -> set[tuple[str, str]]:
    return {(r[0].strip("`"), r[1].strip("`")) for r in _doc_table("Where a unit uses another of its layer")}


LAYERS = _layers()
EDGES = [(m, _known(t), line) for m, p in MODULES.items() for t, line in _imports(m, p)]


def test_every_unit_of_the_package_has_one_layer_in_the_doc_and_every_unit_in_the_doc_exists():
    units = {_unit(m) for m in MODULES}
    assert sorted(units - set(LAYERS)) == [], f"not in {DOC.name}'s layer table"
    assert sorted(set(LAYERS) - units) == [], f"in {DOC.name}'s layer table but not in src/nift"


def _climbing(edges: list[tuple[str, str, int]]) -> list[str]:
    allowed = _same_layer_uses()
    out = []
    for mod, target, line in edges:
        a, b = _unit(mod), _unit(target)
        if a == b or LAYERS[a] > LAYERS[b] or (a, b) in allowed:
            continue
        where = MODULES[mod].relative_to(ROOT) if mod in MODULES else mod
        out.append(f"{where}:{line}: {mod} ({a}, layer {LAYERS[a]}) imports {target} ({b}, layer {LAYERS[b]})")
    return out


def test_imports_only_go_down_the_layers():
    climbing = _climbing(EDGES)
    assert not climbing, "imports that climb a layer:\n" + "\n".join(climbing)


def test_every_same_layer_use_in_the_doc_is_real():
    used = {(_unit(m), _unit(t)) for m, t, _ in EDGES}
    assert sorted(_same_layer_uses() - used) == [], "listed in the doc but no module does it"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_between_units():
    edges: dict[str, set[str]] = {}
    for mod, target, _ in EDGES:
        if _unit(mod) != _unit(target):
            edges.setdefault(_unit(mod), set()).add(_unit(target))
    assert _cycles(edges) == []


def test_no_import_circle_between_modules_at_import_time():
    """Module-level imports only: a function-level import runs when called, after every module has loaded."""
    edges: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        lines = {n.lineno for n in top}
        for target, line in _imports(mod, path):
            if line in lines and _known(target) != mod:
                edges.setdefault(mod, set()).add(_known(target))
    # a package's __init__ importing its own submodules is how packages expose names, not a circle
    for mod in list(edges):
        edges[mod] = {t for t in edges[mod] if not (MODULES[mod].name == "__init__.py" and t.startswith(mod + "."))}
    assert _cycles(edges) == []


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_module_over_400_lines(mod):
    n = len(MODULES[mod].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{MODULES[mod].relative_to(ROOT)} has {n} lines"


def test_the_checks_catch_what_they_look_for():
    """The checks fail on a climbing import and a circle (they are not vacuous)."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    low, high = min(LAYERS, key=LAYERS.get), max(LAYERS, key=LAYERS.get)
    assert LAYERS[low] < LAYERS[high]
    assert _climbing([("nift.config", "nift.cli", 1)]) == [
        f"src/nift/config.py:1: nift.config (config, layer {LAYERS['config']}) imports nift.cli (cli, layer "
        f"{LAYERS['cli']})"]
    assert _climbing([("nift.audit.stage", "nift.eval.stats", 7)]) != []  # two stages, not in the doc's table
    assert _climbing([("nift.eval.target", "nift.merge.stage", 7)]) == []  # in the doc's table
    # the parser sees module-level, function-level, relative and `from nift import module` imports
    assert ("nift.cli", "nift.config") in {(m, t) for m, t, _ in EDGES}
    assert ("nift.eval.target", "nift.merge") in {(m, t) for m, t, _ in EDGES}  # inside a function
    assert ("nift.sweep", "nift.pipeline") in {(m, t) for m, t, _ in EDGES}  # from nift import pipeline
