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


def test_the_readme_says_what_setup_installs_and_builds() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text()
    readme = " ".join((REPO / "README.md").read_text().split())
    said = readme[readme.index("The first command (`scripts/setup.sh`") :]
    said = said[: said.index("The demo then")]
    assert "bash scripts/setup-packaging.sh" in setup and "`scripts/setup-packaging.sh`" in said
    assert "libvirt and QEMU" in said and "venv" in said
    # Each cached root setup.sh builds, by what it is, with the disk it takes.
    builds = re.findall(r"^[^#\n]*\bbuild ([^>\n]+?)\s*>", setup, re.M)
    assert builds, "setup.sh builds no cached root?"
    for name in " ".join(builds).split():
        release = re.fullmatch(r"debian(\d+)", name)
        what = rf"Debian (\d+ and )?{release.group(1)}\b" if release else rf"libvirt {name}\b"
        assert re.search(what, said), f"the README does not say setup builds {name}"
    assert "/var/cache/libvirt-bridge/roots" in said and re.search(r"\d+(\.\d+)? GB", said)
