"""The trust boundary: what of a domain's metadata reaches root's hook scripts.

Unit tests of ``screening``, then the hook calls as libvirt makes them (the installed
launcher, an environment like libvirt's) with hostile metadata, then generated names and
values through the VM's and a device's events.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libvirt_bridge.schema import Schema
from libvirt_bridge.screening import VM, name_refusal, screen
from testing.harness import LIBVIRT_ENV, Bridge, domain_xml, escape, ovirt_vm
from testing.probes import Record, env_of

# What the product must keep from scripts, as its requirements list it (and glibc's
# unsecvars.h), written out here rather than taken from the code under test.
MUST_REFUSE = [
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "LD_DEBUG_OUTPUT",
    "PATH",
    "IFS",
    "ENV",
    "BASH_ENV",
    "BASH_FUNC_x",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "CDPATH",
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TMPDIR",
    "TZDIR",
    "HOME",
    "LC_ALL",
    "LC_CTYPE",
    "LANG",
    "LANGUAGE",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "PERL5OPT",
    "PERL5LIB",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
    "JAVA_TOOL_OPTIONS",
    "GIT_SSH_COMMAND",
    "_hook_domxml",
    "_hook_json",
    "vmId",
    "LIBVIRT_BRIDGE_CONFIG",
    "LIBVIRT_BRIDGE_RUNNING_LEGACY",
    "LIBVIRT_LOG_OUTPUTS",
    "OPENSSL_CONF",
    "http_proxy",
    "HTTPS_PROXY",
]
ORDINARY = ["pincpu", "extnet", "sap_agent", "qemu_cmdline", "hugepages", "label", "Path", "a"]


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MUST_REFUSE)
def test_names_that_change_how_programs_run_are_refused(name: str) -> None:
    why = name_refusal(name)
    assert why is not None and why.startswith(("changes ", "set by libvirt-bridge"))


@pytest.mark.parametrize("name", ORDINARY)
def test_ordinary_names_pass(name: str) -> None:
    assert name_refusal(name) is None


@pytest.mark.parametrize("name", ["a-b", "a.b", "naïve", "1abc", "", "a b", "BASH_FUNC_f%%"])
def test_names_that_are_not_plain_are_refused(name: str) -> None:
    assert name_refusal(name) == (
        "not a plain name: letters, digits and _, not starting with a digit"
    )


def test_screen_keeps_vdsms_order_and_judges_each_scope() -> None:
    vm = {"extnet": "vm-wins", "PATH": "/tmp/evil", "owner": "ops"}
    nic = {"extnet": "br-a", "LD_PRELOAD": "/tmp/x.so", "vlan": "7"}
    screened = screen(vm, None, nic, "interface")
    assert screened.accepted == {"extnet": "vm-wins", "vlan": "7", "owner": "ops"}
    assert [(r.scope, r.name) for r in screened.refused] == [
        ("interface", "LD_PRELOAD"),
        (VM, "PATH"),
    ]
    assert screened.refused[1].describe() == (
        "custom property PATH (of the VM) refused: changes where programs are looked up, or "
        "where files are read and written"
    )
    schema = Schema({VM: {"owner": [".*"]}, "interface": {"extnet": ["br-.*"]}})
    screened = screen(vm, schema, nic, "interface")
    assert screened.accepted == {"extnet": "br-a", "owner": "ops"}
    assert {r.name for r in screened.refused} == {"LD_PRELOAD", "vlan", "PATH", "extnet"}


def test_an_entity_in_the_xml_is_never_expanded(tmp_path: Path) -> None:
    from libvirt_bridge import domxml

    secret = tmp_path / "secret"
    secret.write_text("root's secret")
    xml = (
        f'<!DOCTYPE domain [<!ENTITY e SYSTEM "file://{secret}">]>'
        '<domain><metadata><o:vm xmlns:o="http://ovirt.org/vm/1.0"><o:custom>'
        "<o:label>&e;</o:label></o:custom></o:vm></metadata></domain>"
    ).encode()
    props = domxml.properties_of(xml)
    assert "secret" not in props.get("label", "")


# -- through the hook, as libvirt calls it -------------------------------------------------

HOSTILE = {
    "LD_PRELOAD": "/nonexistent/evil.so",
    "PATH": "",  # filled in with a directory of a fake `env`
    "BASH_ENV": "",  # filled in with a file that would leave a mark
    "PYTHONSTARTUP": "/nonexistent/x.py",
    "GCONV_PATH": "/nonexistent",
    "vmId": "not-the-uuid",
    "pincpu": "0-1",
}
# A bash script that runs `env` by name: PATH decides which env it runs, BASH_ENV what
# bash sources first.
BASH_PROBE = """#!/bin/bash
env -0 > {out}
"""


def hostile(tmp_path: Path) -> dict[str, str]:
    evil = tmp_path / "evilbin"
    evil.mkdir()
    mark = tmp_path / "mark"
    (evil / "env").write_text(f"#!/bin/sh\ntouch {mark}\n")
    (evil / "env").chmod(0o755)
    sourced = tmp_path / "bash_env.sh"
    sourced.write_text(f"touch {mark}\n")
    return dict(HOSTILE, PATH=str(evil), BASH_ENV=str(sourced))


def env_seen(bridge: Bridge, tmp_path: Path, event: str, xml: bytes) -> dict[str, str]:
    """The environment a bash script of ``event`` ran with, once libvirt's prepare of
    ``xml`` fired it; no hostile PATH or BASH_ENV (:func:`hostile`) may have taken effect."""
    out = tmp_path / "env.out"
    bridge.script(event, "50_env", BASH_PROBE.format(out=out))
    assert bridge.qemu("vm1", "prepare", "begin", xml).returncode == 0
    assert not (tmp_path / "mark").exists(), "a metadata-set PATH or BASH_ENV took effect"
    pairs = out.read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if p)


def with_a_nic(metadata: str) -> bytes:
    """A domain XML with ``metadata`` and the NIC 52:54:00:00:00:01."""
    extra = (
        f"<metadata>{metadata}</metadata><devices><interface type='bridge'>"
        "<mac address='52:54:00:00:00:01'/><source bridge='br0'/></interface></devices>"
    )
    return domain_xml("vm1", extra=extra)


def refusal_lines(bridge: Bridge, event: str) -> list[str]:
    return [
        line
        for line in bridge.log_text().splitlines()
        if f"{event} domain=" in line and " refused: " in line and "custom property" in line
    ]


def test_metadata_never_sets_how_a_before_vm_start_script_runs(
    bridge: Bridge, tmp_path: Path
) -> None:
    props = hostile(tmp_path)
    xml = domain_xml("vm1", properties={k: escape(v) for k, v in props.items()})
    env = env_seen(bridge, tmp_path, "before_vm_start", xml)
    for name in ("LD_PRELOAD", "BASH_ENV", "PYTHONSTARTUP", "GCONV_PATH"):
        assert name not in env, name
    assert env["PATH"] == LIBVIRT_ENV["PATH"]
    assert env["vmId"] != "not-the-uuid"
    assert env["pincpu"] == "0-1", "an ordinary property still arrives unchanged"
    lines = refusal_lines(bridge, "before_vm_start")
    named = [re.search(r"custom property (\w+) ", line) for line in lines]
    refused = sorted(found[1] for found in named if found)
    assert refused == sorted(set(HOSTILE) - {"pincpu"}), "each named once, for the event"
    assert all("domain='vm1'" in line for line in lines)


def test_metadata_never_sets_how_a_before_device_create_script_runs(
    bridge: Bridge, tmp_path: Path
) -> None:
    props = hostile(tmp_path)
    metadata = ovirt_vm(
        {"owner": "ops", "LD_LIBRARY_PATH": "/nonexistent"},
        nics={"52:54:00:00:00:01": {**{k: escape(v) for k, v in props.items()}, "extnet": "b"}},
    )
    env = env_seen(bridge, tmp_path, "before_device_create", with_a_nic(metadata))
    for name in ("LD_PRELOAD", "LD_LIBRARY_PATH", "BASH_ENV", "PYTHONSTARTUP", "GCONV_PATH"):
        assert name not in env, name
    assert env["PATH"] == LIBVIRT_ENV["PATH"]
    assert (env["extnet"], env["pincpu"], env["owner"]) == ("b", "0-1", "ops")
    lines = refusal_lines(bridge, "before_device_create")
    assert any("custom property LD_PRELOAD (of the <interface>) refused" in x for x in lines)
    assert any("custom property LD_LIBRARY_PATH (of the VM) refused" in x for x in lines)


def test_an_async_events_scripts_are_screened_too(bridge: Bridge, tmp_path: Path) -> None:
    bridge.probe("after_vm_start")
    xml = domain_xml("vm1", properties={"LD_PRELOAD": "/nonexistent.so", "label": "web"})
    for op in ("prepare", "start", "started"):
        assert bridge.qemu("vm1", op, "begin", xml).returncode == 0
    [record] = bridge.wait_async(1)
    env = env_of(record)
    assert "LD_PRELOAD" not in env and env["label"] == "web"
    assert len(refusal_lines(bridge, "after_vm_start")) == 1


def test_a_declared_schema_refuses_undeclared_names_and_values_at_run_time(
    bridge: Bridge, tmp_path: Path
) -> None:
    dropins = tmp_path / "properties.d"
    dropins.mkdir()
    (dropins / "nicnet.toml").write_text("[interface]\nnicnet = '[a-z:-]+'\n")
    bridge.write_config(properties_dir=str(dropins))
    with bridge.config.open("a") as f:
        f.write("[properties.vm]\npincpu = '[0-9,^-]+'\nlabel = '[a-z ]*'\n")
    bridge.probe("before_vm_start")
    bridge.probe("before_device_create")
    metadata = ovirt_vm(
        {"pincpu": "0-3", "label": "Web!", "other": "x"},
        nics={"52:54:00:00:00:01": {"nicnet": "network:lab", "vlan": "7"}},
    )
    assert bridge.qemu("vm1", "prepare", "begin", with_a_nic(metadata)).returncode == 0
    device, vm = (env_of(record) for record in bridge.read_records())
    assert vm["pincpu"] == "0-3"
    assert "label" not in vm and "other" not in vm
    assert device["nicnet"] == "network:lab"  # declared by the drop-in file
    assert "vlan" not in device
    log = bridge.log_text()
    assert (
        "custom property label (of the VM) refused: its value does not match the schema's "
        "regular expression '[a-z ]*'" in log
    )
    assert "custom property other (of the VM) refused: not declared for the VM" in log
    assert (
        "custom property vlan (of the <interface>) refused: not declared for a <interface>" in log
    )


# -- generated names and values --------------------------------------------------------------

# Names of every kind: those that must be refused, prefixes of refused families with any
# tail, ordinary ones, and XML names that are no plain name.
NAMES = st.one_of(
    st.sampled_from(MUST_REFUSE),
    st.tuples(
        st.sampled_from(["LD_", "PYTHON", "LC_", "BASH_FUNC_", "_hook_", "GIT_", "PERL"]),
        st.from_regex(r"[A-Za-z0-9_]{0,8}", fullmatch=True),
    ).map("".join),
    st.from_regex(r"[a-z][a-z0-9]{0,12}", fullmatch=True),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    st.from_regex(
        r"[A-Za-z\u00c0-\u00d6\u00d8-\u00f6_][A-Za-z0-9\u00c0-\u00d6]{0,6}", fullmatch=True
    ),
)
# Any text XML can hold (a carriage return too, written as a reference).
VALUES = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\ufffe\uffff").filter(
        lambda c: c in "\t\n\r" or ord(c) >= 0x20
    ),
    max_size=40,
)


def xml_text(value: str) -> str:
    return escape(value).replace("\r", "&#13;")


# What the bridge sets itself for every script: a refused property of one of these names
# leaves the bridge's value, not libvirt's.
BRIDGE_SET = {"vmId", "_hook_domxml", "PYTHONPATH"}


def check_screened(record: Record, props: dict[str, str], log: str, event: str) -> None:
    env = env_of(record)
    for name, value in props.items():
        refused = f"custom property {name} (" in log
        if name in MUST_REFUSE:
            assert refused, f"{name} was not refused"
        if re.fullmatch(r"[a-z][a-z0-9]*", name) or name in ORDINARY:
            assert not refused, f"ordinary {name!r} was refused"
        if not refused:
            assert env.get(name) == value, f"{name!r} did not arrive intact"
        elif name in BRIDGE_SET:
            assert env.get(name) != value, name
        else:
            assert env.get(name) == LIBVIRT_ENV.get(name), f"refused {name!r} reached the script"
    if props:
        assert f"{event} domain='vm1'" in log
    for line in log.splitlines():
        found = re.search(r"custom property (\S+) \(", line)
        assert found is None or found[1] in props, f"a refusal of what was not given: {line}"


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(props=st.dictionaries(NAMES, VALUES, max_size=6))
def test_generated_properties_reach_the_vms_scripts_verbatim_or_are_refused(
    bridge: Bridge, props: dict[str, str]
) -> None:
    bridge.records.unlink(missing_ok=True)
    bridge.log.unlink(missing_ok=True)
    bridge.probe("before_vm_start")
    xml = domain_xml("vm1", properties={k: xml_text(v) for k, v in props.items()})
    result = bridge.qemu("vm1", "prepare", "begin", xml)
    assert result.returncode == 0, result.stderr
    assert b"internal error" not in result.stderr
    [record] = bridge.read_records()
    check_screened(record, props, bridge.log_text(), "before_vm_start")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    device=st.dictionaries(NAMES, VALUES, min_size=1, max_size=5),
    vm=st.dictionaries(NAMES, VALUES, max_size=3),
)
def test_generated_properties_reach_a_devices_scripts_verbatim_or_are_refused(
    bridge: Bridge, device: dict[str, str], vm: dict[str, str]
) -> None:
    bridge.records.unlink(missing_ok=True)
    bridge.log.unlink(missing_ok=True)
    bridge.probe("before_device_create")
    metadata = ovirt_vm(
        {k: xml_text(v) for k, v in vm.items()},
        nics={"52:54:00:00:00:01": {k: xml_text(v) for k, v in device.items()}},
    )
    result = bridge.qemu("vm1", "prepare", "begin", with_a_nic(metadata))
    assert result.returncode == 0, result.stderr
    assert b"internal error" not in result.stderr
    records = bridge.read_records()
    # The device has properties (in its metadata) only when one of them is an element.
    assert len(records) == 1
    # The VM's win a clash, as in VDSM: judge each name by what wins.
    check_screened(records[0], {**device, **vm}, bridge.log_text(), "before_device_create")
    assert json.dumps(records[0]["env"])  # what the script saw is plain text
