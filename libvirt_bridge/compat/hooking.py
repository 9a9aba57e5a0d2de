"""Helpers for VDSM-style hook scripts: ``import hooking`` or ``from vdsm.hook import hooking``.

A hook script gets its input in a file: domain or device XML in the file named by the
environment variable ``_hook_domxml``, or JSON in the file named by ``_hook_json``. To change
the input, the script rewrites that same file; its stdout is thrown away. Anything it writes
to stderr is logged, and shown to the user when the operation fails.

The exit status of a hook script tells the runner what to do next:

* 0: the script succeeded; the next script runs.
* 1: the script failed, but the remaining scripts of this hook point still run.
* 2: the script failed and the remaining scripts of this hook point are skipped.
  ``exit_hook`` uses 2 unless told otherwise.
* Any other status is reserved. The runner logs a warning and handles it like 1.

A failure in a ``before_*`` hook point that can veto (every one but before_vm_destroy and
before_vdsm_start) aborts the operation it precedes.

This module must stay importable by any Python 3 from 3.6 on, with the standard library
only, because scripts run it under their own interpreter. Annotations are therefore quoted:
3.6 evaluates them when a function is defined and knows neither ``X | Y`` nor ``list[X]``.
"""

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from xml.dom import minidom

if TYPE_CHECKING:
    import logging  # only for annotations: importing it costs a script ~10 ms
    from typing import NoReturn  # not in Python 3.6.0 and 3.6.1

__all__ = [
    "dump_vm_launch_flags_to_file",
    "execCmd",
    "exit_hook",
    "load_vm_launch_flags_from_file",
    "log",
    "read_domxml",
    "read_json",
    "remove_vm_launch_flags_file",
    "tobool",
    "write_domxml",
    "write_json",
]

_DOMXML_VAR = "_hook_domxml"
_JSON_VAR = "_hook_json"
_RUN_DIR_VAR = "LIBVIRT_BRIDGE_RUN_DIR"
_DEFAULT_RUN_DIR = "/run/vdsm"


def read_domxml() -> "minidom.Document":
    """Parse the XML file named by ``$_hook_domxml`` (UTF-8) into a minidom Document."""
    with open(os.environ[_DOMXML_VAR], "rb") as f:
        return minidom.parseString(f.read().decode("utf-8"))


def write_domxml(domxml: "minidom.Node") -> None:
    """Replace the content of the ``$_hook_domxml`` file with ``domxml`` as UTF-8 XML."""
    with open(os.environ[_DOMXML_VAR], "wb") as f:
        f.write(domxml.toxml(encoding="utf-8"))


def read_json() -> Any:
    """Load the JSON file named by ``$_hook_json``."""
    # The runner writes ASCII-only JSON; naming UTF-8 keeps a C locale from mattering.
    with open(os.environ[_JSON_VAR], encoding="utf-8") as f:
        return json.loads(f.read())


def write_json(data: object) -> None:
    """Replace the content of the ``$_hook_json`` file with ``data`` as (ASCII) JSON."""
    with open(os.environ[_JSON_VAR], "w", encoding="utf-8") as f:
        f.write(json.dumps(data))


def log(message: str) -> None:
    """Write ``message`` and a newline to stderr, which the runner logs."""
    sys.stderr.write(message + "\n")


def exit_hook(message: str, return_code: int = 2) -> "NoReturn":
    """Write ``message`` to stderr and exit; the default 2 skips the remaining scripts."""
    sys.stderr.write(message + "\n")
    sys.exit(return_code)


def tobool(s: Any) -> bool:
    """Read a custom property as a boolean: "true" in any case, or a non-zero integer.

    Everything else is False, including "yes", "on", and values that are neither ``None``,
    a bool, nor a string (an int has no ``lower()``).
    """
    try:
        if s is None:
            return False
        if isinstance(s, bool):
            return s
        if s.lower() == "true":
            return True
        return bool(int(s))
    except Exception:
        return False


def _wrap_command(
    command: "Sequence[str]",
    sudo: bool = False,
    nice: "int | None" = None,
    ioclass: "int | None" = None,
    ioclassdata: "int | None" = None,
    setsid: bool = False,
) -> "list[str]":
    """``command`` prefixed by the wrappers that ``execCmd`` was asked for, sudo outermost."""
    prefix = []
    if sudo:
        prefix += ["sudo", "-n"]
    if setsid:
        prefix.append("setsid")
    if nice is not None:
        prefix += ["nice", "-n", str(nice)]
    if ioclass is not None:
        prefix += ["ionice", "-c", str(ioclass)]
        if ioclassdata is not None:
            prefix += ["-n", str(ioclassdata)]
    return prefix + list(command)


def execCmd(
    command: "Sequence[str]",
    sudo: bool = False,
    cwd: "str | None" = None,
    data: "bytes | str | None" = None,
    raw: bool = False,
    printable: "Sequence[str] | None" = None,
    env: "Mapping[str, str] | None" = None,
    nice: "int | None" = None,
    ioclass: "int | None" = None,
    ioclassdata: "int | None" = None,
    setsid: bool = False,
    execCmdLogger: "logging.Logger | None" = None,
    resetCpuAffinity: bool = True,
) -> "tuple[int, list[bytes] | bytes, list[bytes] | bytes]":
    """Run ``command`` to completion and return ``(rc, out, err)``.

    stdin, stdout and stderr are pipes; ``data`` (bytes, or str sent as UTF-8) is written to
    stdin. ``out`` and ``err`` are bytes when ``raw`` is true, else lists of byte lines.
    ``sudo``, ``nice``, ``ioclass``/``ioclassdata`` and ``setsid`` wrap the command in
    ``sudo -n``, ``nice -n N``, ``ionice -c CLASS [-n DATA]`` and ``setsid``. ``env``
    replaces the environment; ``cwd`` sets the working directory. When ``execCmdLogger`` is
    given, the command line (``printable`` instead, if given) is logged there at DEBUG.
    There is no timeout. ``resetCpuAffinity`` is accepted for compatibility and ignored:
    the child keeps the caller's CPU affinity.
    """
    argv = _wrap_command(command, sudo, nice, ioclass, ioclassdata, setsid)
    if execCmdLogger is not None:
        shown = argv if printable is None else list(printable)
        execCmdLogger.debug("%s (cwd %s)", " ".join(shown), cwd)
    if isinstance(data, str):
        data = data.encode("utf-8")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
    )
    out, err = proc.communicate(data)
    if raw:
        return proc.returncode, out, err
    return proc.returncode, out.splitlines(), err.splitlines()


def _launch_flags_path(vm_id: str) -> str:
    # vm_id becomes a path component under the run directory, so it must not escape it.
    if not vm_id or "/" in vm_id or vm_id in (".", ".."):
        raise ValueError(f"invalid VM id for a launch flags file: {vm_id!r}")
    run_dir = os.environ.get(_RUN_DIR_VAR) or _DEFAULT_RUN_DIR
    return os.path.join(run_dir, vm_id, "launchflags")


def load_vm_launch_flags_from_file(vm_id: str) -> int:
    """The libvirt start flags stored for ``vm_id``, or 0 when there are none."""
    try:
        with open(_launch_flags_path(vm_id)) as f:
            return int(f.readline())
    except FileNotFoundError:
        return 0


def dump_vm_launch_flags_to_file(vm_id: str, flags: int) -> None:
    """Store the libvirt start flags for ``vm_id``, creating its run directory if needed."""
    path = _launch_flags_path(vm_id)
    # Usually it exists already; if it cannot be made, the open below reports why.
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write(str(flags))


def remove_vm_launch_flags_file(vm_id: str) -> None:
    """Delete the stored start flags for ``vm_id``; nothing stored is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(_launch_flags_path(vm_id))
