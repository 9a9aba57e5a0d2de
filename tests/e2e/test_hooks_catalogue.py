"""The shipped hooks (hooks.d) on real libvirt daemons in private sandboxes.

Each hook is installed from its shipped file's contents with ``add_hook_script``. The
hugepages test uses the machine's real pool of 2 MiB pages (global, outside any sandbox):
it reserves at most a few dozen pages and always puts ``nr_hugepages`` back as it found it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree

from libvirt_bridge import catalogue
from libvirt_bridge_lab.sandbox import Sandbox, override_conf
from testing.e2e import (
    DESTROYED,
    STARTED,
    define_with_devices,
    define_xml,
    events_of,
    queues_empty,
    read_records,
    verb,
    wait_until,
)
from testing.harness import ovirt_vm

pytestmark = pytest.mark.libvirt

HOOKS = catalogue.available()
PAGES_2M = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")
HUGETLBFS = "/var/lib/libvirt/hugepages"  # inside the sandbox: its own var/lib/libvirt


def install_hook(sandbox: Sandbox, name: str, settings: dict[str, str] | None = None) -> None:
    """Every file of shipped hook ``name``; ``settings`` go in as one line after the #!."""
    for event, source in HOOKS[name].files.items():
        text = Path(source).read_text()
        if settings:
            shebang, rest = text.split("\n", 1)
            assigned = "; ".join(f"os.environ[{k!r}] = {v!r}" for k, v in settings.items())
            text = f"{shebang}\nimport os; {assigned}\n{rest}"
        sandbox.add_hook_script(event, os.path.basename(source), text)


# -- cantmigrate -------------------------------------------------------------------------------


def test_cantmigrate_refuses_a_virsh_migrate(make_sandbox: Callable[[str], Sandbox]) -> None:
    source, destination = make_sandbox("lbsb1"), make_sandbox("lbsb2")
    for sandbox in (source, destination):
        sandbox.install_bridge()
        install_hook(sandbox, "cantmigrate")
    source.define_guest("db1", metadata=ovirt_vm({"cantmigrate": "true"}))
    source.define_guest("web1", metadata=ovirt_vm({"cantmigrate": "0"}))
    source.virsh("start", "db1")
    source.virsh("start", "web1")

    result = source.migrate("db1", destination)
    assert result.returncode != 0
    assert "10_cantmigrate" in result.stderr
    assert (
        "cantmigrate: guest 'db1' must not be migrated (custom property cantmigrate=true); "
        "migration to this host refused"
    ) in result.stderr
    assert source.domstate("db1") == "running"
    assert destination.running_guests() == []

    # On the source, `libvirt-bridge migrate` refuses before anything moves.
    refused = verb(source, "migrate", "--live", "db1", destination.uri)
    assert refused.returncode == 1
    assert "migration away from this host refused" in refused.stderr
    assert source.domstate("db1") == "running"

    moved = source.migrate("web1", destination)
    assert moved.returncode == 0, moved.stderr
    assert destination.domstate("web1") == "running"


# -- hugepages ---------------------------------------------------------------------------------


class Pool:
    """The host's pool of 2 MiB hugepages."""

    def read(self, name: str) -> int:
        return int((PAGES_2M / name).read_text())

    def nr(self) -> int:
        return self.read("nr_hugepages")

    def available(self) -> int:
        return self.read("free_hugepages") - self.read("resv_hugepages")

    def in_use(self) -> int:
        return self.nr() - self.available()


@pytest.fixture
def pool() -> Iterator[Pool]:
    """The 2 MiB pool, put back as found (after the sandboxes, which are torn down first)."""
    if not PAGES_2M.is_dir():
        pytest.fail("this kernel has no 2 MiB hugepages", pytrace=False)
    original = (PAGES_2M / "nr_hugepages").read_text()
    try:
        yield Pool()
    finally:
        (PAGES_2M / "nr_hugepages").write_text(original)
        assert (PAGES_2M / "nr_hugepages").read_text() == original


@pytest.fixture
def hugepage_sandbox(pool: Pool, make_sandbox: Callable[[str], Sandbox]) -> Sandbox:
    """A sandbox whose libvirt has a hugetlbfs (mounted in its namespace only)."""
    sandbox = make_sandbox("lbsb1")
    os.makedirs(os.path.join(sandbox.lib_dir, "hugepages"))
    sandbox.run_in_namespace(
        ["mount", "-n", "-t", "hugetlbfs", "-o", "pagesize=2M", "hugetlbfs", HUGETLBFS]
    )
    qemu_conf = Path(sandbox.etc_dir) / "qemu.conf"
    qemu_conf.write_text(
        override_conf(qemu_conf.read_text(), {"hugetlbfs_mount": f'"{HUGETLBFS}"'})
    )
    sandbox.restart_daemon()  # libvirt reads qemu.conf and finds hugetlbfs at its start
    sandbox.install_bridge()
    books = os.path.join(sandbox.bridge_dir, "hugepages")
    install_hook(sandbox, "hugepages", {"LIBVIRT_BRIDGE_HUGEPAGES_STATE_DIR": books})
    return sandbox


def define_hugepage_guest(sandbox: Sandbox, name: str) -> None:
    xml = sandbox.domain_xml(name).replace(
        "  <vcpu>", "  <memoryBacking><hugepages/></memoryBacking>\n  <vcpu>"
    )
    define_xml(sandbox, xml)


def books(sandbox: Sandbox) -> list[str]:
    directory = Path(sandbox.bridge_dir) / "hugepages"
    return sorted(json.loads(p.read_text())["name"] for p in directory.glob("*.json"))


def test_hugepages_reserved_for_each_guest_and_given_back(
    pool: Pool, hugepage_sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox = hugepage_sandbox
    for name in ("g1", "g2", "g3"):
        define_hugepage_guest(sandbox, name)
    start, available = pool.nr(), pool.available()
    # A 64 MiB guest needs 32 pages; the hook raises the pool by what is not free.
    raised1 = max(0, 32 - available)
    raised2 = max(0, 32 - max(0, available - 32))

    sandbox.virsh("start", "g1")
    assert sandbox.domstate("g1") == "running"
    assert pool.nr() == start + raised1
    sandbox.virsh("start", "g2")
    assert pool.nr() == start + raised1 + raised2
    assert books(sandbox) == [name for name, raised in (("g1", raised1), ("g2", raised2)) if raised]
    in_use = pool.in_use()

    # Destroying g1 gives back g1's pages only: g2 keeps running on its own.
    sandbox.virsh("destroy", "g1")
    wait_until(lambda: pool.nr() == start + raised2, "g1's pages to be given back")
    assert sandbox.domstate("g2") == "running"
    assert pool.in_use() == in_use - 32

    # Saved and restored, g2 gives its pages back and takes them again.
    image = str(tmp_path / "g2.save")
    sandbox.virsh("save", "g2", image)
    wait_until(lambda: pool.nr() == start, "g2's pages to be given back at save")
    sandbox.virsh("restore", image)
    assert sandbox.domstate("g2") == "running"
    assert pool.nr() == start + raised1  # the same shortfall as g1's first start
    sandbox.virsh("destroy", "g2")
    wait_until(lambda: pool.nr() == start, "g2's pages to be given back")

    # A start another script refuses: libvirt's cleanup gives the pages back.
    sandbox.add_hook_script(
        "before_vm_start",
        "99_no_g3",
        "#!/bin/sh\ngrep -q '<name>g3</name>' \"$_hook_domxml\" || exit 0\n"
        "echo 'g3 not today' >&2\nexit 1\n",
    )
    refused = sandbox.virsh("start", "g3", check=False)
    assert refused.returncode != 0
    assert "g3 not today" in refused.stderr
    wait_until(lambda: pool.nr() == start, "the refused start's pages to be given back")
    wait_until(lambda: books(sandbox) == [], "the books to be empty")
    assert sandbox.domstate("g3") == "shut off"


# -- audit ---------------------------------------------------------------------------------------


def test_audit_records_a_start_and_destroy(sandbox: Sandbox) -> None:
    sandbox.install_bridge()
    install_hook(sandbox, "audit")
    uuid = sandbox.define_guest("g1", metadata=ovirt_vm({"owner": "ops", "pincpu": "0"}))
    # The default log, /var/log/libvirt/..., is the sandbox's own var/log/libvirt.
    log = Path(sandbox.log_dir) / "libvirt-bridge-audit.jsonl"

    def records() -> list[dict[str, object]]:
        return [r for r in read_records(log) if r["domain"] == "g1"]

    sandbox.virsh("start", "g1")
    wait_until(lambda: len(records()) == 2, "the start's records")
    sandbox.virsh("destroy", "g1")
    wait_until(lambda: len(records()) == 4, "the destroy's records")
    wait_until(lambda: queues_empty(sandbox.state_dir), "the bridge idle")
    got = records()
    assert events_of(got) == [*STARTED, *DESTROYED]
    for record in got:
        assert record["uuid"] == uuid
        assert record["properties"] == {"owner": "ops", "pincpu": "0"}
        assert str(record["time"]).endswith("+00:00")


# -- pincpu ----------------------------------------------------------------------------------------


def cpuset(xml: str) -> str | None:
    vcpu = etree.fromstring(xml.encode()).find("vcpu")
    assert vcpu is not None
    return vcpu.get("cpuset")


def test_pincpu_pins_a_guest_started_by_libvirt_bridge_start(sandbox: Sandbox) -> None:
    sandbox.install_bridge()
    install_hook(sandbox, "pincpu")
    sandbox.define_guest("g1", metadata=ovirt_vm({"pincpu": "0"}))

    result = verb(sandbox, "start", "g1")
    assert result.returncode == 0, result.stderr
    assert "with the XML its before_vm_start scripts changed" in result.stdout
    assert cpuset(sandbox.virsh("dumpxml", "g1").stdout) == "0"
    assert cpuset(sandbox.virsh("dumpxml", "--inactive", "g1").stdout) is None  # this boot only
    affinity = sandbox.virsh("vcpupin", "g1", "--live").stdout  # " VCPU   CPU Affinity" table
    assert re.search(r"^\s*0\s+0\s*$", affinity, re.M), affinity
    sandbox.virsh("destroy", "g1")

    # A plain virsh start cannot take the change: it boots unpinned, the bridge warns.
    sandbox.virsh("start", "g1")
    assert cpuset(sandbox.virsh("dumpxml", "g1").stdout) is None
    log = Path(sandbox.log_file).read_text()
    assert "50_pincpu changed the domain XML" in log
    sandbox.virsh("destroy", "g1")

    # A malformed value refuses either start, naming the property.
    sandbox.define_guest("g2", metadata=ovirt_vm({"pincpu": "1-"}))
    refused = verb(sandbox, "start", "g2")
    assert refused.returncode == 1
    assert "invalid custom property pincpu='1-'" in refused.stderr
    plain = sandbox.virsh("start", "g2", check=False)
    assert plain.returncode != 0
    assert "invalid custom property pincpu='1-'" in plain.stderr


# -- nicnet ----------------------------------------------------------------------------------------

NICNET_MAC = "52:54:00:dd:00:01"
NICNET_NIC = (
    f"<interface type='user'><mac address='{NICNET_MAC}'/><model type='usb-net'/>"
    "<alias name='ua-nic1'/></interface>"
)
NICNET_METADATA = ovirt_vm(nics={NICNET_MAC: {"nicnet": "network:lab-net"}})
# The sandbox's daemon has no network (defining one would make a bridge and firewall rules
# on the host), so libvirt refuses the NIC the hook placed on 'lab-net': its error, naming
# that network, shows what reached libvirt.
NO_LAB_NET = "no network with matching name 'lab-net'"


def test_nicnet_places_a_hotplugged_nic_on_its_network(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.install_bridge()
    install_hook(sandbox, "nicnet")
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    nic = tmp_path / "nic.xml"
    nic.write_text(NICNET_NIC)
    result = verb(sandbox, "attach-device", "g1", str(nic), "--prop", "nicnet=network:lab-net")
    assert result.returncode == 1
    assert NO_LAB_NET in result.stderr, result.stderr
    # Without the property the NIC is attached as the file says.
    result = verb(sandbox, "attach-device", "g1", str(nic))
    assert result.returncode == 0, result.stderr
    live = etree.fromstring(sandbox.virsh("dumpxml", "g1").stdout.encode())
    assert live.find("devices/interface").get("type") == "user"


def test_nicnet_places_a_nic_at_libvirt_bridge_start_only(sandbox: Sandbox) -> None:
    sandbox.install_bridge()
    install_hook(sandbox, "nicnet")
    nic = NICNET_NIC.replace("usb-net", "virtio")
    define_with_devices(sandbox, "g1", nic, metadata=NICNET_METADATA)
    result = verb(sandbox, "start", "g1")
    assert result.returncode == 1
    assert NO_LAB_NET in result.stderr, result.stderr
    # A plain virsh start boots the NIC as defined; the bridge logs the change it could
    # not make.
    sandbox.virsh("start", "g1")
    live = etree.fromstring(sandbox.virsh("dumpxml", "g1").stdout.encode())
    assert live.find("devices/interface").get("type") == "user"
    log = Path(sandbox.log_file).read_text()
    assert "30_nicnet changed the domain XML, but libvirt cannot take a changed XML" in log
