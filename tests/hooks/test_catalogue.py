"""The catalogue (hooks.d) and `libvirt-bridge install --hooks`."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from libvirt_bridge import catalogue, mapping
from testing.harness import domain_xml
from testing.hooks import HOOKS_D
from testing.hosts import Host, tree

EXPECTED = {
    "audit": set(mapping.EVENTS),
    "cantmigrate": {"before_vm_migrate_source", "before_vm_migrate_destination"},
    "hugepages": {
        "before_vm_start",
        "before_vm_dehibernate",
        "before_vm_migrate_destination",
        "after_vm_destroy",
        "after_vm_hibernate",
        "after_vm_migrate_source",
    },
    "nicnet": {"before_device_create", "before_nic_hotplug"},
    "pincpu": {"before_vm_start"},
    "vfio": {
        "before_vm_start",
        "after_vm_destroy",
        "after_vm_hibernate",
        "after_vm_migrate_source",
    },
}


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_the_catalogue() -> None:
    assert catalogue.catalogue_dir() == str(HOOKS_D)
    hooks = catalogue.available()
    assert {name: set(hook.events) for name, hook in hooks.items()} == EXPECTED


def test_every_file_is_a_clean_script() -> None:
    for event in sorted(os.listdir(HOOKS_D)):
        directory = HOOKS_D / event
        if not directory.is_dir() or event == catalogue.PROPERTIES_DIR:
            continue
        assert event in mapping.EVENTS, f"hooks.d/{event} is not an event the bridge fires"
        for path in sorted(directory.iterdir()):
            assert re.fullmatch(r"[0-9]{2}_[a-z0-9]+", path.name), path
            assert os.access(path, os.X_OK), f"{path} is not executable"
            text = path.read_text()
            assert text.startswith(("#!/usr/bin/python3\n", "#!/bin/sh\n")), path
            assert "\r" not in text
            for word in ("GPL", "General Public", "Red Hat", "Copyright"):
                assert word not in text, f"{path} mentions {word!r}"
            if path.is_symlink():  # one script per hook, linked from its other events
                target = os.readlink(path)
                assert not os.path.isabs(target) and (directory / target).is_file()


def test_every_hook_is_documented() -> None:
    readme = (HOOKS_D / "README.md").read_text()
    for name, hook in catalogue.available().items():
        assert f"### {name}" in readme, name
        assert hook.summary, name
        for event in hook.events:
            if name != "audit":
                assert event in readme, (name, event)
        text = Path(next(iter(hook.files.values()))).read_text()
        for setting in sorted(set(re.findall(r"LIBVIRT_BRIDGE_[A-Z_]+", text))):
            assert setting in readme, (name, setting)


def test_the_readme_of_the_project_points_to_it() -> None:
    assert "hooks.d/README.md" in (HOOKS_D.parent / "README.md").read_text()


def test_list(host: Host) -> None:
    status, out, err = host.install("--hooks", "list")
    assert (status, err) == (0, "")
    for name in EXPECTED:
        assert re.search(rf"^{name} +\S", out, re.M), name
    assert f"events: every event ({len(mapping.EVENTS)})" in out
    assert "events: before_vm_migrate_destination, before_vm_migrate_source" in out
    assert not host.hooks.exists()  # nothing installed


def test_unknown_names_are_refused_with_the_list(host: Host) -> None:
    before = tree(host.root)
    status, out, err = host.install("--hooks", "pincpu", "nosuch", "other")
    assert (status, out) == (1, "")
    assert err == (
        "libvirt-bridge install: error: no shipped hook named 'nosuch', 'other'; the shipped "
        "hooks are: audit, cantmigrate, hugepages, nicnet, pincpu, vfio (`libvirt-bridge install "
        "--hooks list` describes them)\n"
    )
    assert tree(host.root) == before


def test_list_takes_no_names(host: Host) -> None:
    status, _, err = host.install("--hooks", "list", "pincpu")
    assert status == 1
    assert "--hooks list takes no hook names" in err


def test_install_copies_every_event_of_the_named_hooks(host: Host) -> None:
    status, out, err = host.install("--hooks", "cantmigrate", "hugepages")
    assert status == 0, err
    installed = sorted(
        str(p.relative_to(host.hooks_root)) for p in host.hooks_root.glob("*/*") if p.is_file()
    )
    assert installed == sorted(
        [f"{e}/10_cantmigrate" for e in EXPECTED["cantmigrate"]]
        + [f"{e}/90_hugepages" for e in EXPECTED["hugepages"]]
    )
    hooks = catalogue.available()
    for relative in installed:
        path = host.hooks_root / relative
        st = path.lstat()
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
        assert (st.st_uid, st.st_gid) == (0, 0)
        event, name = relative.split("/")
        hook = hooks[name.split("_", 1)[1]]
        assert path.read_bytes() == Path(hook.files[event]).read_bytes()
        assert f"installed {path} (hook {hook.name})\n" in out
    # The bridge runs them: an incoming migration of a cantmigrate guest is refused.
    xml = domain_xml("vm1", properties={"cantmigrate": "1"})
    result = host.bridge.qemu("vm1", "migrate", "begin", xml)
    assert result.returncode == 1
    assert b"must not be migrated" in result.stderr
    # The bridge's own check finds nothing wrong with them.
    _, out, _ = host.cmd("status")
    assert f"ok: hooks root {host.hooks_root}: every script would run" in out


def test_the_shipped_hooks_declare_their_properties_for_the_schema(host: Host) -> None:
    status, out, err = host.install("--hooks", "pincpu", "nicnet", "hugepages")
    assert status == 0, err
    dropins = host.root / "bridge" / "properties.d"
    assert sorted(p.name for p in dropins.iterdir()) == ["nicnet.toml", "pincpu.toml"]
    for name in ("pincpu", "nicnet"):
        path = dropins / f"{name}.toml"
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o644 and (st.st_uid, st.st_gid) == (0, 0)
        assert f"installed {path} (hook {name}'s properties)" in out
    # With a schema in force that declares nothing itself, the shipped hooks keep working:
    # pincpu still gets its property, and a malformed one never reaches it.
    with host.config.open("a") as f:
        f.write("[properties]\n")
    start = host.bridge.hooks / "before_vm_start"
    probe = start / "60_probe"
    probe.write_text(f'#!/bin/sh\necho "pincpu=$pincpu other=$other" > {host.root}/seen\n')
    probe.chmod(0o755)
    xml = domain_xml("vm1", properties={"pincpu": "0-1", "other": "x"})
    assert host.bridge.qemu("vm1", "prepare", "begin", xml).returncode == 0
    assert (host.root / "seen").read_text() == "pincpu=0-1 other=\n"
    xml = domain_xml("vm1", properties={"pincpu": "0-1; reboot"})
    assert host.bridge.qemu("vm1", "prepare", "begin", xml).returncode == 0
    assert (host.root / "seen").read_text() == "pincpu= other=\n"
    assert "its value does not match the schema's regular expression" in host.bridge.log_text()


def test_install_twice_and_dry_run(host: Host) -> None:
    status, out, _ = host.install("--hooks", "pincpu", "--dry-run")
    assert status == 0
    target = host.hooks_root / "before_vm_start" / "50_pincpu"
    assert f"[dry run] installed {target} (hook pincpu)" in out
    assert not target.exists()
    host.install("--hooks", "pincpu")
    before = tree(host.root)
    status, out, _ = host.install("--hooks", "pincpu")
    assert status == 0
    assert f"up to date: {target} (hook pincpu)" in out
    assert tree(host.root) == before
    target.write_text("#!/bin/sh\nexit 0\n")  # changed by hand: put back
    status, out, _ = host.install("--hooks", "pincpu")
    assert f"updated {target} (hook pincpu)" in out
    assert target.read_bytes() == (HOOKS_D / "before_vm_start" / "50_pincpu").read_bytes()


def test_no_hook_without_hooks(host: Host) -> None:
    assert host.install()[0] == 0
    assert [p for p in host.hooks_root.glob("*/*")] == []


def test_without_a_catalogue(host: Host, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(catalogue, "INSTALLED_CATALOGUE", str(tmp_path / "none1"))
    monkeypatch.setattr(catalogue, "SOURCE_CATALOGUE", str(tmp_path / "none2"))
    status, _, err = host.cmd("install", "--no-listener", "--hooks", "audit")
    assert status == 1
    assert "the shipped hooks (hooks.d) are not part of this installation" in err


def test_an_installed_wheel_layout_is_found_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wheel = tmp_path / "shipped_hooks"
    (wheel / "before_vm_start").mkdir(parents=True)
    (wheel / "before_vm_start" / "50_pincpu").write_text("#!/bin/sh\n# pincpu: a copy\n")
    monkeypatch.setattr(catalogue, "INSTALLED_CATALOGUE", str(wheel))
    assert catalogue.catalogue_dir() == str(wheel)
    assert catalogue.available()["pincpu"].summary == "a copy"
