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
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute)
        and test.attr == "TYPE_CHECKING"
        and isinstance(test.value, ast.Name)
        and test.value.id == "typing"
    )


def nodes_with_kind(tree: ast.AST):
    """Every node of the tree with the kind of import it would be: "import", or
    "TYPE_CHECKING import" inside the body of an `if TYPE_CHECKING:` block (its `else` branch
    does run)."""
    pending: list[tuple[ast.AST, str]] = [(tree, "import")]
    while pending:
        node, kind = pending.pop()
        yield node, kind
        if isinstance(node, ast.If) and is_type_checking(node.test):
            pending.append((node.test, kind))
            pending.extend((child, "TYPE_CHECKING import") for child in node.body)
            pending.extend((child, kind) for child in node.orelse)
        else:
            pending.extend((child, kind) for child in ast.iter_child_nodes(node))


def string_value(node: ast.AST, constants: dict[str, str]) -> str | None:
    """The text of a string literal, or of an f-string made of literals and the module's
    string constants (``f"{_PACKAGE}.module:function"``); None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                if value.conversion != -1 or value.format_spec is not None:
                    return None
                value = value.value
            part = string_value(value, constants)
            if part is None:
                return None
            parts.append(part)
        return "".join(parts)
    return None


def is_import_call(node: ast.AST) -> bool:
    """``importlib.import_module(...)``, ``import_module(...)`` or ``__import__(...)``."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in ("import_module", "__import__")


@functools.cache
def edges() -> dict[str, list[tuple[str, list[str], str]]]:
    """module -> [(imported miniature module, names imported from it, kind)] for every import
    in the file (module level and inside functions). The kind is "import" (it runs),
    "TYPE_CHECKING import" (under `if TYPE_CHECKING:`) or "importlib string" (a module named
    in ``importlib.import_module("miniature.x")`` or in a ``"miniature.x:function"`` string
    imported on first use, as the registry's compare functions are)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found: dict[str, list[tuple[str, list[str], str]]] = {name: [] for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node, kind in nodes_with_kind(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.level == 0
                and node.module.split(".")[0] == "miniature"
            ):
                names = [alias.name for alias in node.names]
                # `from miniature.core import settings` imports the module miniature.core.settings
                submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in modules]
                targets = submodules or [node.module]
                for target in targets:
                    found[name].append((target, [] if submodules else names, kind))
            elif isinstance(node, ast.ImportFrom) and node.level:
                found[name].append((f"<relative import level {node.level}>", [], kind))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "miniature":
                        found[name].append((alias.name, [], kind))
            elif is_import_call(node) and node.args:
                target = string_value(node.args[0], constants)
                if target in modules:
                    found[name].append((target, [], "importlib string"))
            elif isinstance(node, (ast.Constant, ast.JoinedStr)):
                text = string_value(node, constants) or ""
                target, colon, attribute = text.partition(":")
                if colon and target in modules and attribute.isidentifier():
                    found[name].append((target, [attribute], "importlib string"))
    return found


def imports() -> dict[str, list[tuple[str, list[str]]]]:
    """module -> [(imported miniature module, names imported from it)], every runtime import
    in the file (module level and inside functions; not those under `if TYPE_CHECKING:`)."""
    return {m: [(t, names) for t, names, kind in found if kind == "import"] for m, found in edges().items()}


def test_no_relative_imports() -> None:
    relative = {m for m, edges in imports().items() for target, _ in edges if target.startswith("<")}
    assert not relative, relative


def test_no_import_cycle() -> None:
    """No cycle, counted strictly: an import under `if TYPE_CHECKING:` or a module named in an
    importlib string is an edge too (the type checker and the first use import them)."""
    modules = edges()
    kinds: dict[tuple[str, str], set[str]] = {}
    for m, found in modules.items():
        for t, _, kind in found:
            if t in modules and t != m:
                kinds.setdefault((m, t), set()).add(kind)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m, t in kinds:
        graph[m].add(t)
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
        for nxt in sorted(graph[node]):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    # each cycle with the edges inside it and their kinds: what to cut
    described = [
        "\n".join(
            [f"cycle among {len(c)} modules:"]
            + [f"  {m} -> {t} ({', '.join(sorted(kinds[m, t]))})" for m in c for t in sorted(graph[m]) if t in c]
        )
        for c in cycles
    ]
    assert not cycles, "\n".join(described)


def test_no_private_name_imported_from_another_module() -> None:
    private = [
        (m, t, n)
        for m, edges in imports().items()
        for t, names in edges
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert not private, private


def test_data_flows_one_way() -> None:
    forbidden = {
        "miniature.core": ("miniature.plugin", "miniature.reports", "miniature.tools"),
        "miniature.reports": ("miniature.plugin", "miniature.tools"),
    }
    wrong = [
        (m, t)
        for m, edges in imports().items()
        for t, _ in edges
        for layer, banned in forbidden.items()
        if m.startswith(layer) and t.startswith(banned)
    ]
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
    private = sorted(
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "_pytest")
        or (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "_pytest" for a in node.names))
    )
    assert not private, private
