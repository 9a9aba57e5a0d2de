"""The setup scripts install what building the package needs on a minimal Debian."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def listed(script: str) -> set[str]:
    """The packages of a setup script's ``packages=(...)`` array."""
    text = (REPO / "scripts" / script).read_text()
    match = re.search(r"^packages=\(([^)]*)\)", text, re.M)
    assert match, f"no packages=(...) in {script}"
    return set(match.group(1).split())


def build_depends() -> set[str]:
    control = (REPO / "debian" / "control").read_text()
    field = re.search(r"^Build-Depends:(.*?)^\S", control, re.M | re.S)
    assert field
    names = set()
    for item in field.group(1).split(","):
        name = re.split(r"[\s(:]", item.strip(), maxsplit=1)[0]
        if name:
            names.add(name)
    return names


def test_packaging_setup_installs_every_build_dependency_and_build_essential() -> None:
    # dpkg-buildpackage checks build-essential:native too, which a minimal Debian lacks.
    wanted = build_depends() | {"build-essential"}
    assert {"debhelper-compat", "dh-python"} <= build_depends()
    wanted = {"debhelper" if name == "debhelper-compat" else name for name in wanted}
    wanted.discard("python3")  # present wherever the scripts run
    assert wanted - listed("setup-packaging.sh") == set()
