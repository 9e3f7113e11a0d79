"""The import graph of src/scorelab, read with ast: every import counts, at module level or
inside a function (a lazy import that closes a cycle is still a cycle).

(1) no cycles among scorelab's modules; (2) no private name (leading underscore) imported
from another module; (3) the core packages never reach the application layer (runs, the
CLI, build, the demo, compare, report), directly or through other modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import scorelab

ROOT = Path(scorelab.__file__).parent
CORE = ("scorelab.processes", "scorelab.samplers", "scorelab.objectives", "scorelab.nn")
CORE += ("scorelab.data", "scorelab.numerics", "scorelab.likelihood", "scorelab.evaluation")
APPLICATION = ("scorelab.runs", "scorelab.cli", "scorelab.build", "scorelab.demo")
APPLICATION += ("scorelab.reports",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the module's file:
    `from pkg import sub` names the submodule pkg.sub when there is one."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [a.name for a in node.names]
            subs = [n for n in names if f"{base}.{n}" in MODULES]
            out += [(f"{base}.{n}", [], node.lineno) for n in subs]
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                out.append((base, rest, node.lineno))
    return [(m, names, line) for m, names, line in out if m in MODULES]


def _edges(module: str) -> set[str]:
    """What importing the module's file runs: each imported module, and each package above it
    that does not hold the importer (its __init__ runs first: a cycle through it is real)."""
    out = set()
    for target, _, _ in _imports(module):
        out.add(target)
        parts = target.split(".")
        for i in range(2, len(parts)):
            package = ".".join(parts[:i])
            if package in MODULES and not _within(module, (package,)):
                out.add(package)
    return out - {module}


GRAPH = {m: sorted(_edges(m)) for m in MODULES}


def _find_cycle() -> list[str] | None:
    """One cycle of GRAPH as a path [a, b, ..., a], or None (depth-first, three colours)."""
    colour = dict.fromkeys(GRAPH, 0)  # 0 unseen, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = 1
        stack.append(m)
        for t in GRAPH[m]:
            if colour[t] == 1:
                return stack[stack.index(t) :] + [t]
            if colour[t] == 0 and (cycle := visit(t)):
                return cycle
        stack.pop()
        colour[m] = 2
        return None

    for m in GRAPH:
        if colour[m] == 0 and (cycle := visit(m)):
            return cycle
    return None


def _path(start: str, goal) -> list[str] | None:
    """The shortest import path from start to a module satisfying goal, or None."""
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for m in frontier:
            for t in GRAPH[m]:
                if t in previous:
                    continue
                previous[t] = m
                if goal(t):
                    path = [t]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return path[::-1]
                following.append(t)
        frontier = following
    return None


def test_the_graph_is_read():
    assert "scorelab.runs.base" in GRAPH and "scorelab.cli" in GRAPH
    assert "scorelab.runs.base" in GRAPH["scorelab.runs.diffusion"]
    assert "scorelab.processes.ddpm" in GRAPH["scorelab.likelihood"]


def test_no_import_cycles():
    cycle = _find_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_names_imported_across_modules():
    found = [
        f"{MODULES[m].relative_to(ROOT.parent)}:{line}: from {target} import {name}"
        for m in MODULES
        for target, names, line in _imports(m)
        if target != m
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_core_packages_never_import_the_application_layer():
    found = []
    for m in MODULES:
        if _within(m, CORE):
            path = _path(m, lambda t: _within(t, APPLICATION))
            if path is not None:
                found.append(" -> ".join(path))
    assert not found, "core modules reaching the application layer:\n" + "\n".join(found)
