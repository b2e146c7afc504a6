"""The layout shows the layers: no import cycle among miniature's modules, nothing imported by
a private name from another module, and data flowing one way (plugin -> core -> reports is
allowed; core never imports plugin, reports or tools; reports never import plugin or tools)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import miniature

PACKAGE = Path(miniature.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(test: ast.expr) -> bool:
    """`TYPE_CHECKING` or `typing.TYPE_CHECKING`: the body only runs for the type checker."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
         and isinstance(test.value, ast.Name) and test.value.id == "typing")


def runtime_nodes(tree: ast.AST):
    """Every node of the tree except those inside the body of an `if TYPE_CHECKING:` block
    (its `else` branch does run)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, ast.If) and is_type_checking(node.test):
            pending.append(node.test)
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))


@functools.cache
def imports() -> dict[str, list[tuple[str, list[str]]]]:
    """module -> [(imported miniature module, names imported from it)], every runtime import
    in the file (module level and inside functions; not those under `if TYPE_CHECKING:`)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found: dict[str, list[tuple[str, list[str]]]] = {name: [] for name in modules}
    for name, path in modules.items():
        for node in runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.split(".")[0] == "miniature":
                names = [alias.name for alias in node.names]
                # `from miniature.core import settings` imports the module miniature.core.settings
                submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in modules]
                targets = submodules or [node.module]
                for target in targets:
                    found[name].append((target, [] if submodules else names))
            elif isinstance(node, ast.ImportFrom) and node.level:
                found[name].append((f"<relative import level {node.level}>", []))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "miniature":
                        found[name].append((alias.name, []))
    return found


def test_no_relative_imports() -> None:
    relative = {m for m, edges in imports().items() for target, _ in edges if target.startswith("<")}
    assert not relative, relative


def test_no_import_cycle() -> None:
    modules = imports()
    graph = {m: {t for t, _ in edges if t in modules and t != m} for m, edges in modules.items()}
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, cycles


def test_no_private_name_imported_from_another_module() -> None:
    private = [(m, t, n) for m, edges in imports().items() for t, names in edges for n in names
               if n.startswith("_") and not n.startswith("__")]
    assert not private, private


def test_data_flows_one_way() -> None:
    forbidden = {"miniature.core": ("miniature.plugin", "miniature.reports", "miniature.tools"),
                 "miniature.reports": ("miniature.plugin", "miniature.tools")}
    wrong = [(m, t) for m, edges in imports().items() for t, _ in edges
             for layer, banned in forbidden.items() if m.startswith(layer) and t.startswith(banned)]
    assert not wrong, wrong


def test_public_import_paths_a_project_uses() -> None:
    """What a team's tests and conftest import stays where the README says."""
    from miniature import Characteristic
    from miniature.core.registry import Characteristic as registered
    from miniature.testing import make_tiny_models
    from miniature.tools import testing

    assert Characteristic is registered and make_tiny_models is testing.make_tiny_models


def test_no_module_imports_a_private_pytest_module() -> None:
    """pytest's private modules (``_pytest``) change without notice: the plugin uses its public API."""
    private = sorted(module_name(path) for path in PACKAGE.rglob("*.py")
                     for node in ast.walk(ast.parse(path.read_text()))
                     if (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "_pytest")
                     or (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "_pytest" for a in node.names)))
    assert not private, private
