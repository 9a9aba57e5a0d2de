"""Parts 1 and 2: one hook call, the way libvirt makes it, without a libvirt daemon.

Each call is one process spawned with libvirt's argv, a ~10 KB domain XML in a pipe on
stdin, PATH/HOME/LC_ALL=C as its whole environment and cwd ``/`` (the caller's cwd).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from common import (
    PYTHON,
    bridge_idle,
    domain_xml,
    interleave,
    median,
    ms,
    ratio,
    spawn_wait,
    spread,
    table,
)

from libvirt_bridge import launcher

NAME = "bench1"
SCRIPT_COUNTS = (1, 10, 50)
TARGET_HOOK_RATIO = 1.5
# What the bridge adds to an event with one script (over exec'ing it directly), at most.
TARGET_SCRIPT_RATIO = 1.5
# The most a run's record (reporting: the history, the metrics file) may cost, in seconds.
TARGET_RECORD_COST = 0.0005
EXIT_0 = "#!/bin/sh\nexit 0\n"

# A minimal hooks/qemu of the kind GPU-passthrough guides install: every executable of
# qemu.d/NAME/OP/SUBOP runs with libvirt's argv and the XML on stdin (read once).
BASH_DISPATCHER = """#!/bin/bash
xml=$(cat)
find "{root}/qemu.d/$1/$2/$3" -maxdepth 1 -type f -executable 2>/dev/null |
while read -r script; do
    printf '%s' "$xml" | "$script" "$@" || exit 1
done
"""


def _bridge(
    work: str,
    label: str,
    scripts: int,
    elsewhere: str = "",
    body: str = "",
    config: dict[str, object] | None = None,
) -> str:
    """A config and a qemu launcher whose hooks root holds ``scripts`` x /bin/true.

    ``elsewhere``: an event that also gets a script. The launcher answers a call without
    Python when no event the call serves (mapping.served_events) has one. ``body``: the
    scripts are files with this text instead of symlinks to /bin/true. ``config``: keys
    set besides the ones every variant has.
    """
    root = os.path.join(work, f"root-{label}")
    os.makedirs(root)
    if elsewhere:
        os.makedirs(os.path.join(root, elsewhere))
        os.symlink("/bin/true", os.path.join(root, elsewhere, "50_true"))
    if scripts:
        event_dir = os.path.join(root, "before_vm_start")
        os.makedirs(event_dir)
        for index in range(scripts):
            path = os.path.join(event_dir, f"{index:02d}_true")
            if body:
                _write_script(path, body)
            else:
                os.symlink("/bin/true", path)
    state = os.path.join(work, f"state-{label}")
    values = {
        "hooks_dirs": [root],
        "state_dir": state,
        "log_file": os.path.join(work, f"bridge-{label}.log"),
        "qemu_status_dir": os.path.join(work, "status"),
        **(config or {}),
    }
    config_path = os.path.join(work, f"config-{label}.toml")
    with open(config_path, "w") as f:
        f.writelines(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
    path = os.path.join(work, f"qemu-{label}")
    launcher.write(path, "qemu", config_path)
    return path


def _write_script(path: str, body: str) -> None:
    with open(path, "w") as f:
        f.write(body)
    os.chmod(path, 0o755)


def _bash_dispatcher(work: str) -> str:
    root = os.path.join(work, "bash")
    os.makedirs(os.path.join(root, "qemu.d", NAME, "prepare", "begin"))
    path = os.path.join(root, "qemu")
    with open(path, "w") as f:
        f.write(BASH_DISPATCHER.format(root=root))
    os.chmod(path, 0o755)
    return path


def _call(path: str, op: str, subop: str, xml: bytes) -> Callable[[], float]:
    return lambda: spawn_wait([path, NAME, op, subop, "-"], xml)


def hook_call(work: str, rounds: int) -> tuple[str, list[str]]:
    """Part 1: an event without scripts, against a bare interpreter and a bash dispatcher."""
    xml = domain_xml(NAME)
    bridge = _bridge(work, "empty", 0)
    after_start = _bridge(work, "after-start", 0, elsewhere="after_vm_start")
    after_destroy = _bridge(work, "after-destroy", 0, elsewhere="after_vm_destroy")
    bash = _bash_dispatcher(work)
    one_script = _bridge(work, "one-script", 1, body=EXIT_0)
    exit_0 = os.path.join(work, "exit-0")
    _write_script(exit_0, EXIT_0)
    variants = {
        "bare": lambda: spawn_wait([PYTHON, "-I", "-S", "-c", "pass"], xml),
        "bash": _call(bash, "prepare", "begin", xml),
        "prepare": _call(bridge, "prepare", "begin", xml),
        "started": _call(bridge, "started", "begin", xml),
        "reconnect": _call(bridge, "reconnect", "begin", xml),
        "stopped": _call(bridge, "stopped", "end", xml),
        "release": _call(bridge, "release", "end", xml),
        "after_start": _call(after_start, "prepare", "begin", xml),
        "after_destroy": _call(after_destroy, "prepare", "begin", xml),
        "python": _call(after_destroy, "stopped", "end", xml),
        "deferred": _deferred_call(after_destroy, os.path.join(work, "state-after-destroy"), xml),
        "direct": lambda: spawn_wait([exit_0]),
        "script": _call(one_script, "prepare", "begin", xml),
    }
    samples = interleave(variants, rounds, warmup=max(2, rounds // 20))
    bare, dispatcher = median(samples["bare"]), median(samples["bash"])
    labels = {
        "bare": "bare `python -I -S -c pass` (reference)",
        "bash": "bash dispatcher (`find` + exec each), `prepare begin`",
        "prepare": "bridge launcher, `prepare begin` (before_vm_start, no script)",
        "started": "bridge launcher, `started begin` (after_vm_start, no script)",
        "reconnect": "bridge launcher, `reconnect begin` (no event)",
        "stopped": "bridge launcher, `stopped end` (before_vm_destroy, no script)",
        "release": "bridge launcher, `release end` (after_vm_destroy, no script)",
        "after_start": "bridge launcher, `prepare begin` (before_vm_start, no script; "
        "after_vm_start has one)",
        "after_destroy": "bridge launcher, `prepare begin` (before_vm_start, no script; "
        "after_vm_destroy has one)",
        "python": "bridge launcher, `stopped end` (before_vm_destroy, no script; "
        "after_vm_destroy has one, so Python runs to tell `release` what stopped)",
        "deferred": "bridge launcher, `release end` (after_vm_destroy has one: the call is "
        "saved, and queued by a Python started after it)",
        "direct": "an `exit 0` sh script exec'd directly (reference for the next row)",
        "script": "bridge launcher, `prepare begin` (before_vm_start with one `exit 0` script)",
    }
    rows = [
        [
            labels[key],
            str(len(values)),
            ms(median(values)),
            spread(values),
            ratio(median(values), bare),
            ratio(median(values), dispatcher),
        ]
        for key, values in samples.items()
    ]
    text = table(
        ["call", "n", "median ms", "p25-p75 ms", "÷ bare python", "÷ bash dispatcher"], rows
    )
    prepare = max(median(samples[key]) for key in ("prepare", "after_start", "after_destroy"))
    worst, through_python = prepare / bare, median(samples["python"]) / bare
    verdict = "holds" if worst <= TARGET_HOOK_RATIO else "MISSED"
    check = (
        f"Target 1 (hook call without script ≤ {TARGET_HOOK_RATIO} x bare interpreter): "
        f"{worst:.2f} x for `prepare begin` (the slowest of its three rows) — {verdict}; "
        f"a call that must run Python for its bookkeeping: {through_python:.2f} x"
    )
    added = (median(samples["script"]) - median(samples["direct"])) / bare
    verdict = "holds" if added <= TARGET_SCRIPT_RATIO else "MISSED"
    script_check = (
        f"Target 4 (an event with one `exit 0` script: the bridge's cost over exec'ing it "
        f"directly ≤ {TARGET_SCRIPT_RATIO} x bare interpreter): {added:.3f} x — {verdict}"
    )
    note = f"XML on stdin: {len(xml)} bytes; each figure is the median of {rounds} calls.\n"
    return note + "\n" + text, [check, script_check]


def _deferred_call(path: str, state_dir: str, xml: bytes) -> Callable[[], float]:
    """``release end``, timed until the launcher returns; then, untimed, until the Python it
    left behind has queued the call and its runner has run the script."""

    def run() -> float:
        took = spawn_wait([path, NAME, "release", "end", "-"], xml)
        while not bridge_idle(state_dir):
            time.sleep(0.002)
        return took

    return run


def _direct(paths: list[str]) -> Callable[[], float]:
    """The same scripts exec'd by a minimal loop here: the floor any dispatcher pays."""
    return lambda: sum(spawn_wait([path]) for path in paths)


def per_script(work: str, rounds: int) -> tuple[str, list[str]]:
    """Part 2: the bridge's cost per event with N scripts, over running them directly."""
    xml = domain_xml(NAME)
    # The 0 row is the launcher's answer without Python: the first script pays for Python.
    variants: dict[str, Callable[[], float]] = {
        "bare": lambda: spawn_wait([PYTHON, "-I", "-S", "-c", "pass"], xml),
        "0": _call(_bridge(work, "n0", 0), "prepare", "begin", xml),
    }
    for count in SCRIPT_COUNTS:
        path = _bridge(work, f"n{count}", count)
        variants[str(count)] = _call(path, "prepare", "begin", xml)
        event_dir = os.path.join(work, f"root-n{count}", "before_vm_start")
        variants[f"direct {count}"] = _direct(
            [os.path.join(event_dir, name) for name in sorted(os.listdir(event_dir))]
        )
    # The records of the runs (reporting), published once per event: none, the history
    # (the default), the history and the metrics file; with the fewest and the most scripts.
    low, high = SCRIPT_COUNTS[0], SCRIPT_COUNTS[-1]
    records: dict[str, dict[str, object]] = {
        "unrecorded": {"history_size": 0},
        "metrics": {"metrics_file": os.path.join(work, "bench.prom")},
    }
    for count in (low, high):
        for label, extra in records.items():
            variants[f"{count} {label}"] = _call(
                _bridge(work, f"n{count}-{label}", count, config=extra), "prepare", "begin", xml
            )
    samples = interleave(variants, rounds, warmup=1)
    empty, bare = median(samples["0"]), median(samples["bare"])
    rows = [["0", ms(empty), "—", ms(empty), ratio(empty, bare), "—", "—"]]
    for count in SCRIPT_COUNTS:
        total, direct = median(samples[str(count)]), median(samples[f"direct {count}"])
        over = total - direct
        rows.append(
            [
                str(count),
                ms(total),
                ms(direct),
                ms(over),
                ratio(over, bare),
                f"{over / count * 1e3:.2f}",
                f"{over / count / bare:.3f}",
            ]
        )
    text = table(
        [
            "scripts",
            "bridge event ms",
            "direct execs ms",
            "bridge - direct ms",
            "(bridge - direct) ÷ bare python",
            "(bridge - direct) / script ms",
            "(bridge - direct) / script ÷ bare python",
        ],
        rows,
    )
    marginal = (
        median(samples[str(high)])
        - median(samples[str(low)])
        - (median(samples[f"direct {high}"]) - median(samples[f"direct {low}"]))
    ) / (high - low)
    first = median(samples[str(low)]) - median(samples[f"direct {low}"]) - empty
    one = (median(samples[str(low)]) - median(samples[f"direct {low}"])) / bare
    verdict = "holds" if one <= TARGET_SCRIPT_RATIO else "MISSED"

    def record_cost(count: int, variant: str) -> float:
        """What the records cost the event of ``count`` scripts, per script run."""
        unrecorded = median(samples[f"{count} unrecorded"])
        return (median(samples[variant]) - unrecorded) / count

    per_run = record_cost(high, f"{high} metrics")
    record_verdict = "holds" if per_run <= TARGET_RECORD_COST else "MISSED"
    notes = [
        f"Target 4 (an event with one script, /bin/true here: the bridge's cost over exec'ing "
        f"it directly ≤ {TARGET_SCRIPT_RATIO} x bare interpreter, {ms(bare)} ms in this part): "
        f"{one:.3f} x — {verdict}",
        f"Marginal bridge cost of one more script ({low} → {high} scripts, direct execs "
        f"subtracted): {marginal * 1e3:.2f} ms",
        f"Fixed cost of an event that has scripts, over one without (first script, direct "
        f"exec subtracted; Python's start included): {first * 1e3:.1f} ms",
        f"Target 8 (the records of the runs, published to the history and the metrics file "
        f"once per event, ≤ {TARGET_RECORD_COST * 1e3:.1f} ms per script run; {high} scripts, "
        f"over the same with history_size = 0): {per_run * 1e3:.3f} ms per run (the history "
        f"alone: {record_cost(high, str(high)) * 1e3:.3f} ms) — {record_verdict}",
        f"The records of an event with {low} script, over none: the history "
        f"{record_cost(low, str(low)) * 1e3:.3f} ms, the history and the metrics file "
        f"{record_cost(low, f'{low} metrics') * 1e3:.3f} ms per event",
    ]
    head = (
        f"`prepare begin` (before_vm_start, sync) with N scripts that are symlinks to "
        f"/bin/true (with none, the launcher answers without Python); "
        f"medians of {rounds} rounds; ÷ bare python divides by a bare `python -I -S -c pass` "
        f"measured in the same rounds.\n"
    )
    return head + "\n" + text, notes
