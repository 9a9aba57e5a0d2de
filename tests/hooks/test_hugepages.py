"""hugepages: exact reserve/release arithmetic on a fake pool, failures, and the bridge's events."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest

from libvirt_bridge.runner import COMPAT_DIR
from testing.harness import Bridge
from testing.hooks import (
    HugeTLB,
    Ran,
    hugepage_xml,
    install_wrapped,
    load_script,
    run_hook,
    shipped,
    uuid_of,
)

START, DEHIBERNATE, INCOMING = (
    "before_vm_start",
    "before_vm_dehibernate",
    "before_vm_migrate_destination",
)
DESTROY, HIBERNATE, OUTGOING = "after_vm_destroy", "after_vm_hibernate", "after_vm_migrate_source"
G = 1048576


@pytest.fixture
def pool(tmp_path: Path) -> HugeTLB:
    return HugeTLB(tmp_path / "host")


def run(pool: HugeTLB, event: str, xml: bytes, tmp_path: Path) -> Ran:
    ran = run_hook(shipped(event, "hugepages"), xml, tmp_path, env=pool.env())
    pool.settle()
    return ran


@pytest.mark.parametrize("prefault", [True, False], ids=["faulted", "reserved-by-mapping"])
def test_two_guests_reserve_and_give_back_exactly_their_own(
    pool: HugeTLB, tmp_path: Path, prefault: bool
) -> None:
    g1, g2 = hugepage_xml("g1"), hugepage_xml("g2")
    ran = run(pool, START, g1, tmp_path)
    assert ran.rc == 0, ran.stderr
    assert "guest 'g1' needs 32 pages of 2048 kB, 0 were free: reserved 32" in ran.stderr
    assert "(nr_hugepages 0 -> 32)" in ran.stderr
    assert pool.nr() == 32
    assert pool.books() == {uuid_of(g1): {"2048": 32}}
    pool.qemu_starts(32, prefault=prefault)

    assert run(pool, START, g2, tmp_path).rc == 0
    assert pool.nr() == 64
    assert pool.books() == {uuid_of(g1): {"2048": 32}, uuid_of(g2): {"2048": 32}}
    pool.qemu_starts(32, prefault=prefault)

    pool.qemu_stops(32, prefault=prefault)  # g1's QEMU exits, then libvirt's release
    ran = run(pool, DESTROY, g1, tmp_path)
    assert ran.rc == 0, ran.stderr
    assert "gave back 32 of the 32 pages of 2048 kB reserved for 'g1' (nr_hugepages 64 -> 32)" in (
        ran.stderr
    )
    assert pool.nr() == 32  # g2's pages stay
    assert pool.books() == {uuid_of(g2): {"2048": 32}}

    pool.qemu_stops(32, prefault=prefault)
    assert run(pool, DESTROY, g2, tmp_path).rc == 0
    assert (pool.nr(), pool.free(), pool.books()) == (0, 0, {})


def test_free_pages_are_used_first_and_only_the_shortfall_reserved(
    pool: HugeTLB, tmp_path: Path
) -> None:
    pool.admin_sets(10)
    g1 = hugepage_xml("g1")
    ran = run(pool, START, g1, tmp_path)
    assert "needs 32 pages of 2048 kB, 10 were free: reserved 22 (nr_hugepages 10 -> 32)" in (
        ran.stderr
    )
    assert pool.books() == {uuid_of(g1): {"2048": 22}}
    pool.qemu_starts(32)
    pool.qemu_stops(32)
    run(pool, DESTROY, g1, tmp_path)
    assert pool.nr() == 10  # the administrator's pages stay


def test_enough_free_pages_reserve_nothing(pool: HugeTLB, tmp_path: Path) -> None:
    pool.admin_sets(40)
    g1 = hugepage_xml("g1")
    ran = run(pool, START, g1, tmp_path)
    assert ran.rc == 0
    assert "needs 32 pages of 2048 kB and 40 are free: nothing reserved" in ran.stderr
    assert (pool.nr(), pool.books()) == (40, {})
    pool.qemu_starts(32)
    pool.qemu_stops(32)
    assert run(pool, DESTROY, g1, tmp_path).rc == 0
    assert pool.nr() == 40


def test_pages_someone_else_took_are_kept_on_the_books(pool: HugeTLB, tmp_path: Path) -> None:
    g1 = hugepage_xml("g1")
    run(pool, START, g1, tmp_path)
    pool.qemu_starts(32)
    pool.qemu_stops(32)
    pool.qemu_starts(20)  # another program maps 20 of the pages g1 left free
    ran = run(pool, DESTROY, g1, tmp_path)
    assert "gave back 12 of the 32 pages" in ran.stderr
    assert "20 pages of 2048 kB reserved for 'g1' are in use; kept on its books" in ran.stderr
    assert (pool.nr(), pool.books()) == (20, {uuid_of(g1): {"2048": 20}})
    pool.qemu_stops(20)
    # g1's next start counts what its books hold; its next stop gives all back.
    ran = run(pool, START, g1, tmp_path)
    assert "20 were free: reserved 12" in ran.stderr
    assert pool.books() == {uuid_of(g1): {"2048": 32}}
    pool.qemu_starts(32)
    pool.qemu_stops(32)
    run(pool, DESTROY, g1, tmp_path)
    assert (pool.nr(), pool.books()) == (0, {})


def test_restart_before_the_late_release_of_the_last_run(pool: HugeTLB, tmp_path: Path) -> None:
    # after_vm_destroy is async: a quick `virsh destroy; virsh start` may run the new
    # start's before_vm_start first.
    g1 = hugepage_xml("g1")
    run(pool, START, g1, tmp_path)
    pool.qemu_starts(32)
    pool.qemu_stops(32)
    ran = run(pool, START, g1, tmp_path)  # the pages of the last run are free again
    assert "nothing reserved" in ran.stderr
    assert pool.books() == {uuid_of(g1): {"2048": 32}}
    pool.qemu_starts(32)
    run(pool, DESTROY, g1, tmp_path)  # the late release: its pages are in use again
    assert (pool.nr(), pool.books()) == (32, {uuid_of(g1): {"2048": 32}})
    pool.qemu_stops(32)
    run(pool, DESTROY, g1, tmp_path)
    assert (pool.nr(), pool.books()) == (0, {})


@pytest.mark.parametrize(
    ("memory_mib", "page", "size", "pages"),
    [
        (2048, "<page size='1' unit='G'/>", G, 2),
        (2048, "<page size='1048576'/>", G, 2),
        (64, "<page size='2048' unit='KiB'/>", 2048, 32),
        (64, "<page size='2' unit='M'/>", 2048, 32),
        (65, "", 2048, 33),
        (1025, "<page size='1' unit='GiB'/>", G, 2),
    ],
)
def test_page_sizes_and_rounding(
    pool: HugeTLB, tmp_path: Path, memory_mib: int, page: str, size: int, pages: int
) -> None:
    xml = hugepage_xml("g1", memory_mib=memory_mib, page=page)
    ran = run(pool, START, xml, tmp_path)
    assert ran.rc == 0, ran.stderr
    assert pool.nr(size) == pages
    assert pool.books() == {uuid_of(xml): {str(size): pages}}
    run(pool, DESTROY, xml, tmp_path)
    assert pool.nr(size) == 0


@pytest.mark.parametrize(
    ("memory", "pages"),
    [
        ("<memory unit='KiB'>65536</memory>", 32),
        ("<memory>65536</memory>", 32),
        ("<memory unit='b'>67108864</memory>", 32),
        ("<memory unit='MB'>64</memory>", 31),
        ("<memory unit='k'>4097</memory>", 3),
    ],
)
def test_memory_units(pool: HugeTLB, tmp_path: Path, memory: str, pages: int) -> None:
    xml = hugepage_xml("g1").replace(b"<memory unit='MiB'>64</memory>", memory.encode())
    assert run(pool, START, xml, tmp_path).rc == 0
    assert pool.nr() == pages


def test_a_size_the_host_lacks_fails_the_start(pool: HugeTLB, tmp_path: Path) -> None:
    xml = hugepage_xml("g1", page="<page size='4' unit='M'/>")
    ran = run(pool, START, xml, tmp_path)
    assert ran.rc == 2
    assert ran.stderr == (
        "hugepages: the host has no 4096 kB hugepages (sizes it has: 2048 kB, 1048576 kB)\n"
    )
    assert (pool.nr(), pool.books()) == (0, {})


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (
            hugepage_xml("g1", page="<page size='2048' nodeset='0'/>"),
            "hugepages: per-NUMA-node <page nodeset=...> elements are not supported",
        ),
        (
            hugepage_xml("g1", page="<page size='2' unit='X'/>"),
            "hugepages: cannot read the guest's <page size=...>: unknown unit 'X'",
        ),
        (
            hugepage_xml("g1").replace(b">64</memory>", b">lots</memory>"),
            "hugepages: cannot read the guest's <memory>: 'lots' is not a whole number",
        ),
    ],
)
def test_unreadable_requests_fail_the_start(
    pool: HugeTLB, tmp_path: Path, xml: bytes, message: str
) -> None:
    ran = run(pool, START, xml, tmp_path)
    assert ran.rc == 2
    assert ran.stderr.startswith(message)
    assert pool.nr() == 0


def test_a_guest_without_hugepages_is_left_alone(pool: HugeTLB, tmp_path: Path) -> None:
    plain = hugepage_xml("g1").replace(
        b"<memoryBacking><hugepages></hugepages></memoryBacking>", b""
    )
    for event in (START, DESTROY):
        ran = run(pool, event, plain, tmp_path)
        assert (ran.rc, ran.stderr) == (0, "")
    assert pool.nr() == 0
    assert not pool.state.exists()


def test_books_of_an_earlier_boot_are_dropped(pool: HugeTLB, tmp_path: Path) -> None:
    g1 = hugepage_xml("g1")
    run(pool, START, g1, tmp_path)
    pool.reboot()
    pool.admin_sets(0)  # the pool after a reboot
    ran = run(pool, DESTROY, g1, tmp_path)
    assert ran.rc == 0
    assert "dropping the record of an earlier boot" in ran.stderr
    assert (pool.nr(), pool.books()) == (0, {})


def test_every_reserve_and_release_event(pool: HugeTLB, tmp_path: Path) -> None:
    g1 = hugepage_xml("g1")
    for reserve, release in ((START, HIBERNATE), (DEHIBERNATE, OUTGOING), (INCOMING, DESTROY)):
        assert run(pool, reserve, g1, tmp_path).rc == 0
        assert pool.nr() == 32, reserve
        assert run(pool, release, g1, tmp_path).rc == 0
        assert pool.nr() == 0, release


def test_concurrent_events_lose_no_update(pool: HugeTLB, tmp_path: Path) -> None:
    guests = [hugepage_xml(f"g{i}") for i in range(8)]
    script = shipped(START, "hugepages")
    with ThreadPoolExecutor(8) as executor:
        runs = list(executor.map(lambda x: run_hook(script, x, tmp_path, pool.env()), guests))
    assert [r.rc for r in runs] == [0] * 8
    # The fake's free count moves only when the test settles it: every start raised 32.
    assert pool.nr() == 8 * 32
    assert pool.books() == {uuid_of(x): {"2048": 32} for x in guests}
    pool.settle()
    script = shipped(DESTROY, "hugepages")
    with ThreadPoolExecutor(8) as executor:
        runs = list(executor.map(lambda x: run_hook(script, x, tmp_path, pool.env()), guests))
    assert [r.rc for r in runs] == [0] * 8
    assert (pool.nr(), pool.books()) == (0, {})


# -- the kernel gives fewer pages than asked -------------------------------------------------


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The script imported in-process; the ``hooking`` it imports is forgotten afterwards."""
    monkeypatch.syspath_prepend(COMPAT_DIR)
    imported = "hooking" not in sys.modules
    try:
        yield load_script(shipped(START, "hugepages"))
    finally:
        if imported:
            sys.modules.pop("hooking", None)


def run_in_process(
    module: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    pool: HugeTLB,
    event: str,
    xml: bytes,
    tmp_path: Path,
) -> int:
    path = tmp_path / "domxml.xml"
    path.write_bytes(xml)
    for key, value in pool.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("_hook_domxml", str(path))
    monkeypatch.setenv("vmId", uuid_of(xml))
    monkeypatch.setattr(sys, "argv", [str(shipped(event, "hugepages"))])
    try:
        return int(module.main())
    except SystemExit as exc:
        return int(exc.code or 0)


def limit_kernel(
    module: ModuleType, monkeypatch: pytest.MonkeyPatch, pool: HugeTLB, cap: int
) -> None:
    """The kernel gives at most ``cap`` pages in all (fragmented memory)."""

    def set_total(self: object, count: int) -> int:
        pool.admin_sets(min(count, cap))
        return pool.nr()

    monkeypatch.setattr(module.Pool, "set_total", set_total)


CANNOT_RESERVE = (
    "hugepages: cannot reserve hugepages for guest 'g1': it needs 32 pages of 2048 kB, "
)
RESERVE_AT_BOOT = (
    "Free some memory, or reserve hugepages at boot (hugepagesz= and hugepages= on the kernel "
    "command line)\n"
)


@pytest.mark.parametrize(
    ("free", "cap", "shortfall"),
    [
        (
            4,
            24,
            "4 were free, and the kernel added only 20 of the 28 asked for: 8 pages missing (the "
            "20 it added were given back). ",
        ),
        (0, 0, "0 were free, and the kernel added only 0 of the 32 asked for: 32 pages missing. "),
    ],
    ids=["fewer", "none"],
)
def test_kernel_giving_fewer_pages_fails_the_start_and_gives_them_back(
    module: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    pool: HugeTLB,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    free: int,
    cap: int,
    shortfall: str,
) -> None:
    pool.admin_sets(free)
    limit_kernel(module, monkeypatch, pool, cap=cap)
    rc = run_in_process(module, monkeypatch, pool, START, hugepage_xml("g1"), tmp_path)
    assert rc == 2
    assert capsys.readouterr().err == CANNOT_RESERVE + shortfall + RESERVE_AT_BOOT
    assert (pool.nr(), pool.books()) == (free, {})


def test_settings_never_come_from_custom_properties(
    module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIBVIRT_BRIDGE_HUGEPAGES_STATE_DIR", "/srv/books")
    props = {"LIBVIRT_BRIDGE_SYSFS_ROOT": "/tmp/x"}
    assert module.setting("LIBVIRT_BRIDGE_SYSFS_ROOT", props) == "/sys"
    assert module.setting("LIBVIRT_BRIDGE_HUGEPAGES_STATE_DIR", props) == "/srv/books"
    monkeypatch.delenv("LIBVIRT_BRIDGE_HUGEPAGES_STATE_DIR")
    default = module.setting("LIBVIRT_BRIDGE_HUGEPAGES_STATE_DIR", {})
    assert default == "/var/lib/libvirt-bridge/hugepages"


# -- through the bridge, as libvirt calls it ---------------------------------------------------


def test_a_vetoed_start_is_given_back_at_after_vm_destroy(bridge: Bridge, pool: HugeTLB) -> None:
    install_wrapped(bridge, "hugepages", pool.env())
    bridge.script(START, "99_no", "#!/bin/sh\necho 'not today' >&2\nexit 1\n")
    xml = hugepage_xml("vm1")
    result = bridge.qemu("vm1", "prepare", "begin", xml)
    assert result.returncode == 1
    assert b"not today" in result.stderr
    pool.settle()
    assert pool.nr() == 32
    # libvirt cleans a failed start up like a stop: stopped, then release.
    assert bridge.qemu("vm1", "stopped", "end", xml).returncode == 0
    assert bridge.qemu("vm1", "release", "end", xml, extra="failed").returncode == 0
    bridge.wait_async()
    pool.settle()
    assert (pool.nr(), pool.books()) == (0, {})
    assert "after_vm_destroy" in bridge.log_text()


def test_two_guests_through_the_bridge(bridge: Bridge, pool: HugeTLB) -> None:
    install_wrapped(bridge, "hugepages", pool.env())
    g1, g2 = hugepage_xml("g1"), hugepage_xml("g2")
    assert bridge.qemu("g1", "prepare", "begin", g1).returncode == 0
    pool.qemu_starts(32)
    assert bridge.qemu("g2", "migrate", "begin", g2).returncode == 0  # incoming
    assert bridge.qemu("g2", "prepare", "begin", g2).returncode == 0
    pool.qemu_starts(32)
    assert pool.nr() == 64
    pool.qemu_stops(32)
    bridge.qemu("g1", "stopped", "end", g1)
    bridge.qemu("g1", "release", "end", g1, extra="saved")  # after_vm_hibernate
    bridge.wait_async()
    pool.settle()
    assert (pool.nr(), pool.free()) == (32, 0)
    assert list(pool.books()) == [uuid_of(g2)]
    pool.qemu_stops(32)
    bridge.qemu("g2", "stopped", "end", g2)
    bridge.qemu("g2", "release", "end", g2, extra="migrated")  # after_vm_migrate_source
    bridge.wait_async()
    pool.settle()
    assert (pool.nr(), pool.books()) == (0, {})
    log = bridge.log_text()
    for event in (START, INCOMING, HIBERNATE, OUTGOING):
        assert f"{event} domain=" in log, event


def test_state_file_is_json_per_uuid(pool: HugeTLB, tmp_path: Path) -> None:
    g1 = hugepage_xml("g1")
    run(pool, START, g1, tmp_path)
    [path] = pool.state.glob("*.json")
    record = json.loads(path.read_text())
    assert path.name == f"{uuid_of(g1)}.json"
    assert record["name"] == "g1"
    assert record["reserved"] == {"2048": 32}
    assert record["boot_id"] == (pool.proc / "sys/kernel/random/boot_id").read_text().strip()
