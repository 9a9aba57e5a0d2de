"""The documents stay true: the CLI reference, the tests they cite, their links."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FAILS = DOCS / "how-the-bridge-fails.md"
SECURITY = DOCS / "security.md"
LINKED = [ROOT / "README.md", ROOT / "hooks.d" / "README.md", *sorted(DOCS.glob("*.md"))]

TEST_REF = re.compile(r"`(tests/[\w/.-]+\.py)::(\w+)(?:\[[^\]`]*\])?`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")


def _cli_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "cli_reference", ROOT / "scripts" / "cli_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_up_to_date() -> None:
    cli_reference = _cli_reference()
    path = cli_reference.CLI_MD
    stale = f"{path.relative_to(ROOT)} is out of date: run {cli_reference.COMMAND}"
    assert path.exists(), stale
    assert path.read_text() == cli_reference.render(), stale


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


@pytest.mark.parametrize("doc", [FAILS, SECURITY], ids=lambda p: p.name)
def test_every_test_named_in_the_guarantees_exists(doc: Path) -> None:
    text = doc.read_text()
    refs = TEST_REF.findall(text)
    assert len(refs) == text.count("::"), "a reference not of the form `tests/....py::test_x`"
    missing = []
    for file, name in refs:
        path = ROOT / file
        if not path.is_file():
            missing.append(f"{file}::{name} (no such file)")
        elif name not in _functions(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"{doc.relative_to(ROOT)} names tests that do not exist: {missing}"


def test_security_lists_the_codes_names() -> None:
    from libvirt_bridge.screening import UNSAFE_NAMES

    groups: dict[str, list[str]] = {}
    for pattern, why in UNSAFE_NAMES:
        groups.setdefault(why, []).append(f"`{pattern}`")
    rows = [f"| {', '.join(names)} | {why} |" for why, names in groups.items()]
    table = "\n".join(["| names | why they never reach a script |", "|---|---|", *rows])
    assert table in SECURITY.read_text(), f"docs/security.md's list is not the code's:\n{table}"


def test_the_environment_libvirt_gives_hooks_is_the_codes_in_one_place() -> None:
    from libvirt_bridge.runner import LIBVIRT_PASSED_ENV

    names = ", ".join(f"`{name}`" for name in LIBVIRT_PASSED_ENV)
    listed = f"(`LC_ALL=C` and, when libvirt's daemon has them, {names})"
    text = " ".join((ROOT / "docs" / "hook-authors.md").read_text().split())
    assert listed in text, f"docs/hook-authors.md#environment should read {listed}"
    # The other documents link there rather than keep a list of their own.
    for path in (ROOT / "README.md", ROOT / "hooks.d" / "README.md", *DOCS.glob("*.md")):
        if path.name == "hook-authors.md":
            continue
        for line in path.read_text().splitlines():
            assert not re.search(r"environment.*\bPATH\b.*\bHOME\b", line), (
                f"{path.relative_to(ROOT)} lists hooks' environment: {line!r}"
            )


def test_the_device_classes_of_each_per_device_event_are_the_codes() -> None:
    from libvirt_bridge.mapping import COMPANION_TAGS

    text = (DOCS / "hook-authors.md").read_text()
    rows = re.findall(r"^\| ([a-z_, ]+(?:device_migrate events)?) \| (`<.*) \|$", text, re.M)
    documented: dict[str, set[str]] = {}
    for events, tags in rows:
        names = set(re.findall(r"`<(\w+)>`", tags))
        for event in events.split(", "):
            if event == "the four device_migrate events":
                for migrate in (e for e in COMPANION_TAGS if "device_migrate" in e):
                    documented[migrate] = names
            else:
                documented[event] = names
    assert documented == {event: set(tags) for event, tags in COMPANION_TAGS.items()}


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    text = FENCE.sub("", path.read_text())
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        slug = base = _slug(heading)
        n = 0
        while slug in anchors:
            n += 1
            slug = f"{base}-{n}"
        anchors.add(slug)
    return anchors


def _links(path: Path) -> list[str]:
    text = CODE.sub("", FENCE.sub("", path.read_text()))
    return LINK.findall(text)


def test_relative_links_resolve() -> None:
    broken = []
    for doc in LINKED:
        for link in _links(doc):
            if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:, ...
                continue
            file, _, anchor = link.partition("#")
            target = (doc.parent / file).resolve() if file else doc
            where = f"{doc.relative_to(ROOT)}: {link}"
            if not target.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
                broken.append(f"{where} (no such heading)")
    assert not broken, broken
