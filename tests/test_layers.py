"""docs/design.md's layer table, held against the code: every import of src/rolekd (function-level and
TYPE_CHECKING ones too) points down or across a floor, and no two modules import each other but report ↔ run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# docs/design.md's "Layers" table: a package (or top-level module) and its floor. A new one needs a row here and there.
FLOORS = {
    "rolekd": 6,  # the package's face: hands on the commands' functions, as the CLI does
    "rolekd.cli": 6,
    "rolekd.pipeline": 5,
    "rolekd.pba": 4, "rolekd.kd": 4, "rolekd.quant": 4,
    "rolekd.training": 3, "rolekd.agents": 3,
    "rolekd.augment": 2, "rolekd.models": 2,
    "rolekd.config": 1, "rolekd.data": 1, "rolekd.registry": 1, "rolekd.atomic": 1, "rolekd.plugins": 1,
    "rolekd.raycluster": 1,
}
# the one pair inside a floor that reads each other: the report takes the row plan
MUTUAL = {frozenset({"rolekd.pipeline.report", "rolekd.pipeline.run"})}


def modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, packages by their ``__init__.py``."""
    found = {}
    for path in sorted((src / "rolekd").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The rolekd modules ``name`` imports anywhere in its file (``from pkg import submodule`` names the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in out if m in known and m != name}


def unit(module: str) -> str:
    """The row of the table a module belongs to: its top-level package or module under rolekd."""
    return ".".join(module.split(".")[:2])


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    known = modules(src)
    return {name: imports(name, path, known) for name, path in known.items()}


def upward(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} (floor {FLOORS[unit(a)]}) imports {b} (floor {FLOORS[unit(b)]})"
            for a, targets in sorted(graph.items()) for b in sorted(targets) if FLOORS[unit(b)] > FLOORS[unit(a)]]


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan's, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_every_module_has_a_floor_in_the_table():
    missing = sorted({unit(m) for m in modules()} - set(FLOORS))
    assert not missing, f"{missing}: no floor; expected a row in docs/design.md's layer table and in FLOORS here"


def test_no_import_points_up_a_floor():
    assert upward(import_graph()) == []


def test_no_modules_import_each_other_but_report_and_run():
    assert [c for c in circles(import_graph()) if frozenset(c) not in MUTUAL] == []


def test_no_two_packages_import_each_other():
    graph = import_graph()
    units = {(unit(a), unit(b)) for a, targets in graph.items() for b in targets if unit(a) != unit(b)}
    assert sorted(f"{a} <-> {b}" for a, b in units if a < b and (b, a) in units) == []


@pytest.mark.parametrize("source, found", [
    ("def f():\n    from ..pipeline import run\n", "rolekd.training.checkpoint (floor 3) imports rolekd.pipeline.run (floor 5)"),
    ("from rolekd.quant import convert\n", "rolekd.training.checkpoint (floor 3) imports rolekd.quant.convert (floor 4)"),
])
def test_an_upward_import_is_found_even_inside_a_function(tmp_path, source, found):
    for name in ("training/__init__.py", "training/checkpoint.py", "pipeline/__init__.py", "pipeline/run.py",
                 "quant/__init__.py", "quant/convert.py", "__init__.py"):
        (tmp_path / "rolekd" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "rolekd" / name).write_text("")
    (tmp_path / "rolekd" / "training" / "checkpoint.py").write_text(source)
    assert upward(import_graph(tmp_path)) == [found]


def test_a_circle_of_three_modules_is_found(tmp_path):
    (tmp_path / "rolekd" / "kd").mkdir(parents=True)
    for name, source in {"__init__.py": "", "a.py": "from . import b\n", "b.py": "from .c import x\n",
                         "c.py": "import rolekd.kd.a\n"}.items():
        (tmp_path / "rolekd" / "kd" / name).write_text(source)
    (tmp_path / "rolekd" / "__init__.py").write_text("")
    assert circles(import_graph(tmp_path)) == [{"rolekd.kd.a", "rolekd.kd.b", "rolekd.kd.c"}]
