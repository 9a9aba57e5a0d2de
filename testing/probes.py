"""The probe script every test installs as a hook, and the readers of what it recorded.

A probe appends one JSON line per run to a records file: the event (its directory's
name), its script's name and argv, ``vmId``, the domain's name, the XML it got (None when
``$_hook_domxml`` is unset), that file's path and mode, its environment, cwd and stdin,
its pid and parent pid, and the time. The unit tests' harness (``harness.Bridge``) and
the end-to-end tests' sandboxes (``e2e.Probe``) install the same script and read its
records with the same readers.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from lxml import etree

PROBE = """\
#!{python}
import json, os, re, sys, time
path = os.environ.get("_hook_domxml")
xml = open(path, "rb").read().decode("utf-8", "replace") if path else None
name = re.search(r"<name>([^<]*)</name>", xml or "")
try:
    stdin = sys.stdin.read()
except Exception as exc:
    stdin = repr(exc)
record = {{
    "event": os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0]))),
    "script": os.path.basename(sys.argv[0]),
    "argv": sys.argv,
    "vmId": os.environ.get("vmId"),
    "name": name.group(1) if name else None,
    "xml": xml,
    "xml_path": path,
    "xml_mode": oct(os.stat(path).st_mode & 0o777) if path else None,
    "env": dict(os.environ),
    "cwd": os.getcwd(),
    "stdin": stdin,
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "time": time.time(),
}}
# One write of the whole line, so that records of concurrent scripts never interleave.
fd = os.open({records!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, (json.dumps(record) + "\\n").encode())
os.close(fd)
{tail}
"""

Record = dict[str, object]

# What VDSM fires for a guest's start and for its end, in order.
STARTED = ("before_vm_start", "after_vm_start")
DESTROYED = ("before_vm_destroy", "after_vm_destroy")
# One start, pause, resume, save, restore and destroy of a guest, each event once.
GUEST_CYCLE = (
    *STARTED,
    "after_vm_pause",
    "after_vm_cont",
    "after_vm_hibernate",
    "before_vm_dehibernate",
    "after_vm_dehibernate",
    *DESTROYED,
)


def probe_script(python: str, records: Path, tail: str = "") -> str:
    """The probe, run by ``python``, recording to ``records``; then ``tail`` (more Python,
    which sees ``path``, ``xml`` and ``record``)."""
    return PROBE.format(python=python, records=str(records), tail=textwrap.dedent(tail))


def read_records(path: Path) -> list[Record]:
    """Every record in ``path`` so far (none when it does not exist)."""
    if not path.exists():
        return []
    # A line still being written has no newline yet: not a record so far.
    complete = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete]


def events_of(records: list[Record], uuid: str | None = None) -> list[str]:
    """The events in ``records``, in order; with ``uuid``, only the domain's of that UUID."""
    return [str(r["event"]) for r in records if uuid is None or r["vmId"] == uuid]


def env_of(record: Record) -> dict[str, str]:
    """The environment the script of ``record`` ran with."""
    env = record["env"]
    assert isinstance(env, dict), record
    return env


def element_of(record: Record) -> etree._Element:
    """The XML the script of ``record`` got, parsed: a domain, or one device's element."""
    return etree.fromstring(str(record["xml"]).encode())
