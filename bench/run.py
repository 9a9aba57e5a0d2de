"""Benchmarks of the bridge, side by side with references measured in the same run.

    sudo .venv/bin/python bench/run.py [--quick] [--out FILE] [--parts 1,2,3,4,5]

Parts: 1 one hook call without scripts; 2 the bridge's cost per script; 3 a guest's
start+destroy on a real libvirt daemon; 4 a daemon restart with many guests running;
5 the listener's delay from a lifecycle event to its script. Parts 3-5 run a private
libvirt daemon (``libvirt_bridge_lab.sandbox``) and need root. The report (markdown) goes to
stdout and to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import hookcalls
import libvirt
import live
from common import table

from libvirt_bridge_lab.sandbox import Sandbox, check_host_can_run_libvirt


@dataclass(frozen=True)
class Plan:
    hook_rounds: int
    script_rounds: int
    cycles: int
    guests: int
    restarts: int
    listener_rounds: int


FULL = Plan(hook_rounds=300, script_rounds=60, cycles=40, guests=50, restarts=5, listener_rounds=5)
QUICK = Plan(hook_rounds=15, script_rounds=3, cycles=2, guests=5, restarts=1, listener_rounds=1)


def _version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def machine(sandbox: Sandbox | None) -> str:
    rows = [
        ["CPUs", str(os.cpu_count())],
        ["CPU model", _cpu_model()],
        ["kernel", platform.release()],
        ["python", platform.python_version()],
        ["libvirt (library)", _version(libvirt.getVersion())],
    ]
    if sandbox is not None:
        with live.connection(sandbox.uri) as conn:
            rows.append(["libvirtd", _version(conn.getLibVersion())])
            rows.append(["QEMU", _version(conn.getVersion())])
        rows.append(["guests", "KVM" if sandbox.domain_type == "kvm" else "TCG (no usable KVM)"])
    return table(["machine", ""], rows)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


Part = Callable[[], tuple[str, list[str]]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--out", help="also write the markdown report to this file")
    parser.add_argument("--parts", default="1,2,3,4,5", help="which parts (default: all)")
    parser.add_argument(
        "--pid1-reaps",
        action="store_true",
        help="leave the sandbox's orphans to PID 1 (default: reap them here at once)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    parts = {int(p) for p in args.parts.split(",") if p.strip()}
    if parts & {3, 4, 5}:
        reason = check_host_can_run_libvirt()
        if reason is not None:
            parser.error(f"parts 3-5 need a libvirt sandbox: {reason}")
    os.chdir("/")  # where libvirt runs hooks
    # A benchmark stopped with SIGTERM (or `timeout`) still tears down its sandbox and files.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    live.start_event_loop()  # before any libvirt connection is opened
    work = tempfile.mkdtemp(prefix="lb-bench-")
    began = time.monotonic()
    sections: list[str] = []
    checks: list[str] = []
    durations: list[list[str]] = []
    sandbox: Sandbox | None = None

    def run(number: int, title: str, part: Part) -> None:
        if number not in parts:
            return
        print(f"part {number}: {title} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        text, notes = part()
        durations.append([f"{number}. {title}", f"{time.monotonic() - started:.0f}"])
        sections.append(f"### {number}. {title}\n\n{text}")
        if notes:
            sections.append("\n".join(f"- {note}" for note in notes) + "\n")
        checks.extend(note for note in notes if note.startswith("Target"))

    try:
        run(
            1,
            "One hook call, event without scripts",
            lambda: hookcalls.hook_call(work, plan.hook_rounds),
        )
        run(
            2,
            "The bridge's cost per script",
            lambda: hookcalls.per_script(work, plan.script_rounds),
        )
        if parts & {3, 4, 5}:
            if not args.pid1_reaps:
                live.Reaper().start()
            sandbox = Sandbox(os.path.join(work, "sb"), "lbbench")
            sandbox.start()
            bench = live.Bench(sandbox)
            run(3, "Start then destroy a guest", lambda: live.cycles(bench, plan.cycles))
            names: list[str] = []
            if parts & {4, 5}:
                names, settled = live.start_guests(bench, plan.guests)
                durations.append([f"{plan.guests} guests: start, until idle", f"{settled:.0f}"])
            run(
                4,
                f"Daemon restart with {plan.guests} running guests",
                lambda: live.restarts(bench, names, plan.restarts),
            )
            run(
                5,
                f"Listener: {plan.guests} guests paused and resumed at once",
                lambda: live.listener(bench, names, plan.listener_rounds),
            )
        info = machine(sandbox)
    finally:
        if sandbox is not None:
            sandbox.close()
        shutil.rmtree(work, ignore_errors=True)
    durations.append(["whole run", f"{time.monotonic() - began:.0f}"])
    kind = "quick (smoke test, too few repetitions to trust)" if args.quick else "full"
    reaping = (
        "left to PID 1"
        if args.pid1_reaps
        else "reaped at once by the benchmark (a child subreaper), as systemd would"
    )
    report = [
        f"Run: {kind}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Figures are "
        "medians; every ratio divides by a reference measured in the same run, interleaved. "
        f"Orphans of the sandbox (QEMU after a destroy): {reaping}.\n",
        info,
        *sections,
        "### Targets\n\n"
        + ("\n".join(f"- {c}" for c in checks) + "\n" if checks else "(none run)\n"),
        "### Duration\n\n" + table(["part", "seconds"], durations),
    ]
    text = "\n".join(report)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
