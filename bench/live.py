"""Parts 3 to 5: a real libvirt daemon in a private sandbox (``libvirt_bridge_lab.sandbox``).

The benchmark talks to the sandbox through libvirt-python, not ``virsh``, so that a
figure holds libvirt's work and the hooks', not a client's start.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import libvirt
import libvirt_qemu
from common import PYTHON, bridge_idle, median, ms, quantile, ratio, spread, table
from hookcalls import BASH_DISPATCHER

from libvirt_bridge import launcher, log, mapping
from libvirt_bridge_lab.sandbox import Sandbox

TARGET_CYCLE_RATIO = 1.03
TARGET_SCRIPTS_CYCLE_RATIO = 1.10  # with a script in every event
TARGET_RESTART_RATIO = 1.05  # the bridge over a no-op hook
TARGET_LISTENER_P50 = 0.100  # seconds, lifecycle event -> script start
TARGET_LISTENER_P99 = 0.250
SETTLE = 0.3  # seconds of quiet before each timed operation
QUERY_STATUS = '{"execute":"query-status"}'
PROBE = """#!/bin/bash
printf '%s %s {event}\\n' "$EPOCHREALTIME" "$vmId" >> {records}
"""

_loop_started = False


def start_event_loop() -> None:
    """libvirt's default event loop, in a thread: before any connection is opened."""
    global _loop_started
    if _loop_started:
        return
    libvirt.virEventRegisterDefaultImpl()

    def run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=run, name="libvirt-events", daemon=True).start()
    _loop_started = True


class Reaper:
    """Reaps the sandbox's orphans (QEMU, the daemons, async runners) as soon as they exit.

    An orphan goes to PID 1, and the PID 1 of some machines reaps only about once a
    second, while libvirt's destroy waits until its QEMU is gone: it would measure that
    wait (1.2 or 2.0 s) instead of libvirt's work. As a child subreaper, this process gets
    the orphans of what it starts, and reaps them at once, as systemd would.
    """

    # What this process starts through subprocess, which waits for them itself (and whose
    # exit status matters). Not "python": the bridge's async runners, orphaned to this
    # process, are named so; a Python helper reaped here looks to subprocess as exit 0.
    OWN = frozenset({"virsh", "nsenter", "unshare", "sh"})
    PR_SET_CHILD_SUBREAPER = 36

    def start(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(self.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        threading.Thread(target=self._run, name="reaper", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                time.sleep(0.05)
                continue
            if info is None:
                continue
            comm = _comm(info.si_pid)
            if comm is not None and comm not in self.OWN:
                try:
                    os.waitpid(info.si_pid, 0)
                except ChildProcessError:
                    pass
            else:
                time.sleep(0.002)  # subprocess reaps its own children


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode(errors="replace")


@contextmanager
def connection(uri: str) -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(uri)
    try:
        yield conn
    finally:
        conn.close()


class Bench:
    """One sandbox whose hook files can be swapped between the variants cheaply."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.state_dir = os.path.join(sandbox.bridge_dir, "bench-state")
        self.configs = {
            "empty": self._config("empty", {}),
            "scripts": self._config(
                "scripts", {event: "#!/bin/sh\nexit 0\n" for event in mapping.EVENTS}
            ),
        }

    def _config(self, label: str, scripts: dict[str, str]) -> str:
        root = os.path.join(self.sandbox.hooks_dir, f"bench-{label}.d")
        for event in mapping.EVENTS:
            os.makedirs(os.path.join(root, event), mode=0o755, exist_ok=True)
        for event, text in scripts.items():
            path = os.path.join(root, event, "50_exit0")
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        values = {
            "hooks_dirs": [root],
            "state_dir": self.state_dir,
            "log_file": os.path.join(self.sandbox.bridge_dir, "bench.log"),
        }
        path = os.path.join(self.sandbox.bridge_dir, f"bench-{label}.toml")
        with open(path, "w") as f:
            f.writelines(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
        return path

    def use(self, variant: str) -> None:
        """Install the hook files of ``variant`` (a key of ``VARIANTS``)."""
        for driver in launcher.DRIVERS:
            path = os.path.join(self.sandbox.hooks_dir, driver)
            if os.path.lexists(path):
                os.unlink(path)
            if variant in self.configs:
                launcher.write(path, driver, self.configs[variant])
            elif variant == "true":
                shutil.copy("/bin/true", path)
            elif variant == "floor" and driver == "qemu":
                script = os.path.join(self.sandbox.hooks_dir, "floor-exit0")
                _write_executable(script, "#!/bin/sh\nexit 0\n")
                _write_executable(path, FLOOR_HOOK.format(python=PYTHON, script=script))
            elif variant == "bash" and driver == "qemu":
                os.makedirs(os.path.join(self.sandbox.hooks_dir, "qemu.d"), exist_ok=True)
                _write_executable(path, BASH_DISPATCHER.format(root=self.sandbox.hooks_dir))

    def wait_queues(self, state_dir: str = "", timeout: float = 30.0) -> None:
        """Until no async job of the bridge is queued or running, nor waits in its inbox."""
        deadline = time.monotonic() + timeout
        while not bridge_idle(state_dir or self.state_dir):
            if time.monotonic() > deadline:
                raise RuntimeError(f"async jobs still queued after {timeout} s")
            time.sleep(0.01)


VARIANTS = {
    "none": "no hook installed (reference)",
    "true": "no-op hook (`/bin/true` as `qemu` and `daemon`)",
    "bash": "bash dispatcher (`qemu` hook only), no script",
    "empty": "bridge, empty event directories",
    "floor": "floor of a Python hook: bare Python reads the XML, then an `exit 0` script, "
    "at `prepare` and `stopped` only",
    "scripts": "bridge, one `exit 0` sh script per event",
}
# The least a hook costs that runs its sync events' scripts through Python: an interpreter
# start inside each of the two calls whose scripts libvirt waits for (before_vm_start,
# before_vm_destroy), and nothing for the others.
FLOOR_HOOK = """#!/bin/sh
case "$2 $3" in
'prepare begin'|'stopped end')
    '{python}' -I -S -c 'import sys; sys.stdin.buffer.read()' && exec '{script}' ;;
esac
"""


def cycles(bench: Bench, rounds: int) -> tuple[str, list[str]]:
    """Part 3: start then destroy one guest, the variants interleaved."""
    sandbox = bench.sandbox
    sandbox.define_guest("cycle1")
    times: dict[str, dict[str, list[float]]] = {v: {"start": [], "destroy": []} for v in VARIANTS}
    order = list(VARIANTS)
    with connection(sandbox.uri) as conn:
        dom = conn.lookupByName("cycle1")
        for index in range(rounds + 1):
            # Each round starts one variant later, so that none always follows the same one.
            shift = index % len(order)
            for variant in order[shift:] + order[:shift]:
                bench.use(variant)
                sandbox.reload()  # libvirt looks for hook files at start and on SIGHUP only
                time.sleep(SETTLE)
                started = time.perf_counter()
                dom.create()
                start = time.perf_counter() - started
                bench.wait_queues()
                time.sleep(SETTLE)
                started = time.perf_counter()
                dom.destroy()
                destroy = time.perf_counter() - started
                bench.wait_queues()
                if index:  # the first round warms up
                    times[variant]["start"].append(start)
                    times[variant]["destroy"].append(destroy)
    cycle = {
        v: [s + d for s, d in zip(t["start"], t["destroy"], strict=True)] for v, t in times.items()
    }
    ref = {
        "start": median(times["none"]["start"]),
        "destroy": median(times["none"]["destroy"]),
        "cycle": median(cycle["none"]),
    }
    rows = []
    for variant, label in VARIANTS.items():
        starts, destroys = times[variant]["start"], times[variant]["destroy"]
        rows.append(
            [
                label,
                str(len(starts)),
                f"{ms(median(starts))} ({spread(starts)})",
                f"{ms(median(destroys))} ({spread(destroys)})",
                f"{ms(median(cycle[variant]))} ({spread(cycle[variant])})",
                ratio(median(starts), ref["start"]),
                ratio(median(destroys), ref["destroy"]),
                ratio(median(cycle[variant]), ref["cycle"]),
                ms(median(cycle[variant]) - ref["cycle"]),
            ]
        )
    header = ["variant", "n", "start ms (p25-p75)", "destroy ms (p25-p75)", "cycle ms (p25-p75)"]
    header += ["start ÷ no hook", "destroy ÷ no hook", "cycle ÷ no hook", "cycle - no hook ms"]
    empty = median(cycle["empty"]) / ref["cycle"]
    verdict = "holds" if empty <= TARGET_CYCLE_RATIO else "MISSED"
    scripts = median(cycle["scripts"]) / ref["cycle"]
    scripts_verdict = "holds" if scripts <= TARGET_SCRIPTS_CYCLE_RATIO else "MISSED"
    floor = median(cycle["floor"]) / ref["cycle"]
    above_floor = median(cycle["scripts"]) - median(cycle["floor"])
    checks = [
        f"Target 3 (start+destroy with empty event directories within "
        f"{(TARGET_CYCLE_RATIO - 1) * 100:.0f} % of no hook): {empty:.3f} x — {verdict}",
        f"Target 5 (start+destroy with one `exit 0` script in every event ≤ "
        f"{TARGET_SCRIPTS_CYCLE_RATIO} x no hook): {scripts:.3f} x — {scripts_verdict}; "
        f"the floor of a hook that starts Python for the two sync events: {floor:.3f} x; "
        f"the bridge above the floor: {ms(above_floor)} ms a cycle",
    ]
    note = (
        f"`virDomainCreate` then `virDomainDestroy` of a {sandbox.domain_type} guest "
        f"(64 MiB, no disk); the variants alternate, each after a SIGHUP and {SETTLE} s of "
        "quiet, each round starting one variant later than the one before; async scripts "
        "finish before the next operation.\n"
    )
    return note + "\n" + table(header, rows), checks


def _write_executable(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


def start_guests(bench: Bench, count: int) -> tuple[list[str], float]:
    """Define and start ``count`` guests (no hook installed meanwhile), and wait until they
    are idle: their names, and the seconds from their start until then."""
    sandbox = bench.sandbox
    bench.use("none")
    sandbox.reload()
    names = [f"many{index:02d}" for index in range(1, count + 1)]
    for name in names:
        sandbox.define_guest(name)
    began = time.monotonic()
    with connection(sandbox.uri) as conn, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda name: conn.lookupByName(name).create(), names))
    _wait_idle([_qemu_pid(sandbox, name) for name in names])
    return names, time.monotonic() - began


# A guest without an OS is busy for about 3 CPU-seconds while SeaBIOS looks for something
# to boot, then idles at 0.017-0.021 CPU: 50 guests started at once keep 2 cores busy for a
# couple of minutes, which the parts that follow would measure instead of the bridge. The
# bar sits between the two, and below what a saturated machine gives each of 50 guests
# (2 CPUs / 50 = 0.04), or the wait would end while they still boot.
IDLE_CPU_PER_GUEST = 0.03
IDLE_WINDOW = 2.0


def _qemu_pid(sandbox: Sandbox, name: str) -> int:
    with open(os.path.join(sandbox.run_dir, "qemu", f"{name}.pid")) as f:
        return int(f.read())


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _wait_idle(pids: list[int], timeout: float = 900.0) -> None:
    """Until the processes ``pids`` use under IDLE_CPU_PER_GUEST each, over a window."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = _cpu_seconds(pids)
        time.sleep(IDLE_WINDOW)
        if _cpu_seconds(pids) - before < IDLE_CPU_PER_GUEST * len(pids) * IDLE_WINDOW:
            return
    raise RuntimeError(f"the guests were still busy after {timeout:.0f} s")


def _all_answer(uri: str, names: list[str], timeout: float = 300.0) -> None:
    """Until every guest answers a QMP query-status (it waits for reconnect's job)."""
    deadline = time.monotonic() + timeout
    with connection(uri) as conn:
        for name in names:
            while True:
                try:
                    libvirt_qemu.qemuMonitorCommand(conn.lookupByName(name), QUERY_STATUS, 0)
                    break
                except libvirt.libvirtError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)


def restarts(bench: Bench, names: list[str], rounds: int) -> tuple[str, list[str]]:
    """Part 4: restart libvirtd with the guests running, until every reconnect finished."""
    sandbox = bench.sandbox
    variants = {key: VARIANTS[key] for key in ("none", "true", "bash", "empty")}
    total: dict[str, list[float]] = {v: [] for v in variants}
    stop: dict[str, list[float]] = {v: [] for v in variants}
    for index in range(rounds + 1):
        for variant in variants:
            bench.use(variant)
            time.sleep(1.0)
            began = time.perf_counter()
            sandbox.stop_daemon()
            stopped = time.perf_counter()
            sandbox.start_daemon()
            _all_answer(sandbox.uri, names)
            if index:  # the first round warms up
                total[variant].append(time.perf_counter() - began)
                stop[variant].append(stopped - began)
            bench.wait_queues()
    rows = []
    for variant, label in variants.items():
        rest = [t - s for t, s in zip(total[variant], stop[variant], strict=True)]
        rows.append(
            [
                label,
                str(len(total[variant])),
                ms(median(total[variant])),
                ms(median(stop[variant])),
                ms(median(rest)),
                ratio(median(total[variant]), median(total["none"])),
            ]
        )
    header = ["variant", "n", "restart → all answer ms", "stop ms", "start → all answer ms"]
    header += ["÷ no hook", "÷ no-op hook"]
    for row, variant in zip(rows, variants, strict=True):
        row.append(ratio(median(total[variant]), median(total["true"])))
    note = (
        f"{len(names)} running guests, idle (SeaBIOS done looking for a boot device); from "
        "SIGTERM to libvirtd until every guest answered "
        "`qemu-monitor-command … query-status` (which waits for the job reconnect holds).\n"
    )
    bridge = median(total["empty"]) / median(total["true"])
    verdict = "holds" if bridge <= TARGET_RESTART_RATIO else "MISSED"
    check = (
        f"Target 6 (daemon restart with {len(names)} guests, the bridge with empty event "
        f"directories ≤ {TARGET_RESTART_RATIO} x the no-op hook): {bridge:.3f} x — {verdict}"
    )
    return note + "\n" + table(header, rows), [check]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class EventClock:
    """When this process saw each (uuid, lifecycle event) of one round."""

    def __init__(self, uri: str) -> None:
        self.seen: dict[tuple[str, int], float] = {}
        self.lock = threading.Lock()
        self.conn = libvirt.openReadOnly(uri)
        self.conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
        )

    def _on_event(
        self, conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int, _: object
    ) -> None:
        now = time.time()
        with self.lock:
            self.seen.setdefault((dom.UUIDString(), event), now)

    def reset(self) -> None:
        with self.lock:
            self.seen.clear()

    def close(self) -> None:
        self.conn.close()


def _wait_records(path: str, event: str, count: int, timeout: float) -> list[tuple[float, str]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                lines = [line.split() for line in f]
        except FileNotFoundError:
            lines = []
        records = [(float(t), uuid) for t, uuid, ev in lines if ev == event]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.02)


def _fired(log_file: str, offset: int) -> dict[tuple[str, str], float]:
    """When the listener logged that it fires (event, uuid), from ``offset`` on.

    Its line: ``listener: after_vm_pause domain='g' uuid=U (...); N script(s)``.
    """
    fired: dict[tuple[str, str], float] = {}
    for entry in log.read(log_file, offset)[0]:
        words = entry.message.split(" ", 2)
        if words[0] == "listener:" and len(words) > 1 and words[1].startswith("after_vm_"):
            fired.setdefault((words[1], entry.fields().get("uuid", "")), entry.time)
    return fired


STAGES = {
    "total": "lifecycle event → script start",
    "listener": "lifecycle event → listener fires (its log line, ms resolution)",
    "runner": "listener fires → script start (queue, runner start, script start)",
}


def listener(bench: Bench, names: list[str], rounds: int) -> tuple[str, list[str]]:
    """Part 5: pause and resume every guest at once; lifecycle event → script start."""
    sandbox = bench.sandbox
    records = os.path.join(sandbox.bridge_dir, "probe-records")
    sandbox.install_bridge()
    for event in ("after_vm_pause", "after_vm_cont"):
        sandbox.add_hook_script(event, "50_probe", PROBE.format(event=event, records=records))
    pid = sandbox.start_listener()
    time.sleep(2.0)  # its first resync
    rss_before = _rss_kib(pid)
    clock = EventClock(sandbox.uri)
    delays: dict[tuple[str, str], list[float]] = {
        (e, stage): [] for e in ("after_vm_pause", "after_vm_cont") for stage in STAGES
    }
    missing = 0
    phases: list[tuple[str, int, Callable[[libvirt.virDomain], int]]] = [
        ("after_vm_pause", libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.virDomain.suspend),
        ("after_vm_cont", libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.virDomain.resume),
    ]
    try:
        with connection(sandbox.uri) as conn, ThreadPoolExecutor(len(names)) as pool:
            domains = [conn.lookupByName(name) for name in names]
            for _ in range(rounds):
                for event, lifecycle, action in phases:
                    if os.path.exists(records):
                        os.unlink(records)
                    clock.reset()
                    offset = os.path.getsize(sandbox.log_file)
                    list(pool.map(action, domains))
                    found = _wait_records(records, event, len(names), timeout=120.0)
                    fired = _fired(sandbox.log_file, offset)
                    for when, uuid in found:
                        seen = clock.seen.get((uuid, lifecycle))
                        logged = fired.get((event, uuid))
                        if seen is None or logged is None:
                            continue
                        delays[event, "total"].append(when - seen)
                        delays[event, "listener"].append(logged - seen)
                        delays[event, "runner"].append(when - logged)
                    missing += len(names) - len(found)
                    bench.wait_queues(sandbox.state_dir)
                    time.sleep(1.0)
        rss_after = _rss_kib(pid)
    finally:
        clock.close()
    rows = []
    for (event, stage), values in delays.items():
        if values:
            row = [ms(median(values)), ms(quantile(values, 0.99)), ms(max(values))]
            rows.append([event, STAGES[stage], str(len(values)), *row])
    text = table(["event", "from → to", "n", "p50 ms", "p99 ms", "max ms"], rows)
    text += "\n" + table(
        ["listener VmRSS", "KiB"],
        [["before the rounds", str(rss_before)], ["after the rounds", str(rss_after)]],
    )
    note = (
        f"{len(names)} idle guests suspended at once, then resumed at once, {rounds} round(s); "
        "from this process's lifecycle event to the probe script's first line "
        "(bash `$EPOCHREALTIME`).\n"
    )
    notes = [f"Listener: {missing} probe record(s) missing"] if missing else []
    for event in ("after_vm_pause", "after_vm_cont"):
        values = delays[event, "total"]
        if not values:
            continue
        p50, p99 = median(values), quantile(values, 0.99)
        holds = p50 <= TARGET_LISTENER_P50 and p99 <= TARGET_LISTENER_P99
        notes.append(
            f"Target 7 ({event}, lifecycle event → script start: p50 ≤ "
            f"{ms(TARGET_LISTENER_P50)} ms, p99 ≤ {ms(TARGET_LISTENER_P99)} ms): p50 "
            f"{ms(p50)} ms, p99 {ms(p99)} ms — {'holds' if holds else 'MISSED'}"
        )
    return note + "\n" + text, notes
