"""Hostile scripts and hostile input: the bridge stays bounded, reports, and never crashes."""

from __future__ import annotations

import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libvirt_bridge import dispatch
from testing.harness import (
    LIBVIRT_ENV,
    Bridge,
    assert_a_left_process_never_holds_the_call,
    domain_xml,
)
from testing.waits import wait_for_file

MAX_RSS_KB = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], input=sys.stdin.buffer.read(), capture_output=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_kb(bridge: Bridge, op: str, xml: bytes) -> int:
    """The largest resident set (KiB) of the hook call's processes."""
    argv = [
        sys.executable,
        "-c",
        MAX_RSS_KB,
        str(bridge.launchers / "qemu"),
        "vm1",
        op,
        "begin",
        "-",
    ]
    out = subprocess.run(
        argv, input=xml, capture_output=True, env=LIBVIRT_ENV, cwd="/", timeout=120
    )
    return int(out.stdout)


def test_a_flood_on_stdout_and_stderr_stays_bounded(bridge: Bridge) -> None:
    bridge.script(
        "before_vm_start",
        "10_flood",
        "#!/bin/sh\nhead -c 100000000 /dev/zero\nhead -c 100000000 /dev/zero >&2\nexit 1\n",
    )
    baseline = peak_rss_kb(bridge, "start", domain_xml())  # no event: the bare hook
    flooded = peak_rss_kb(bridge, "prepare", domain_xml())
    assert flooded < baseline + 60_000, (baseline, flooded)  # far below the 200 MB written
    line = next(x for x in bridge.log_text().splitlines() if "10_flood" in x)
    assert "rc=1" in line and "stdout_bytes=100000000" in line


def test_a_script_that_closes_or_reuses_its_stdio(bridge: Bridge, tmp_path: Path) -> None:
    bridge.script("before_vm_start", "10_close", "#!/bin/sh\nexec >&- 2>&-\nsleep 0.2\nexit 0\n")
    bridge.script("before_vm_start", "20_reuse", "#!/bin/sh\nexec 1>&2\necho mixed\nexit 0\n")
    bridge.script("before_vm_start", "30_stdin", "#!/bin/sh\ncat\necho read-all >&2\n")
    result = bridge.qemu("vm1", "prepare", "begin", domain_xml())
    assert result.returncode == 0, result.stderr
    log = bridge.log_text()
    assert "10_close rc=0" in log
    assert "20_reuse rc=0" in log and "mixed" in log
    assert "30_stdin rc=0" in log and "read-all" in log


def test_a_double_forked_daemon_does_not_hold_the_event(bridge: Bridge, tmp_path: Path) -> None:
    daemon = "( setsid sh -c 'echo $$ > {pidfile}; exec sleep 120' & )"
    assert_a_left_process_never_holds_the_call(bridge, tmp_path, daemon)


def test_a_script_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path, script_timeout=0.5)
    bridge.script(
        "before_vm_destroy", "10_stubborn", "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 0.1; done\n"
    )
    bridge.script("before_vm_destroy", "20_next", "#!/bin/sh\necho next-ran >&2\n")
    assert bridge.qemu("vm1", "stopped", "end", domain_xml()).returncode == 0
    log = bridge.log_text()
    assert "10_stubborn killed after timeout" in log
    assert "next-ran" in log


def test_a_symlink_loop_is_reported_and_skipped(bridge: Bridge, tmp_path: Path) -> None:
    directory = bridge.hooks / "before_vm_start"
    directory.mkdir()
    (directory / "10_loop").symlink_to(directory / "10_loop")
    (directory / "20_dirloop").symlink_to(directory)
    out = tmp_path / "ran"
    bridge.script("before_vm_start", "30_ok", f"#!/bin/sh\ntouch {out}\n")
    assert bridge.qemu("vm1", "prepare", "begin", domain_xml()).returncode == 0
    assert out.exists()
    assert "10_loop: cannot stat: Too many levels of symbolic links" in bridge.log_text()


def test_a_script_replaced_while_it_runs(bridge: Bridge, tmp_path: Path) -> None:
    started = tmp_path / "started"
    script = bridge.script(
        "before_vm_start", "10_old", f"#!/bin/sh\ntouch {started}\nsleep 1\necho old >&2\n"
    )

    def replace() -> None:
        wait_for_file(started, "the old script running", 10)
        new = script.with_name(".new")
        new.write_text("#!/bin/sh\necho new >&2\n")
        new.chmod(0o755)
        new.rename(script)

    with ThreadPoolExecutor(max_workers=1) as pool:
        replaced = pool.submit(replace)
        first = bridge.qemu("vm1", "prepare", "begin", domain_xml())
        replaced.result()
    second = bridge.qemu("vm1", "prepare", "begin", domain_xml())
    assert first.returncode == second.returncode == 0
    runs = [x for x in bridge.log_text().splitlines() if "10_old" in x]
    assert "stderr='old'" in runs[0] and "stderr='new'" in runs[1]


# --- fuzzing: whatever libvirt (or a broken caller) sends, a clear answer ------------------


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=2000),
    op=st.sampled_from(["prepare", "started", "stopped", "release", "migrate", "restore"]),
)
def test_any_stdin_gets_an_answer_not_a_crash(bridge: Bridge, data: bytes, op: str) -> None:
    bridge.script("before_vm_start", "10_ok", "#!/bin/sh\n")
    bridge.script("before_vm_migrate_destination", "10_ok", "#!/bin/sh\n")
    bridge.script("before_vm_dehibernate", "10_ok", "#!/bin/sh\n")
    subop = "end" if op in ("stopped", "release") else "begin"
    err = io.StringIO()
    sys_stderr, sys.stderr = sys.stderr, err
    try:
        status = dispatch.run(
            "qemu", ["vm1", op, subop, "-"], str(bridge.config), io.BytesIO(data), io.BytesIO()
        )
    finally:
        sys.stderr = sys_stderr
    assert "internal error" not in err.getvalue()
    assert "internal error" not in bridge.log_text()
    if status:
        assert op in ("prepare", "migrate", "restore")
        assert "not well-formed" in err.getvalue() or "is empty" in err.getvalue()
