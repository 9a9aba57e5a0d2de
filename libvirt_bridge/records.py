"""One script run's record: what every sink of ``reporting`` gets, and ``history`` reads.

Written by hand as one line of JSON (the hook path does not import ``json``, which imports
``re``); ``json`` reads it back.
"""

from __future__ import annotations

import time

OK, FAILED, VETOED, TIMED_OUT, NOT_RUN = "ok", "failed", "vetoed", "timed_out", "not_run"
OUTCOMES = (OK, FAILED, VETOED, TIMED_OUT, NOT_RUN)
TRIAL = "trial"


class RunRecord:
    """One script run: when, for which domain and event, fired by what, and how it ended."""

    __slots__ = (
        "domain",
        "duration",
        "event",
        "outcome",
        "rc",
        "script",
        "source",
        "stderr",
        "time",
        "uuid",
        "xml_changed",
    )

    def __init__(
        self,
        time: float,
        domain: str,
        uuid: str,
        event: str,
        source: str,
        script: str,
        rc: int | None,
        outcome: str,
        duration: float,
        xml_changed: bool,
        stderr: str,
    ) -> None:
        self.time = time
        self.domain = domain
        self.uuid = uuid
        self.event = event
        self.source = source
        self.script = script
        self.rc = rc
        self.outcome = outcome
        self.duration = duration
        self.xml_changed = xml_changed
        self.stderr = stderr

    def to_json(self) -> str:
        """One line of JSON (keys in a fixed order)."""
        rc = "null" if self.rc is None else str(self.rc)
        return (
            f'{{"time": {_string(iso_time(self.time))}, "domain": {_string(self.domain)}, '
            f'"uuid": {_string(self.uuid)}, "event": {_string(self.event)}, '
            f'"source": {_string(self.source)}, "script": {_string(self.script)}, '
            f'"rc": {rc}, "outcome": {_string(self.outcome)}, '
            f'"duration": {self.duration:.6f}, '
            f'"xml_changed": {"true" if self.xml_changed else "false"}, '
            f'"stderr": {_string(self.stderr)}}}'
        )


def iso_time(seconds: float) -> str:
    """``2026-12-07T13:55:02.123Z``: UTC, to the millisecond."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int(seconds % 1 * 1000):03d}Z"


def _string(text: str) -> str:
    """``text`` as a JSON string (what ``json.dumps`` gives with ensure_ascii=False)."""
    out = ['"']
    for char in text:
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char < " " or char == "\x7f" or "\ud800" <= char <= "\udfff":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)
