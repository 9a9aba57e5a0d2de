"""The one table from libvirt hook calls to VDSM event names.

Read by the hook entry point, the listener, the docs and the tests. A row is keyed by the
call exactly as libvirt makes it (driver, op, subop) plus a *context* the bridge works out
from its own bookkeeping, because libvirt uses the same call for different VDSM events:

- ``prepare``/``started`` context: ``fresh`` (a cold boot), ``restore`` (a restore or the
  start of a managed-saved guest) or ``migrate`` (an incoming migration);
- ``stopped``/``release`` context: ``destroy`` (destroy, shutdown, crash, failed start),
  ``saved`` (save, managedsave) or ``migrated`` (migrated out).

This module is on the hook's fast path: standard library only, nothing heavy imported.
"""

from __future__ import annotations

SYNC = "sync"
ASYNC = "async"

XML_NONE = "none"
XML_READ_ONLY = "read-only"
XML_WRITABLE = "writable"
# One device's element alone, not the domain (VDSM's device events): read-only, or what
# the scripts leave is what the verb applies.
XML_DEVICE = "device"
XML_DEVICE_WRITABLE = "device-writable"

ANY = ""
# Contexts of prepare/started (how a domain starts) and of stopped/release (how it stops).
FRESH = "fresh"
RESTORE = "restore"
MIGRATE = "migrate"
DESTROY = "destroy"
SAVED = "saved"
MIGRATED = "migrated"
# libvirt's device events, as the listener's rows name them (the op; the subop is the tag
# of the device's element).
DEVICE_ADDED = "device-added"
DEVICE_REMOVED = "device-removed"
REMOVAL_FAILED = "device-removal-failed"
# Contexts of the device verbs' rows: before the change, and how it went.
BEFORE = "before"
DONE = "done"
FAILED = "failed"
NOT_REMOVED = "not-removed"


class Row:
    """One libvirt call (in one context) and the VDSM event it fires."""

    __slots__ = ("context", "driver", "event", "mode", "op", "subop", "veto", "xml")

    def __init__(
        self,
        driver: str,
        op: str,
        subop: str,
        context: str,
        event: str,
        mode: str,
        veto: bool,
        xml: str,
    ) -> None:
        self.driver = driver
        self.op = op
        self.subop = subop
        self.context = context
        self.event = event
        self.mode = mode
        self.veto = veto
        self.xml = xml

    @property
    def libvirt_argv(self) -> str:
        """How libvirt calls it: ``qemu NAME prepare begin -``, ``daemon - start - start``."""
        if self.driver == "daemon":
            return f"daemon - {self.op} {self.subop} {self.op}"
        if self.driver == "listener" and self.xml == XML_DEVICE:
            return f"event {self.op.upper().replace('-', '_')}, device <{self.subop}>"
        if self.driver == "listener":
            return f"event {self.op.upper()}/{self.subop.upper()}"
        if self.driver == "verb" and self.xml in (XML_DEVICE, XML_DEVICE_WRITABLE):
            return f"libvirt-bridge {self.op} DOMAIN <{self.subop}>"
        if self.driver == "verb":
            return f"libvirt-bridge {self.op} DOMAIN"
        extra = "REASON" if self.op == "release" else "-"
        return f"qemu NAME {self.op} {self.subop} {extra}"

    @property
    def source(self) -> str:
        """What fired the event, as a run's record names it: ``qemu prepare begin (fresh)``,
        ``event SUSPENDED/PAUSED``, ``libvirt-bridge pause``."""
        if self.driver == "listener":
            return self.libvirt_argv
        if self.driver == "verb":
            return f"libvirt-bridge {self.op}"
        return self.trigger

    @property
    def trigger(self) -> str:
        """The libvirt call as an operator reads it, e.g. ``qemu prepare begin (fresh)``."""
        call = f"{self.driver} {self.op} {self.subop}"
        return f"{call} ({self.context})" if self.context else call

    def __repr__(self) -> str:
        return f"Row({self.trigger} -> {self.event})"


# fmt: off
HOOK_TABLE: tuple[Row, ...] = (
    Row("daemon", "start",    "-",     ANY,        "before_vdsm_start",             SYNC,  False, XML_NONE),       # noqa: E501
    Row("daemon", "shutdown", "-",     ANY,        "after_vdsm_stop",               ASYNC, False, XML_NONE),       # noqa: E501
    Row("qemu",   "prepare",  "begin", FRESH,      "before_vm_start",               SYNC,  True,  XML_READ_ONLY),  # noqa: E501
    Row("qemu",   "started",  "begin", FRESH,      "after_vm_start",                ASYNC, False, XML_READ_ONLY),  # noqa: E501
    Row("qemu",   RESTORE,    "begin", ANY,        "before_vm_dehibernate",         SYNC,  True,  XML_WRITABLE),   # noqa: E501
    Row("qemu",   "started",  "begin", RESTORE,    "after_vm_dehibernate",          ASYNC, False, XML_READ_ONLY),  # noqa: E501
    Row("qemu",   MIGRATE,    "begin", ANY,        "before_vm_migrate_destination", SYNC,  True,  XML_WRITABLE),   # noqa: E501
    Row("qemu",   "stopped",  "end",   DESTROY,    "before_vm_destroy",             SYNC,  False, XML_READ_ONLY),  # noqa: E501
    Row("qemu",   "release",  "end",   DESTROY,    "after_vm_destroy",              ASYNC, False, XML_READ_ONLY),  # noqa: E501
    Row("qemu",   "release",  "end",   SAVED,      "after_vm_hibernate",            ASYNC, False, XML_READ_ONLY),  # noqa: E501
    Row("qemu",   "release",  "end",   MIGRATED,   "after_vm_migrate_source",       ASYNC, False, XML_READ_ONLY),  # noqa: E501
    # libvirt has no hook for these: the listener fires them from lifecycle events, once
    # the domain's state reason (the context here) shows what really happened.
    Row("listener", "suspended", "paused",   "user",     "after_vm_pause",               ASYNC, False, XML_READ_ONLY),  # noqa: E501
    Row("listener", "suspended", "paused",   "ioerror",  "after_vm_pause",               ASYNC, False, XML_READ_ONLY),  # noqa: E501
    Row("listener", "suspended", "paused",   "watchdog", "after_vm_pause",               ASYNC, False, XML_READ_ONLY),  # noqa: E501
    Row("listener", "suspended", "ioerror",  ANY,        "after_vm_pause",               ASYNC, False, XML_READ_ONLY),  # noqa: E501
    Row("listener", "suspended", "watchdog", ANY,        "after_vm_pause",               ASYNC, False, XML_READ_ONLY),  # noqa: E501
    Row("listener", "resumed",   "unpaused", "unpaused", "after_vm_cont",                ASYNC, False, XML_READ_ONLY),  # noqa: E501
    Row("listener", "resumed",   "migrated", "migrated", "after_vm_migrate_destination", ASYNC, False, XML_READ_ONLY),  # noqa: E501
    # libvirt's device events, by the tag of the device's element (plain virsh
    # attach-device and detach-device fire them too).
    Row("listener", DEVICE_ADDED,   "interface", ANY, "after_nic_hotplug",        ASYNC, False, XML_DEVICE),  # noqa: E501
    Row("listener", DEVICE_ADDED,   "disk",      ANY, "after_disk_hotplug",       ASYNC, False, XML_DEVICE),  # noqa: E501
    Row("listener", DEVICE_ADDED,   "memory",    ANY, "after_memory_hotplug",     ASYNC, False, XML_DEVICE),  # noqa: E501
    Row("listener", DEVICE_REMOVED, "interface", ANY, "after_nic_hotunplug",      ASYNC, False, XML_DEVICE),  # noqa: E501
    Row("listener", DEVICE_REMOVED, "disk",      ANY, "after_disk_hotunplug",     ASYNC, False, XML_DEVICE),  # noqa: E501
    Row("listener", REMOVAL_FAILED, "interface", ANY, "after_nic_hotunplug_fail", ASYNC, False, XML_DEVICE),  # noqa: E501
    # Nor for these "before" events: the libvirt-bridge verbs run them, then call libvirt.
    Row("verb", "start",   "-", ANY, "before_vm_start",          SYNC, True,  XML_WRITABLE),
    Row("verb", "pause",   "-", ANY, "before_vm_pause",          SYNC, True,  XML_READ_ONLY),
    Row("verb", "resume",  "-", ANY, "before_vm_cont",           SYNC, True,  XML_READ_ONLY),
    Row("verb", "save",    "-", ANY, "before_vm_hibernate",      SYNC, True,  XML_READ_ONLY),
    Row("verb", "migrate", "-", ANY, "before_vm_migrate_source", SYNC, True,  XML_READ_ONLY),
    Row("verb", "destroy", "-", ANY, "before_vm_destroy",        SYNC, False, XML_READ_ONLY),
    # The device verbs, by the tag of the device's element: the "before" events, and the
    # "after" events libvirt reports no event for (its device events fire the others).
    Row("verb", "attach-device", "interface", BEFORE, "before_nic_hotplug",       SYNC,  True,  XML_DEVICE_WRITABLE),  # noqa: E501
    Row("verb", "attach-device", "disk",      BEFORE, "before_disk_hotplug",      SYNC,  True,  XML_DEVICE_WRITABLE),  # noqa: E501
    Row("verb", "attach-device", "memory",    BEFORE, "before_memory_hotplug",    SYNC,  True,  XML_DEVICE_WRITABLE),  # noqa: E501
    Row("verb", "attach-device", "interface", FAILED, "after_nic_hotplug_fail",   ASYNC, False, XML_DEVICE),           # noqa: E501
    Row("verb", "detach-device", "interface", BEFORE, "before_nic_hotunplug",     SYNC,  True,  XML_DEVICE),           # noqa: E501
    Row("verb", "detach-device", "disk",      BEFORE, "before_disk_hotunplug",    SYNC,  True,  XML_DEVICE),           # noqa: E501
    Row("verb", "detach-device", "interface", NOT_REMOVED, "after_nic_hotunplug_fail", ASYNC, False, XML_DEVICE),      # noqa: E501
    Row("verb", "update-device", "interface", BEFORE, "before_update_device",     SYNC,  True,  XML_DEVICE_WRITABLE),  # noqa: E501
    Row("verb", "update-device", "interface", DONE,   "after_update_device",      ASYNC, False, XML_DEVICE),           # noqa: E501
    Row("verb", "update-device", "interface", FAILED, "after_update_device_fail", ASYNC, False, XML_DEVICE),           # noqa: E501
)
# fmt: on

# VDSM's per-device events beside a VM's: each fires once per device that has custom
# properties (disks have none for device_create, as in VDSM), before the VM's event (a
# before_*) or after it (an after_*), in the same way (sync or async, veto or not).
DEVICE_COMPANIONS: dict[str, str] = {
    "before_vm_start": "before_device_create",
    "after_vm_start": "after_device_create",
    "before_vm_destroy": "before_device_destroy",
    "after_vm_destroy": "after_device_destroy",
    "before_vm_migrate_source": "before_device_migrate_source",
    "after_vm_migrate_source": "after_device_migrate_source",
    "before_vm_migrate_destination": "before_device_migrate_destination",
    "after_vm_migrate_destination": "after_device_migrate_destination",
}
# The one companion whose scripts' element is applied (where the VM's event's XML is).
APPLIED_COMPANIONS = frozenset({"before_device_create"})
# The device elements each companion fires for (those with custom properties), as VDSM's:
# before_device_create for the devices whose element VDSM rebuilds from a hook's output
# while it builds the domain XML (domxml_preprocess: NICs, host devices, leases); the others
# for the devices of VDSM's model that carry custom properties (vm._customDevices), which
# are NICs: a disk's properties go to its storage, a host device's to its creation only.
COMPANION_TAGS: dict[str, frozenset[str]] = {
    event: frozenset({"interface", "hostdev", "lease"})
    if event == "before_device_create"
    else frozenset({"interface"})
    for event in DEVICE_COMPANIONS.values()
}

# Calls libvirt makes that fire no VDSM event on purpose (documented, not "unknown").
SILENT_CALLS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("qemu", "start", "begin"),
        ("qemu", "reconnect", "begin"),
        ("daemon", "reload", "begin"),
    }
)

# Calls whose non-zero exit makes libvirt kill the VM or is ignored: always exit 0.
ALWAYS_SUCCEED: frozenset[tuple[str, str]] = frozenset(
    {
        ("qemu", "started"),
        ("qemu", "reconnect"),
        ("qemu", "stopped"),
        ("qemu", "release"),
        ("daemon", "start"),
        ("daemon", "shutdown"),
        ("daemon", "reload"),
    }
)

# libvirt >= 10.5 passes the shutoff reason as `release end <reason>`.
RELEASE_REASON_CONTEXT: dict[str, str] = {"saved": SAVED, "migrated": MIGRATED}

# The qemu hook's calls that fire events, in the order libvirt makes them.
QEMU_FIRING_CALLS: tuple[tuple[str, str], ...] = tuple(
    dict.fromkeys((row.op, row.subop) for row in HOOK_TABLE if row.driver == "qemu")
)

# Calls whose bookkeeping decides what a later call of the same operation fires: the marker
# a restore or an incoming migration leaves tells `prepare` that it is no boot; what
# `stopped` saw of the stop tells `release` which one it was (libvirt < 10.5 does not say).
# `started` needs none: libvirt's status file tells a boot, a restore and an incoming
# migration apart (see state.py).
DECIDES: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("restore", "begin"): (("prepare", "begin"),),
    ("migrate", "begin"): (("prepare", "begin"),),
    ("stopped", "end"): (("release", "end"),),
}

# Daemon-hook calls that keep no bookkeeping (a daemon's start and reload record which
# daemon looked for hooks, for `status`): with no script for their events, the launcher
# answers them from sh.
DAEMON_FAST_CALLS: tuple[tuple[str, str], ...] = (("shutdown", "-"),)

# Calls that read libvirt's status file of the domain during the call, to tell which of
# their rows applies (see hookcall._context).
READS_STATUS_FILE: frozenset[tuple[str, str]] = frozenset(
    {("started", "begin"), ("stopped", "end")}
)

# qemu calls whose every row is async and whose bookkeeping no later call reads: with work
# to do, the launcher saves them in the inbox and returns at once (see inbox.py).
DEFERRED_CALLS: tuple[tuple[str, str], ...] = tuple(
    (op, subop)
    for op, subop in QEMU_FIRING_CALLS
    if (op, subop) not in DECIDES
    and all(
        row.mode == ASYNC
        for row in HOOK_TABLE
        if row.driver == "qemu" and (row.op, row.subop) == (op, subop)
    )
)


# What the listener fires (libvirt has no hook call for them), in the table's order.
LISTENER_EVENTS = tuple(dict.fromkeys(r.event for r in HOOK_TABLE if r.driver == "listener"))


def listener_events_text() -> str:
    """``LISTENER_EVENTS`` as a sentence's list: "a, b and c"."""
    *most, last = LISTENER_EVENTS
    return f"{', '.join(most)} and {last}"


def call_events(op: str, subop: str, driver: str = "qemu") -> tuple[str, ...]:
    """The events the call ``op subop`` of ``driver``'s hook fires, in one context or another."""
    return tuple(
        dict.fromkeys(
            row.event
            for row in HOOK_TABLE
            if row.driver == driver and (row.op, row.subop) == (op, subop)
        )
    )


def served_events(op: str, subop: str) -> tuple[str, ...]:
    """The events the qemu call ``op subop`` has work for.

    Its own, and those of the later calls its bookkeeping decides. With no script in any of
    them, the launcher may answer the call without the bridge (see fastpath.py).
    """
    events = list(call_events(op, subop))
    for later in DECIDES.get((op, subop), ()):
        events.extend(call_events(*later))
    events += [DEVICE_COMPANIONS[e] for e in events if e in DEVICE_COMPANIONS]
    return tuple(dict.fromkeys(events))


# The events libvirt's qemu hook can fire.
QEMU_EVENTS: tuple[str, ...] = tuple(
    dict.fromkeys(row.event for row in HOOK_TABLE if row.driver == "qemu")
)

# Every event the bridge can fire; the hooks root gets one directory for each.
EVENTS: tuple[str, ...] = tuple(
    dict.fromkeys([*(row.event for row in HOOK_TABLE), *DEVICE_COMPANIONS.values()])
)


# Events of one device: their scripts get its element, and its properties then the VM's.
DEVICE_EVENTS: frozenset[str] = frozenset(
    row.event for row in HOOK_TABLE if row.xml in (XML_DEVICE, XML_DEVICE_WRITABLE)
) | frozenset(DEVICE_COMPANIONS.values())

# Events that concern no domain: their scripts get no XML, no properties and no vmId.
DAEMON_EVENTS: frozenset[str] = frozenset(row.event for row in HOOK_TABLE if row.xml == XML_NONE)

# The daemons that run the qemu driver: on a modular host every daemon calls the daemon
# hook, and only these fire before_vdsm_start and after_vdsm_stop.
QEMU_DAEMONS: tuple[str, ...] = ("libvirtd", "virtqemud")

# VDSM hook points the bridge does not fire, and why (``status`` and the README say it).


def _vdsm_api(what: str) -> str:
    return f"a call of VDSM's own API ({what}) that plain libvirt has no counterpart of"


VDSM_ONLY_EVENTS: dict[str, str] = {
    "before_set_num_of_cpus": _vdsm_api("setNumberOfCpus"),
    "after_set_num_of_cpus": _vdsm_api("setNumberOfCpus"),
    "before_vm_set_ticket": _vdsm_api("a display's password"),
    "after_vm_set_ticket": _vdsm_api("a display's password"),
    "after_disk_prepare": _vdsm_api("oVirt's storage"),
    "before_network_setup": _vdsm_api("the host's networks"),
    "after_network_setup": _vdsm_api("the host's networks"),
    "after_network_setup_fail": _vdsm_api("the host's networks"),
    "before_get_vm_stats": _vdsm_api("statistics"),
    "after_get_vm_stats": _vdsm_api("statistics"),
    "before_get_all_vm_stats": _vdsm_api("statistics"),
    "after_get_all_vm_stats": _vdsm_api("statistics"),
    "before_get_caps": _vdsm_api("host capabilities"),
    "after_get_caps": _vdsm_api("host capabilities"),
    "before_get_stats": _vdsm_api("statistics"),
    "after_get_stats": _vdsm_api("statistics"),
    "after_hostdev_list_by_caps": _vdsm_api("host devices"),
}


def find_row(driver: str, op: str, subop: str, context: str) -> Row | None:
    """The row for this call in this context, or None when the call fires no event."""
    for row in HOOK_TABLE:
        if (row.driver, row.op, row.subop) == (driver, op, subop) and row.context in (
            ANY,
            context,
        ):
            return row
    return None


def listener_row(event: str) -> Row:
    """A row the listener fires ``event`` from (they differ only in the libvirt event behind
    it, which the listener names itself)."""
    return next(r for r in HOOK_TABLE if r.driver == "listener" and r.event == event)


def has_rows(driver: str, op: str, subop: str) -> bool:
    """Whether this call can fire an event in some context."""
    return any((r.driver, r.op, r.subop) == (driver, op, subop) for r in HOOK_TABLE)


def release_context(reason: str) -> str:
    """The stop context that a libvirt >= 10.5 ``release end <reason>`` names."""
    return RELEASE_REASON_CONTEXT.get(reason, DESTROY)


def markdown_table() -> str:
    """The table as the README shows it (a test keeps the two equal)."""
    lines = [
        "| VDSM event | libvirt call | when | runs | can veto | XML |",
        "|---|---|---|---|---|---|",
    ]
    for row in HOOK_TABLE:
        call = f"`{row.libvirt_argv}`"
        if row.driver == "listener" and row.context:
            when = f"state reason {row.context}"
        else:
            when = CONTEXT_TEXT[row.context]
        veto = "yes" if row.veto else "no"
        xml = {
            XML_NONE: "none",
            XML_READ_ONLY: "read-only",
            XML_WRITABLE: "writable (stdout)",
            XML_DEVICE: "the device's element, read-only",
            XML_DEVICE_WRITABLE: "the device's element, writable",
        }
        lines.append(f"| {row.event} | {call} | {when} | {row.mode} | {veto} | {xml[row.xml]} |")
    return "\n".join(lines) + "\n"


def unfired_markdown() -> str:
    """The VDSM events the bridge does not fire, and why, as the README shows them."""
    lines = ["| VDSM event | why it does not fire here |", "|---|---|"]
    lines += [f"| {event} | {why} |" for event, why in VDSM_ONLY_EVENTS.items()]
    return "\n".join(lines) + "\n"


CONTEXT_TEXT: dict[str, str] = {
    ANY: "always",
    FRESH: "a cold boot",
    RESTORE: "after a restore or a managed-save start",
    MIGRATE: "an incoming migration",
    DESTROY: "destroy, shutdown, crash or failed start",
    SAVED: "save or managedsave",
    MIGRATED: "migrated out",
    BEFORE: "before the change",
    DONE: "libvirt made the change",
    FAILED: "libvirt refused the change",
    NOT_REMOVED: "libvirt refused the detach, or the device is still there after the wait",
}
