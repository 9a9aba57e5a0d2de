"""check-props, and props under the trust boundary: what the domains carry that scripts
never get, against libvirt's test driver (conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from libvirt_bridge import props
from testing.hosts import run

from .conftest import TINY, URI

HOSTILE = (
    '<metadata><ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">'
    "<ovirt-vm:custom><ovirt-vm:LD_PRELOAD>/tmp/x.so</ovirt-vm:LD_PRELOAD>"
    "<ovirt-vm:label>web</ovirt-vm:label><ovirt-vm:odd-name>1</ovirt-vm:odd-name>"
    "</ovirt-vm:custom>"
    '<ovirt-vm:device mac_address="AA:BB:CC:DD:EE:01"><ovirt-vm:custom>'
    "<ovirt-vm:PATH>/tmp/evilbin</ovirt-vm:PATH><ovirt-vm:extnet>br0</ovirt-vm:extnet>"
    "</ovirt-vm:custom></ovirt-vm:device>"
    "</ovirt-vm:vm></metadata>"
)
NIC = "<devices><interface type='user'><mac address='aa:bb:cc:dd:ee:01'/></interface></devices>"


@pytest.fixture
def hostile(testdrv: libvirt.virConnect) -> Iterator[libvirt.virDomain]:
    dom = testdrv.defineXML(TINY.format("hostile", HOSTILE + NIC))
    yield dom
    dom.undefine()


def schema_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(f'libvirt_uri = "{URI}"\nproperties_dir = "{tmp_path}/none"\n{text}')
    return str(path)


def test_check_props_lists_each_refused_property_with_its_fix(
    hostile: libvirt.virDomain, tmp_path: Path
) -> None:
    config = schema_config(tmp_path, "")
    status, out, err = run("check-props", "--config", config)
    assert status == 1
    assert out.splitlines() == [
        "hostile: LD_PRELOAD=/tmp/x.so (persistent) is refused: changes what the dynamic "
        "loader or the C library loads or does in every program",
        "  fix: libvirt-bridge props hostile unset LD_PRELOAD  (or declare it in the schema, "
        "if it is meant for scripts)",
        "hostile: odd-name=1 (persistent) is refused: not a plain name: letters, digits and "
        "_, not starting with a digit",
        "  fix: libvirt-bridge props hostile unset odd-name  (or declare it in the schema, if "
        "it is meant for scripts)",
        "hostile NIC aa:bb:cc:dd:ee:01: PATH=/tmp/evilbin (persistent) is refused: changes "
        "where programs are looked up, or where files are read and written",
        "  fix: libvirt-bridge props hostile --device aa:bb:cc:dd:ee:01 unset PATH  (or "
        "declare it in the schema, if it is meant for scripts)",
    ]
    assert (
        err == "libvirt-bridge check-props: 3 properties are refused: hook scripts never get them\n"
    )
    status, out, _ = run("check-props", "--config", config, "hostile", "--json")
    assert status == 1
    found = json.loads(out)
    assert [(f["device"], f["scope"], f["name"]) for f in found] == [
        (None, "vm", "LD_PRELOAD"),
        (None, "vm", "odd-name"),
        ("NIC aa:bb:cc:dd:ee:01", "interface", "PATH"),
    ]
    assert found[0]["definitions"] == ["persistent"]


def test_check_props_applies_the_schema(hostile: libvirt.virDomain, tmp_path: Path) -> None:
    config = schema_config(tmp_path, "[properties.vm]\nlabel = '[0-9]+'\n")
    status, out, _ = run("check-props", "--config", config, "hostile", "--json")
    assert status == 1
    names = {(f["scope"], f["name"]): f["why"] for f in json.loads(out)}
    assert names[("vm", "label")] == (
        "its value does not match the schema's regular expression '[0-9]+'"
    )
    assert names[("interface", "extnet")] == "not declared for a <interface> in the property schema"


def test_check_props_of_clean_domains_exits_0(testdrv: libvirt.virConnect, tmp_path: Path) -> None:
    config = schema_config(tmp_path, "")
    assert run("props", "--config", config, "test", "set", "pincpu=0")[0] == 0
    status, out, err = run("check-props", "--config", config)
    assert (status, err) == (0, "")
    assert out.endswith("domain(s) checked: every custom property reaches the scripts\n")
    assert run("check-props", "--config", config, "--json")[1] == "[]\n"
    status, _, err = run("check-props", "--config", config, "nosuchvm")
    assert status == 1 and "no domain 'nosuchvm'" in err


def test_get_marks_what_scripts_never_get_and_unset_removes_it(
    hostile: libvirt.virDomain, tmp_path: Path
) -> None:
    config = schema_config(tmp_path, "")
    status, out, err = run("props", "--config", config, "hostile", "get")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "# refused: LD_PRELOAD=/tmp/x.so (changes what the dynamic loader or the C library "
        "loads or does in every program)",
        "label=web",
        "# refused: odd-name=1 (not a plain name: letters, digits and _, not starting with a "
        "digit)",
    ]
    status, out, err = run("props", "--config", config, "hostile", "get", "--json")
    assert json.loads(out) == {"label": "web"}
    assert "LD_PRELOAD=/tmp/x.so is refused, so scripts never get it" in err
    device = ("--device", "aa:bb:cc:dd:ee:01")
    assert run("props", "--config", config, "hostile", *device, "get")[1] == (
        "# refused: PATH=/tmp/evilbin (changes where programs are looked up, or where files "
        "are read and written)\nextnet=br0\n"
    )
    # A refused name, even one that is no plain name, can be removed.
    assert run("props", "--config", config, "hostile", "unset", "LD_PRELOAD", "odd-name")[0] == 0
    assert run("props", "--config", config, "hostile", *device, "unset", "PATH")[0] == 0
    assert run("check-props", "--config", config, "hostile")[0] == 0


def test_set_refuses_what_the_schema_refuses_quoting_its_regex(
    testdrv: libvirt.virConnect, tmp_path: Path
) -> None:
    config = schema_config(
        tmp_path, "[properties.vm]\npincpu = '[0-9,-]+'\n[properties.interface]\nextnet = '.+'\n"
    )
    status, out, err = run("props", "--config", config, "test", "set", "pincpu=1-4;x")
    assert (status, out) == (2, "")
    assert err == (
        "libvirt-bridge props: error: pincpu='1-4;x' is refused: its value does not match the "
        f"schema's regular expression '[0-9,-]+' (the schema is [properties] in {config}, and "
        "the files of its properties_dir)\n"
    )
    status, _, err = run("props", "--config", config, "test", "set", "label=x")
    assert status == 2 and "label='x' is refused: not declared for the VM" in err
    assert run("props", "--config", config, "test", "set", "pincpu=1-4")[0] == 0
    nic = ("--device", "aa:bb:cc:dd:ee:ff")  # the test driver's NIC
    assert run("props", "--config", config, "test", *nic, "set", "extnet=br0")[0] == 0
    status, _, err = run("props", "--config", config, "test", *nic, "set", "pincpu=1")
    assert status == 2 and "not declared for a <interface>" in err
    dom = testdrv.lookupByName("test")
    assert props.read(dom)["persistent"] == {"pincpu": "1-4"}


def test_with_connect_a_broken_config_leaves_only_the_names_judged(
    testdrv: libvirt.virConnect, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("hooks_dirs = 3\n")
    status, _, err = run("props", "--config", str(broken), "test", "get")
    assert status == 1 and "hooks_dirs must be a list of strings" in err
    status, _, err = run(
        "props", "--config", str(broken), "--connect", URI, "test", "set", "label=x"
    )
    assert status == 0
    assert "the property schema is not applied" in err
    status, _, err = run(
        "props", "--config", str(broken), "--connect", URI, "test", "set", "PATH=/x"
    )
    assert status == 2 and "property name 'PATH' is refused" in err
