"""The import graph of ``src/bgjobs``, built with :mod:`ast`, and its cycles.

Every import counts, wherever it is written: at module level, inside a function, in a ``try``;
so does ``importlib.import_module`` of a module named by a literal string, or by each string of a
literal tuple it loops over (``for module in MODEL_MODULES: import_module(module)``, the tuple
written in the module or imported from another). Two kinds are left out on purpose:

- imports under ``if TYPE_CHECKING:``, which never run;
- re-exports through a package ``__init__``: ``from bgjobs.webhooks import publish`` is an edge to
  the module the package took ``publish`` from, not to the package itself, and the root package's
  lazy ``_EXPORTS`` table is read the same way.

Run it as a script to print the cycles: ``python tests/support/imports.py``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "bgjobs"
SOURCE = Path(__file__).resolve().parents[2] / "src" / PACKAGE


def modules(source: Path = SOURCE) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(source.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(source).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id in ("TYPE_CHECKING", "_TYPE_CHECKING")) or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import node that can run (skipping ``if TYPE_CHECKING:`` bodies)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for other in node.orelse:
                yield from _imports(other)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class Graph:
    def __init__(self, source: Path = SOURCE) -> None:
        self.paths = modules(source)
        self.packages = {name for name, path in self.paths.items() if path.name == "__init__.py"}
        self.trees = {name: ast.parse(path.read_text(), str(path)) for name, path in self.paths.items()}
        self.reexports = {name: self._reexports(name) for name in self.packages}
        self.edges = {name: self._edges(name) for name in self.paths}

    def _reexports(self, package: str) -> dict[str, str]:
        """Name -> the module a package ``__init__`` takes it from."""
        table: dict[str, str] = {}
        tree = self.trees[package]
        for node in ast.walk(tree):  # the root's lazy table: {"name": "submodule"}
            if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(node.value, ast.Dict):
                for key, value in zip(node.value.keys, node.value.values, strict=True):
                    if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                        where = str(value.value)
                        absolute = where.startswith(PACKAGE + ".")
                        table[str(key.value)] = where if absolute else f"{package}.{where}"
            if isinstance(node, ast.DictComp):  # {family: family for family in (...)}
                for gen in node.generators:
                    if isinstance(gen.iter, ast.Tuple):
                        for item in gen.iter.elts:
                            if isinstance(item, ast.Constant):
                                table[str(item.value)] = f"{package}.{item.value}"
        for node in _imports(tree):
            if isinstance(node, ast.ImportFrom):
                origin = _absolute(package, True, node)
                for alias in node.names:
                    target = f"{origin}.{alias.name}"
                    table[alias.asname or alias.name] = target if target in self.paths else origin
        return table

    def _resolve(self, module: str, name: str | None, seen: frozenset[str] = frozenset()) -> str | None:
        """The bgjobs module an import of ``module`` (and ``name`` from it) really reaches."""
        if not module.startswith(PACKAGE):
            return None
        if name is not None and f"{module}.{name}" in self.paths:
            module = f"{module}.{name}"
            name = None
        if module in self.packages and module not in seen:
            if name is None:
                return module
            origin = self.reexports[module].get(name)
            if origin is not None and origin != module:
                return self._resolve(origin, None if origin in self.paths else name, seen | {module})
        return module if module in self.paths else None

    def _edges(self, module: str) -> set[str]:
        found: set[str] = set()
        is_package = module in self.packages
        for node in _imports(self.trees[module]):
            if isinstance(node, ast.Import):
                targets = [self._resolve(alias.name, None) for alias in node.names]
            else:
                origin = _absolute(module, is_package, node)
                targets = [self._resolve(origin, alias.name) for alias in node.names]
            found.update(t for t in targets if t is not None and t != module)
        named = (self._resolve(name, None) for name in self._named_imports(module))
        found.update(t for t in named if t is not None and t != module)
        if is_package:  # a package's re-exports are its own business, not a dependency of it
            found = {t for t in found if not t.startswith(module + ".")}
        return found

    def _constants(self, module: str, name: str, seen: frozenset[str] = frozenset()) -> list[str]:
        """The strings of the literal tuple (or list) ``name`` is bound to in ``module``, following
        a ``from x import name`` to the module that writes it."""
        tree = self.trees.get(module)
        if tree is None or module in seen:
            return []
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []  # fmt: skip
            value = getattr(node, "value", None)
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and isinstance(
                value, ast.Tuple | ast.List
            ):
                return [str(e.value) for e in value.elts if isinstance(e, ast.Constant)]
        for node in _imports(tree):
            if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
                origin = _absolute(module, module in self.packages, node)
                real = next(a.name for a in node.names if (a.asname or a.name) == name)
                return self._constants(origin, real, seen | {module})
        return []

    def _strings(self, module: str, node: ast.expr) -> list[str]:
        """The module names an expression given to ``import_module`` can hold."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.Name):
            return self._constants(module, node.id)
        if isinstance(node, ast.Tuple | ast.List):
            items = [e.value if isinstance(e, ast.Starred) else e for e in node.elts]
            return [n for e in items for n in self._strings(module, e)]
        return []

    def _named_imports(self, module: str) -> set[str]:
        """Modules ``module`` imports by name at run time (``importlib.import_module``)."""
        tree, named = self.trees[module], set()
        loops = {
            n.target.id: n.iter
            for n in ast.walk(tree)
            if isinstance(n, ast.For) and isinstance(n.target, ast.Name)
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            called = getattr(func, "id", None) or getattr(func, "attr", "")
            if called != "import_module":
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Name) and arg.id in loops:
                named.update(self._strings(module, loops[arg.id]))
            else:
                named.update(self._strings(module, arg))
        return {n for n in named if n.startswith(PACKAGE + ".") or n == PACKAGE}

    def cycles(self) -> list[list[str]]:
        """Strongly connected components with more than one module (Tarjan), each sorted."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found: list[list[str]] = []
        counter = [0]
        sys.setrecursionlimit(10_000)

        def visit(v: str) -> None:
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on_stack.add(v)
            for w in sorted(self.edges[v]):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

        for v in sorted(self.paths):
            if v not in index:
                visit(v)
        return found

    def path(self, start: str, end: str) -> list[str]:
        """One import chain from ``start`` to ``end`` (breadth first), to explain a cycle."""
        previous: dict[str, str] = {}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(self.edges[v]):
                if w not in previous and w != start:
                    previous[w] = v
                    if w == end:
                        chain = [end]
                        while chain[-1] != start:
                            chain.append(previous[chain[-1]])
                        return chain[::-1]
                    queue.append(w)
        return []


def describe(graph: Graph) -> list[str]:
    lines = []
    for component in graph.cycles():
        first = component[0]
        back = next(w for w in sorted(graph.edges[first]) if w in component)
        loop = graph.path(back, first)
        lines.append(f"{len(component)} modules: " + " -> ".join([first, *loop]))
    return lines


if __name__ == "__main__":
    found = describe(Graph())
    print("\n".join(found) or "no import cycles")
    sys.exit(1 if found else 0)
