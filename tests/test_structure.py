"""The package's shape: no import cycle, and the core imports nothing of the CLI.

Every import counts, at the top of a module or inside a function: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import libvirt_bridge

PACKAGE = Path(libvirt_bridge.__file__).parent
# The CLI layer: commands and what only they use. Everything else is the core.
CLI = ("libvirt_bridge.cli", "libvirt_bridge.commands", "libvirt_bridge.__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package's modules that the module at ``path`` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def cycles() -> list[list[str]]:
    """Each import cycle once, as the list of its modules."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str, path: list[str]) -> None:
        for target in sorted(GRAPH[node]):
            if target in path:
                cycle = path[path.index(target) :]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    found.append([*cycle, target])
            elif len(path) < 12:
                visit(target, [*path, target])

    for start in sorted(GRAPH):
        visit(start, [start])
    return found


def test_no_import_cycle() -> None:
    # A package's __init__ importing its own modules is no cycle of concern.
    real = [c for c in cycles() if not any(m.endswith("__init__") for m in c)]
    assert real == []


def test_the_core_imports_nothing_of_the_cli() -> None:
    core = [m for m in GRAPH if not m.startswith(CLI)]
    offenders = {m: sorted(t for t in GRAPH[m] if t.startswith(CLI)) for m in core}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_package_leaves_the_bench_alone() -> None:
    """What runs on a host never imports the bench (``libvirt_bridge_lab``), which a host's
    package does not carry; the CLI alone offers its commands where it is installed."""
    bench = {
        name
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for imported in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
        if imported.split(".")[0] == "libvirt_bridge_lab"
        for name in [module_name(path)]
    }
    assert bench == {"libvirt_bridge.cli"}
