"""Every row of the mapping table, driven through the installed launcher as libvirt does."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from libvirt_bridge import mapping
from testing.harness import Bridge, domain_xml, ovirt_vm, uuid_of

STATUS_SAVE = b"<domstatus state='paused' reason='save' pid='1'>\n<domain type='kvm'/>\n"
STATUS_MIGRATED = (
    b"<domstatus state='paused' reason='migration' pid='1'>\n"
    b"  <job type='none' async='migration out' phase='perform3'/>\n<domain/>\n"
)
STATUS_INCOMING = (
    b"<domstatus state='paused' reason='migration' pid='1'>\n"
    b"  <job type='none' async='migration in' phase='prepare'/>\n<domain/>\n"
)
STATUS_DESTROY = b"<domstatus state='shutdown' reason='unknown' pid='1'>\n<domain/>\n"
# At `started begin`, as libvirt 9.0 writes them (see state.start_kind_from_status).
STATUS_BOOTED = (
    b"<domstatus state='running' reason='booted' pid='1'>\n"
    b"  <job type='none' async='start' flags='0x0'/>\n<domain/>\n"
)
STATUS_RESTORING = (
    b"<domstatus state='paused' reason='migration' pid='1'>\n"
    b"  <job type='none' async='start' flags='0x0'/>\n<domain/>\n"
)


def probe_all(bridge: Bridge) -> None:
    for event in mapping.EVENTS:
        bridge.probe(event)


def test_cold_start_fires_before_and_after_vm_start(bridge: Bridge) -> None:
    probe_all(bridge)
    xml = domain_xml("vm1")
    for op in ("prepare", "start", "started"):
        assert bridge.qemu("vm1", op, "begin", xml).returncode == 0
    records = bridge.wait_async(2)
    assert [r["event"] for r in records] == ["before_vm_start", "after_vm_start"]
    for record in records:
        assert record["env"]["vmId"] == uuid_of(xml)
        assert record["xml"] == xml.decode()


@pytest.mark.parametrize(
    ("first", "status", "expected"),
    [
        ("restore", STATUS_RESTORING, ["before_vm_dehibernate", "after_vm_dehibernate"]),
        ("migrate", STATUS_INCOMING, ["before_vm_migrate_destination"]),
    ],
    ids=["restore fires dehibernate, no start", "incoming migration fires migrate only"],
)
def test_a_start_that_is_not_a_boot_fires_no_start_events(
    bridge: Bridge, first: str, status: bytes, expected: list[str]
) -> None:
    probe_all(bridge)
    xml = domain_xml("vm1")
    assert bridge.qemu("vm1", first, "begin", xml).returncode == 0
    for op in ("prepare", "start", "started"):
        if op == "started":
            bridge.status_file("vm1", status)
        assert bridge.qemu("vm1", op, "begin", xml).returncode == 0
    assert [r["event"] for r in bridge.wait_async(len(expected))] == expected


def test_marker_is_used_once(bridge: Bridge) -> None:
    probe_all(bridge)
    xml = domain_xml("vm1")
    bridge.qemu("vm1", "restore", "begin", xml)
    bridge.qemu("vm1", "prepare", "begin", xml)
    bridge.qemu("vm1", "prepare", "begin", xml)
    assert bridge.events() == ["before_vm_dehibernate", "before_vm_start"]


def test_stale_marker_is_ignored(bridge: Bridge) -> None:
    probe_all(bridge)
    xml = domain_xml("vm1")
    bridge.qemu("vm1", "migrate", "begin", xml)
    marker = bridge.state / "markers" / uuid_of(xml)
    old = time.time() - 3600
    os.utime(marker, (old, old))
    bridge.qemu("vm1", "prepare", "begin", xml)
    assert bridge.events() == ["before_vm_migrate_destination", "before_vm_start"]
    assert not marker.exists()


def test_vetoed_migration_leaves_no_marker(bridge: Bridge) -> None:
    bridge.script("before_vm_migrate_destination", "10_no", "#!/bin/sh\necho no >&2\nexit 1\n")
    bridge.probe("before_vm_start")
    xml = domain_xml("vm1")
    assert bridge.qemu("vm1", "migrate", "begin", xml).returncode == 1
    assert not (bridge.state / "markers" / uuid_of(xml)).exists()
    bridge.qemu("vm1", "prepare", "begin", xml)
    assert bridge.events() == ["before_vm_start"]


def test_daemon_start_removes_markers_of_interrupted_operations(bridge: Bridge) -> None:
    probe_all(bridge)
    xml = domain_xml("vm1")
    bridge.qemu("vm1", "restore", "begin", xml)
    bridge.daemon("start", "start")
    bridge.qemu("vm1", "prepare", "begin", xml)
    assert bridge.events() == ["before_vm_dehibernate", "before_vdsm_start", "before_vm_start"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (STATUS_DESTROY, ["before_vm_destroy", "after_vm_destroy"]),
        (None, ["before_vm_destroy", "after_vm_destroy"]),
        (STATUS_SAVE, ["after_vm_hibernate"]),
        (STATUS_MIGRATED, ["after_vm_migrate_source"]),
        (STATUS_INCOMING, ["before_vm_destroy", "after_vm_destroy"]),
    ],
    ids=["destroy", "no-status-file", "save", "migrated-out", "failed-incoming"],
)
def test_stop_reason_from_status_file(
    bridge: Bridge, status: bytes | None, expected: list[str]
) -> None:
    probe_all(bridge)
    xml = domain_xml("vm 1")
    bridge.status_file("vm 1", status)
    assert bridge.qemu("vm 1", "stopped", "end", xml).returncode == 0
    bridge.status_file("vm 1", None)
    assert bridge.qemu("vm 1", "release", "end", xml).returncode == 0
    assert [r["event"] for r in bridge.wait_async(len(expected))] == expected


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("destroyed", "after_vm_destroy"),
        ("shutdown", "after_vm_destroy"),
        ("crashed", "after_vm_destroy"),
        ("from snapshot", "after_vm_destroy"),
        ("saved", "after_vm_hibernate"),
        ("migrated", "after_vm_migrate_source"),
    ],
)
def test_release_reason_of_newer_libvirt_wins(bridge: Bridge, reason: str, expected: str) -> None:
    probe_all(bridge)
    xml = domain_xml("vm1")
    bridge.status_file("vm1", STATUS_DESTROY)
    bridge.qemu("vm1", "stopped", "end", xml)
    assert bridge.qemu("vm1", "release", "end", xml, extra=reason).returncode == 0
    events = [r["event"] for r in bridge.wait_async()]
    assert events[-1] == expected


def test_release_forgets_the_domain(bridge: Bridge) -> None:
    probe_all(bridge)
    xml = domain_xml("vm1")
    bridge.qemu("vm1", "stopped", "end", xml)
    assert list((bridge.state / "domains").iterdir()) != []
    bridge.qemu("vm1", "release", "end", xml)
    bridge.wait_async()
    assert list((bridge.state / "domains").iterdir()) == []


def test_no_bookkeeping_when_no_qemu_event_has_a_script(bridge: Bridge) -> None:
    xml = domain_xml("vm1")
    for op, subop in (("migrate", "begin"), ("prepare", "begin"), ("stopped", "end")):
        assert bridge.qemu("vm1", op, subop, xml).returncode == 0
    assert not (bridge.state / "domains").exists()
    assert not (bridge.state / "markers").exists()


def test_a_stop_keeps_state_only_for_the_release_that_reads_it(bridge: Bridge) -> None:
    xml = domain_xml("vm1")
    bridge.probe("after_vm_destroy")
    for op, subop in (("migrate", "begin"), ("prepare", "begin"), ("started", "begin")):
        assert bridge.qemu("vm1", op, subop, xml).returncode == 0
    assert not (bridge.state / "domains").exists()
    assert not (bridge.state / "markers").exists()
    bridge.qemu("vm1", "stopped", "end", xml)
    assert list((bridge.state / "domains").iterdir()) != []
    bridge.qemu("vm1", "release", "end", xml)
    assert [r["event"] for r in bridge.wait_async()] == ["after_vm_destroy"]
    assert list((bridge.state / "domains").iterdir()) == []


def test_a_stop_records_nothing_when_release_has_nothing_to_run(bridge: Bridge) -> None:
    xml = domain_xml("vm1")
    bridge.probe("before_vm_destroy")
    bridge.qemu("vm1", "stopped", "end", xml)
    bridge.qemu("vm1", "release", "end", xml)
    assert bridge.events() == ["before_vm_destroy"]
    assert not (bridge.state / "domains").exists()


@pytest.mark.parametrize(
    ("first", "status", "expected"),
    [
        (None, STATUS_BOOTED, ["after_vm_start"]),
        ("restore", STATUS_RESTORING, ["after_vm_dehibernate"]),
        ("migrate", STATUS_INCOMING, []),
    ],
    ids=["boot", "restore", "incoming-migration"],
)
def test_started_tells_the_start_from_libvirts_status_file(
    bridge: Bridge, first: str | None, status: bytes, expected: list[str]
) -> None:
    # Scripts only where `started` fires: no other call of the start runs the bridge.
    bridge.probe("after_vm_start")
    bridge.probe("after_vm_dehibernate")
    xml = domain_xml("vm1")
    if first:
        assert bridge.qemu("vm1", first, "begin", xml).returncode == 0
    bridge.qemu("vm1", "prepare", "begin", xml)
    bridge.status_file("vm1", status)
    bridge.qemu("vm1", "started", "begin", xml)
    assert [r["event"] for r in bridge.wait_async(len(expected))] == expected
    assert not (bridge.state / "markers").exists()


def test_a_marker_is_left_only_for_a_prepare_that_reads_it(bridge: Bridge) -> None:
    xml = domain_xml("vm1")
    markers = bridge.state / "markers"
    bridge.probe("before_vm_dehibernate")
    bridge.qemu("vm1", "restore", "begin", xml)
    assert bridge.events() == ["before_vm_dehibernate"]
    assert not markers.exists() or list(markers.iterdir()) == []
    bridge.probe("before_vm_start")
    bridge.qemu("vm1", "restore", "begin", xml)
    assert list(markers.iterdir()) != []
    bridge.qemu("vm1", "prepare", "begin", xml)
    assert bridge.events() == ["before_vm_dehibernate", "before_vm_dehibernate"]
    assert list(markers.iterdir()) == []


def test_daemon_hook_fires_for_qemu_daemons_only(bridge: Bridge) -> None:
    probe_all(bridge)
    for parent in ("virtnetworkd", "virtstoraged", "bash"):
        assert bridge.daemon("start", "start", parent=parent).returncode == 0
        assert bridge.daemon("shutdown", "shutdown", parent=parent).returncode == 0
    assert bridge.wait_async() == []
    assert "virtnetworkd" in bridge.log_text()
    for count, parent in ((2, "libvirtd"), (4, "virtqemud")):
        bridge.daemon("start", "start", parent=parent)
        bridge.daemon("shutdown", "shutdown", parent=parent)
        # after_vdsm_stop runs after the call returns: the next daemon's start must not
        # overtake it.
        records = bridge.wait_async(count)
    assert [r["event"] for r in records] == [
        "before_vdsm_start",
        "after_vdsm_stop",
        "before_vdsm_start",
        "after_vdsm_stop",
    ]
    for record in records:
        assert record["xml"] == ""
        assert "vmId" not in record["env"]


@pytest.mark.parametrize(
    ("op", "subop", "extra"),
    [
        ("start", "begin", "-"),
        ("reconnect", "begin", "-"),
        ("attach", "begin", "-"),
        ("frobnicate", "x", "y"),
    ],
)
def test_calls_without_event_fire_nothing(bridge: Bridge, op: str, subop: str, extra: str) -> None:
    probe_all(bridge)
    result = bridge.qemu("vm1", op, subop, domain_xml(), extra=extra)
    assert result.returncode == 0
    assert result.stdout == b""
    assert bridge.wait_async() == []


def test_unknown_operation_is_logged(bridge: Bridge) -> None:
    assert bridge.qemu("vm1", "frobnicate", "begin", domain_xml()).returncode == 0
    assert "frobnicate" in bridge.log_text()
    assert bridge.daemon("reload", "SIGHUP", subop="begin").returncode == 0


def test_failures_where_libvirt_would_kill_the_vm_exit_zero(bridge: Bridge) -> None:
    failing = "#!/bin/sh\necho broken >&2\nexit 1\n"
    bridge.script("before_vm_destroy", "10_fail", failing)
    bridge.script("before_vdsm_start", "10_fail", failing)
    xml = domain_xml("vm1")
    for op, subop in (
        ("started", "begin"),
        ("reconnect", "begin"),
        ("stopped", "end"),
        ("release", "end"),
    ):
        assert bridge.qemu("vm1", op, subop, xml).returncode == 0
    assert bridge.daemon("start", "start").returncode == 0
    assert "broken" in bridge.log_text()


def test_wrong_argument_count_is_a_usage_error(bridge: Bridge) -> None:
    result = bridge.call("qemu", "vm1", "prepare", "begin", "-")
    assert result.returncode == 0
    import subprocess

    short = subprocess.run([str(bridge.launchers / "qemu"), "vm1", "prepare"], capture_output=True)
    assert short.returncode == 2
    assert b"expected 4 arguments" in short.stderr


def test_cli_hook_subcommand_is_the_same_entry_point(bridge: Bridge) -> None:
    import subprocess
    import sys

    bridge.probe("before_vm_start")
    env = {"PATH": os.environ["PATH"], "LIBVIRT_BRIDGE_CONFIG": str(bridge.config)}
    cmd = [sys.executable, "-m", "libvirt_bridge", "hook", "qemu", "vm1", "prepare", "begin", "-"]
    result = subprocess.run(cmd, input=domain_xml("vm1"), env=env, capture_output=True, cwd="/")
    assert result.returncode == 0, result.stderr
    assert bridge.events() == ["before_vm_start"]


def test_fast_path_imports_nothing_heavy(bridge: Bridge) -> None:
    """An event with no scripts must not import lxml, libvirt, subprocess or tomllib."""
    import subprocess
    import sys

    from libvirt_bridge.launcher import import_path

    code = (
        "import io, sys\n"
        f"sys.path[:0] = {import_path()!r}\n"
        "from libvirt_bridge.dispatch import run\n"
        f"xml = io.BytesIO({domain_xml('vm1')!r})\n"
        "for op in ('prepare', 'start', 'started'):\n"
        "    xml.seek(0)\n"
        f"    argv = ['vm1', op, 'begin', '-']\n"
        f"    assert run('qemu', argv, {str(bridge.config)!r}, xml, io.BytesIO()) == 0\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    # Twice: the first call writes the config cache, the second must use it.
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
    modules = set(out.stdout.split())
    assert not modules & {
        "lxml",
        "libvirt",
        "subprocess",
        "tomllib",
        "re",
        "typing",
        "logging",
        "json",
    }


# What a hook call that runs scripts must not import: each costs a sizeable part of an
# interpreter start (subprocess, tempfile and what they pull in; lxml, libvirt, tomllib;
# os and the _collections_abc it needs for os.environ: libvirt_bridge/plainos.py).
HEAVY_ON_THE_HOOK_PATH = {
    "_collections_abc",
    "bz2",
    "collections",
    "contextlib",
    "enum",
    "functools",
    "json",
    "libvirt",
    "locale",
    "logging",
    "lxml",
    "lzma",
    "os",
    "posixpath",
    "random",
    "re",
    "selectors",
    "shutil",
    "signal",
    "subprocess",
    "tempfile",
    "threading",
    "tomllib",
    "typing",
    "weakref",
    "xml",
}


def imported_by_launcher(bridge: Bridge, tmp_path: Path, op: str, xml: bytes) -> set[str]:
    """The modules a real launcher's Python imports for ``qemu vm1 OP begin -``."""
    import sys

    from libvirt_bridge import launcher

    python = tmp_path / "python-importtime"
    importtime = tmp_path / "importtime"
    importtime.unlink(missing_ok=True)
    # Into a file: the Python of a deferred call runs after the call, its stderr on /dev/null.
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -X importtime "$@" 2>>{importtime}\n')
    python.chmod(0o755)
    path = bridge.launchers / "qemu"
    path.write_text(launcher.render("qemu", str(bridge.config), str(python)))
    result = bridge.qemu("vm1", op, "begin", xml)
    assert result.returncode == 0, result.stderr
    bridge.wait_async()
    return {
        line.rsplit("|", 1)[1].strip()
        for line in importtime.read_text().splitlines()
        if line.startswith("import time:") and not line.endswith("| imported package")
    }


@pytest.mark.parametrize("event", ["before_vm_start", "after_vm_start"])
def test_an_event_with_a_script_imports_nothing_heavy(
    bridge: Bridge, tmp_path: Path, event: str
) -> None:
    """A call that runs a script (sync) or queues one (async) stays a bare interpreter's."""
    bridge.script(event, "50_exit0", "#!/bin/sh\nexit 0\n")
    xml = domain_xml("vm1", properties={"pincpu": "0-1"})
    op = "prepare" if event == "before_vm_start" else "started"
    for _ in range(2):  # the first call writes the config cache, the second uses it
        modules = imported_by_launcher(bridge, tmp_path, op, xml)
    assert "libvirt_bridge.hook" in modules
    if event == "before_vm_start":
        assert {"libvirt_bridge.runner", "libvirt_bridge.sync"} <= modules
    assert not modules & HEAVY_ON_THE_HOOK_PATH
    bridge.wait_async()
    runs = [line for line in bridge.log_text().splitlines() if "script=" in line]
    assert len(runs) == 2 and all("50_exit0 rc=0" in line for line in runs)


def test_screening_and_a_schema_import_nothing_heavy(bridge: Bridge, tmp_path: Path) -> None:
    """Only a domain with properties imports the rules, and a schema compiles no regex."""
    bridge.script("before_vm_start", "50_exit0", "#!/bin/sh\nexit 0\n")
    for _ in range(2):  # the first call writes the config cache, the second uses it
        modules = imported_by_launcher(bridge, tmp_path, "prepare", domain_xml("vm1"))
    assert "libvirt_bridge.screening" not in modules
    with bridge.config.open("a") as f:
        f.write("[properties.vm]\npincpu = '[0-9,^-]+'\nlabel = '(?P<word>[a-z]+)|'\n")
    xml = domain_xml("vm1", properties={"pincpu": "0-1", "label": "web", "PATH": "/x"})
    for _ in range(2):
        modules = imported_by_launcher(bridge, tmp_path, "prepare", xml)
    assert {"libvirt_bridge.screening", "libvirt_bridge.schema"} <= modules
    assert not modules & HEAVY_ON_THE_HOOK_PATH
    log = bridge.log_text()
    assert log.count("custom property PATH (of the VM) refused") == 2
    assert "pincpu" not in log and "label" not in log  # both matched


@pytest.mark.parametrize(
    ("event", "companion"),
    [("before_vm_start", "before_device_create"), ("after_vm_start", "after_device_create")],
)
def test_a_domain_without_ovirt_metadata_skips_the_per_device_events_without_lxml(
    bridge: Bridge, tmp_path: Path, event: str, companion: str
) -> None:
    """No device of a domain without oVirt metadata has properties: nothing to parse."""
    for name in (event, companion):
        bridge.script(name, "50_exit0", "#!/bin/sh\nexit 0\n")
    xml = domain_xml("vm1")
    assert b"ovirt" not in xml
    op = "prepare" if event == "before_vm_start" else "started"
    for _ in range(2):  # the first call writes the config cache, the second uses it
        modules = imported_by_launcher(bridge, tmp_path, op, xml)
    assert not modules & HEAVY_ON_THE_HOOK_PATH
    bridge.wait_async()
    runs = [line for line in bridge.log_text().splitlines() if "script=" in line]
    assert len(runs) == 2 and all(f"{event} domain='vm1'" in line for line in runs)


def test_queueing_a_per_device_event_parses_nothing_in_the_hook_call(
    bridge: Bridge, tmp_path: Path
) -> None:
    """The runner finds the devices: the hook call only queues the domain's XML."""
    bridge.probe("after_device_create")
    metadata = ovirt_vm(nics={"52:54:00:00:00:01": {"extnet": "br-a"}})
    nics = "".join(
        f"<interface type='bridge'><mac address='52:54:00:00:00:0{n}'/></interface>" for n in (1, 2)
    )
    xml = domain_xml("vm1", extra=f"<metadata>{metadata}</metadata><devices>{nics}</devices>")
    for _ in range(2):  # the first call writes the config cache, the second uses it
        modules = imported_by_launcher(bridge, tmp_path, "started", xml)
    assert not modules & HEAVY_ON_THE_HOOK_PATH
    records = bridge.wait_async(2)
    assert [r["event"] for r in records] == ["after_device_create"] * 2
    assert all("52:54:00:00:00:01" in str(r["xml"]) for r in records)
    env = records[0]["env"]
    assert isinstance(env, dict) and env["extnet"] == "br-a"


def test_start_by_the_verb_skips_before_vm_start_at_prepare(bridge: Bridge) -> None:
    from libvirt_bridge.state import STARTED_BY_VERB, State

    probe_all(bridge)
    xml = domain_xml("vm1")
    State(str(bridge.state)).set_marker(uuid_of(xml), STARTED_BY_VERB)
    for op in ("prepare", "start", "started"):
        assert bridge.qemu("vm1", op, "begin", xml).returncode == 0
    assert [r["event"] for r in bridge.wait_async(1)] == ["after_vm_start"]


def test_destroy_by_the_verb_skips_before_vm_destroy_at_stopped(bridge: Bridge) -> None:
    from libvirt_bridge.state import DESTROYED_BY_VERB, State

    probe_all(bridge)
    xml = domain_xml("vm1")
    State(str(bridge.state)).set_marker(uuid_of(xml), DESTROYED_BY_VERB)
    bridge.qemu("vm1", "stopped", "end", xml)
    bridge.qemu("vm1", "release", "end", xml)
    assert [r["event"] for r in bridge.wait_async(1)] == ["after_vm_destroy"]


def test_start_xml_changes_refuse(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path, start_xml_changes="refuse")
    bridge.script(
        "before_vm_start",
        "40_pin",
        '#!/bin/sh\nsed -i \'s#<vcpu>#<vcpu cpuset="0">#\' "$_hook_domxml"\n',
    )
    result = bridge.qemu("vm1", "prepare", "begin", domain_xml("vm1"))
    assert result.returncode == 1
    assert b"40_pin changed the domain XML" in result.stderr
    assert b"libvirt-bridge start vm1" in result.stderr
    bridge.write_config(start_xml_changes="warn")
    assert bridge.qemu("vm1", "prepare", "begin", domain_xml("vm1")).returncode == 0
