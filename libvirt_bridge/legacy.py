"""A foreign hook kept as ``qemu.legacy`` (``daemon.legacy``) when the bridge was installed.

The launcher runs it first, with libvirt's argv and stdin, the way pre-commit runs a
repository's earlier git hook, so installing the bridge changes nothing it did:
- its stderr is passed on, and its exit code is honoured: where a failure makes libvirt
  abort the operation or kill the VM, the bridge then does nothing more for that call;
- for ``migrate`` and ``restore`` its non-empty stdout is the XML the bridge works on,
  and what libvirt gets unless the bridge's scripts change it further.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

from . import launcher
from .hook import RUNNING_LEGACY, describe, log_for, run

# libvirt acts on a failure of these calls (aborts the operation, or kills the VM).
FAILURE_COUNTS = frozenset({"prepare", "start", "started", "migrate", "restore", "reconnect"})
XML_FILTERS = frozenset({"migrate", "restore"})


def run_with_legacy(driver: str, argv: list[str], config_path: str, legacy: str) -> int:
    if launcher.is_ours(legacy):
        # Running it would run the bridge a second time (or without end, when it names
        # itself as its own earlier hook), so it is skipped however it got there.
        log_for(config_path).error(
            f"{describe(driver, argv)}: the earlier hook {legacy} is itself a libvirt-bridge "
            "launcher: not run, so that every script runs once. libvirt-bridge install "
            "repairs that"
        )
        return run(driver, argv, config_path, sys.stdin.buffer, sys.stdout.buffer)
    data = sys.stdin.buffer.read()
    env = {**os.environ, RUNNING_LEGACY: legacy}
    try:
        earlier = subprocess.run([legacy, *argv], input=data, capture_output=True, cwd="/", env=env)
    except OSError as exc:
        sys.stderr.write(f"libvirt-bridge: cannot run the earlier hook {legacy}: {exc}\n")
        return 1
    sys.stderr.buffer.write(earlier.stderr)
    sys.stderr.flush()
    op = argv[1] if len(argv) > 1 else ""
    if earlier.returncode != 0 and op in FAILURE_COUNTS:
        return earlier.returncode
    filtered = op in XML_FILTERS and bool(earlier.stdout.strip())
    xml = earlier.stdout if filtered else data
    out = io.BytesIO()
    status = run(driver, argv, config_path, io.BytesIO(xml), out)
    result = out.getvalue() or (xml if filtered else b"")
    if result and status == 0:
        sys.stdout.buffer.write(result)
        sys.stdout.flush()
    return earlier.returncode or status
