"""Imports flow one way: no module of effnet_jax imports, directly or through others, a module
that imports it back (module-level and function-level imports alike, read with ``ast``)."""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(__file__), "..", "effnet_jax")


def module_name(path: str) -> str:
    name = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
    return name.removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """Each module's imports of effnet_jax modules; ``from package import submodule`` counts as
    the submodule (the package's ``__init__`` runs for any of its modules anyway)."""
    modules = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                modules[module_name(os.path.join(root, name))] = os.path.join(root, name)
    graph = {}
    for name, path in modules.items():
        imported = set()
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module in modules:
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
                imported |= submodules or {node.module}
                if len(submodules) < len(node.names):
                    imported.add(node.module)
        graph[name] = imported - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(name, path):
        if name in path:
            found.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        for imported in sorted(graph.get(name, ())):
            visit(imported, path + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    return found


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert "effnet_jax.fast.seam" in graph["effnet_jax.models.base"]  # the checker sees imports at all
    assert cycles(graph) == []


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
