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


# The runtime package's parts, lowest first (docs/development.md draws them): a part may
# import its own modules and those of the parts before it, never one after it.
PARTS: dict[str, tuple[str, ...]] = {
    "base": (
        "libvirt_bridge", "errors", "mapping", "config", "log", "journal", "files", "plainos",
        "discovery", "screening", "schema", "domxml", "connection",
    ),
    "hook path": (
        "hook", "dispatch", "hookcall", "firing", "fastpath", "sync", "asyncq", "jobs", "inbox",
        "runner", "per_device", "events", "devices", "state", "detached", "spawn_nogil",
        "records", "reporting", "history", "metrics", "notify",
    ),
    "verbs": ("verbs", "device_verbs", "props"),
    "host setup": (
        "installation", "launcher", "logrotate", "daemons", "confinement", "catalogue",
        "cockpit", "service",
    ),
    "listener": (
        "listener", "eventconnection", "deviceevents", "devicewatch", "tracker", "drainer",
        "serial",
    ),
}  # fmt: skip
PART_OF = {
    (m if m == "libvirt_bridge" else f"libvirt_bridge.{m}"): part
    for part, modules in PARTS.items()
    for m in modules
}


def test_every_module_of_the_core_has_its_part() -> None:
    core = {m for m in GRAPH if not m.startswith((*CLI, "libvirt_bridge.compat"))}
    assert sorted(core - set(PART_OF)) == []
    assert sorted(set(PART_OF) - core) == []


def test_a_part_imports_no_part_after_it() -> None:
    order = list(PARTS)
    upward = sorted(
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        if m in PART_OF
        for t in targets
        if t in PART_OF and order.index(PART_OF[t]) > order.index(PART_OF[m])
    )
    assert upward == []


def test_no_class_of_the_package_is_over_300_lines() -> None:
    """A longer class does more than one thing: the listener split along its seams."""
    sizes = {
        f"{module_name(path)}.{node.name}": node.end_lineno - node.lineno + 1
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None
    }
    assert {name: size for name, size in sizes.items() if size > 300} == {}
