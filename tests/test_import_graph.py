"""The modules of `sat_tf` import each other without a cycle, lazy (function-level) imports included.

A module-level circle fails at import time in some orders; a function-level import that closes a circle only hides
it. The graph is read from the source with `ast`: every `import sat_tf.x`, `from sat_tf.x import name` and relative
`from .x import name` anywhere in a module (module body, functions, methods) is an edge to the module it names;
`from package import name` is an edge to the submodule `package.name` where that is a module, else to the package's
`__init__`. The implicit import of parent packages is not an edge (every module would otherwise depend on
`sat_tf/__init__.py` and each package's `__init__` would close a circle with its own submodules).
"""

from __future__ import annotations

import ast
import pathlib

import sat_tf

ROOT = pathlib.Path(sat_tf.__file__).resolve().parent
PACKAGE = "sat_tf"


def module_names(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, pathlib.Path]:
    """{dotted module name: source file} for every module of the package (`__init__.py` named by its package)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([package] + parts)] = path
    return names


def _resolve(name: str, modules: dict[str, pathlib.Path]) -> str | None:
    """The longest prefix of dotted `name` that is a module of the package (None outside it)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """The package's modules that `module` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: level 1 is this module's package (a package's own name for its __init__)
                base = module.split(".")
                keep = len(base) - node.level + (1 if is_package else 0)
                base = ".".join(base[:keep])
                stem = f"{base}.{node.module}" if node.module else base
            else:
                stem = node.module
            # `from package import module` imports the submodule; `from module import name` the module itself
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != module:
                found.add(resolved)
    return found


def import_graph(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """{module: the package modules it imports} for every module of the package."""
    modules = module_names(root, package)
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (iterative depth-first search, nodes in sorted order)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph.get(child, ()))))
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_sees_lazy_relative_and_from_package_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import b\n")
    (package / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("from ..c import name\n")
    (package / "c.py").write_text("import pkg.a\n")
    graph = import_graph(package, "pkg")
    assert graph == {"pkg": set(), "pkg.a": {"pkg.sub.b"}, "pkg.c": {"pkg.a"}, "pkg.sub": {"pkg.sub.b"},
                     "pkg.sub.b": {"pkg.c"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    (package / "c.py").write_text("import json\n")
    assert find_cycle(import_graph(package, "pkg")) is None
