"""core/ stays free of transport (no grpc, no services, no generated stubs: DESIGN.md, Layout) and
free of import cycles (dependencies inside core/ point one way)."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"
FORBIDDEN = ("grpc", "services", "ltrr", "google.protobuf")


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_no_transport(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), f"{path} imports {name}"


def package_modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under `package_dir` (a package's own module
    is its __init__.py)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _known(dotted: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of `dotted` that is one of `modules` (None for outside imports)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def imported_modules(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The `modules` that module `name` (file `path`) imports anywhere in its body, inside functions
    and `if TYPE_CHECKING:` blocks too. `from a.b import c` is module a.b.c when that is a module,
    else a.b; relative imports are resolved against `name`'s package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(_known(a.name, modules) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # level 1 is the current package, each further level its parent
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else _known(base, modules)
                       for a in node.names)
    return {m for m in out if m is not None} - {name}


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package tree it imports (see imported_modules)."""
    modules = package_modules(package_dir)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def strongly_connected_components(graph: Mapping[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm (SIAM J. Comput. 1972), iterative; nodes only named as targets count too.
    A component with more than one node is a set of modules that import each other in a cycle."""
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            nxt = next(successors, None)
            if nxt is None:
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
                    components.append(component)
            elif nxt not in index:
                index[nxt] = low[nxt] = len(index)
                stack.append(nxt)
                on_stack.add(nxt)
                work.append((nxt, iter(sorted(graph.get(nxt, ())))))
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
    return components


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Each import cycle of `graph` as its sorted modules, the largest first."""
    return sorted((sorted(c) for c in strongly_connected_components(graph) if len(c) > 1), key=lambda c: (-len(c), c))


def test_core_has_no_import_cycle() -> None:
    graph = import_graph(CORE)
    assert len(graph) > 50 and "core.ranking" in graph["core.simulator.runner"]  # the graph is really read
    found = cycles(graph)
    edges = [f"{a} -> {b}" for c in found for a in c for b in sorted(graph[a] & set(c))]
    assert not found, f"import cycles in core/: {found}; their imports: {edges}"


def test_cycle_finder_on_a_tiny_graph() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d", "f"}, "g": {"g"}, "h": set()}
    assert cycles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert sorted(map(sorted, strongly_connected_components(graph))) == \
        [["a", "b", "c"], ["d", "e"], ["f"], ["g"], ["h"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_import_graph_resolves_imports_and_finds_a_cycle_inside_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "import numpy\nfrom pkg.sub import b\nfrom pkg import sub\n",
        "sub/__init__.py": "from .c import NAME\n",
        "sub/b.py": "from ..d import thing\n",
        "sub/c.py": "NAME = 1\n",
        "d.py": "def thing():\n    import pkg.a\n    return pkg.a\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.sub.b", "pkg.sub"}, "pkg.d": {"pkg.a"},
                     "pkg.sub": {"pkg.sub.c"}, "pkg.sub.b": {"pkg.d"}, "pkg.sub.c": set()}
    assert cycles(graph) == [["pkg.a", "pkg.d", "pkg.sub.b"]]
