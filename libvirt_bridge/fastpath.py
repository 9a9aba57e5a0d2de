"""The launchers' shortcut: answer libvirt without starting Python when nothing runs.

libvirt calls the qemu hook five times for a start and a destroy, and once per running guest
when its daemon restarts; starting Python costs more than the rest of such a call. So the
launcher (a POSIX sh script) first sources a small file that this module writes beside the
config, ``.<config name>.fastpath``, and exits 0 at once, reading nothing and printing
nothing (libvirt takes empty output as "XML unchanged") when:

- the call fires no event (``start begin``, ``reconnect begin``), or it is a call that can
  fire one and no event it serves (``mapping.served_events``: its own, and those of the
  later calls its bookkeeping decides) has any entry, other than dot files, in any hooks
  root;
- no foreign hook is kept as ``.legacy``, and the file is owned by root;
- the file is current: written from the config as it is now (same mtime; or, with no
  config file, still none).

The daemon launcher reads the same file, for the daemon calls that keep no bookkeeping
(``mapping.DAEMON_FAST_CALLS``: a daemon's stop, with no after_vdsm_stop script).
Otherwise, for an async qemu call with work (``mapping.DEFERRED_CALLS``), the file's
``lb_defer`` saves the call in the inbox (``inbox.py``), and the launcher starts the Python
that queues it in the background and returns. Otherwise Python runs the call, and rewrites
a file that is stale. Any other call (a daemon's start or reload, an unknown operation)
always goes to Python.
"""

from __future__ import annotations

import posix

from . import inbox, mapping
from .config import Config
from .plainos import abspath, join, split

# Bumped when the file's shape changes: a launcher only reads the format it was written for.
FORMAT = 4
FUNCTION = "lb_nothing_to_run"
_HEADER = f"# libvirt-bridge fast path {FORMAT}"


def fastpath_path(config_path: str) -> str:
    """Where the file for the config at ``config_path`` lives."""
    head, tail = split(abspath(config_path))
    return join(head, f".{tail}.fastpath")


def render(config: Config) -> str:
    """The sh text of the file for ``config``.

    It defines ``lb_nothing_to_run DRIVER OP SUBOP`` and ``lb_defer NAME OP SUBOP EXTRA``
    (see ``_defer``).
    """
    q = sh_quote
    config_path = abspath(config.path)
    if config.mtime_ns is None:
        current = f"    [ -e {q(config_path)} ] && return 1\n"
    else:
        this = q(fastpath_path(config.path))
        current = (
            f"    [ -e {q(config_path)} ] || return 1\n"
            f"    [ {q(config_path)} -nt {this} ] || [ {q(config_path)} -ot {this} ] && return 1\n"
        )
    silent = "|".join(
        q(f"{driver} {op} {subop}")
        for driver, op, subop in sorted(mapping.SILENT_CALLS)
        if driver == "qemu"
    )
    fast_calls = [("qemu", op, subop) for op, subop in mapping.QEMU_FIRING_CALLS]
    fast_calls += [("daemon", op, subop) for op, subop in mapping.DAEMON_FAST_CALLS]
    calls = "".join(
        f"    {q(f'{driver} {op} {subop}')})\n"
        f"        set -- {' '.join(q(d) for d in _served_dirs(config, op, subop, driver))} ;;\n"
        for driver, op, subop in fast_calls
    )
    return (
        f"{_HEADER} {stamp(config)}\n"
        f"# Written by libvirt-bridge from {config_path}; rewritten when stale. Do not edit.\n"
        f"lb_current() {{\n"
        f"{current}"
        f"    return 0\n"
        f"}}\n"
        f"{FUNCTION}() {{\n"
        f"    lb_current || return 1\n"
        f'    case "$1 $2 $3" in\n'
        f"    {silent}) return 0 ;;\n"
        f"{calls}"
        f"    *) return 1 ;;\n"
        f"    esac\n"
        f'    for lb_dir in "$@"; do\n'
        f'        for lb_entry in "$lb_dir"/*; do\n'
        f'            [ -e "$lb_entry" ] || [ -L "$lb_entry" ] && return 1\n'
        f"        done\n"
        f"    done\n"
        f"    return 0\n"
        f"}}\n"
        f"{_defer(config)}"
    )


def _defer(config: Config) -> str:
    """``lb_defer NAME OP SUBOP EXTRA``: save an async call in the inbox (``inbox.py``).

    Returns 0 when the call is the inbox's now (or its XML could not be saved whole, which
    it says on stderr: its stdin is gone), 1 when Python must run it as usual: not a
    deferred call, a name that cannot be a file name, a stale file, no inbox to write in.
    """
    q = sh_quote
    inbox_dir = q(inbox.inbox_dir(abspath(config.state_dir)))
    deferred = "|".join(q(f"{op} {subop}") for op, subop in mapping.DEFERRED_CALLS)
    status = "|".join(
        q(f"{op} {subop}")
        for op, subop in mapping.DEFERRED_CALLS
        if (op, subop) in mapping.READS_STATUS_FILE
    )
    copy_status = (
        f'    case "$2 $3" in\n'
        f"    {status})\n"
        f'        cat {q(config.qemu_status_dir)}/"$1.xml" > "$lb_call.status" 2>/dev/null ;;\n'
        f"    esac\n"
        if status
        else ""
    )
    digits = "[1-9]" + "[0-9]" * (len(str(inbox.FIRST_SEQ)) - 1)
    return (
        f"lb_defer() {{\n"
        f'    case "$2 $3" in\n'
        f"    {deferred}) ;;\n"
        f"    *) return 1 ;;\n"
        f"    esac\n"
        f'    case "$1" in\n'
        f"    ''|.*|*/*) return 1 ;;\n"
        f"    esac\n"
        f"    lb_current || return 1\n"
        f"    lb_seq={inbox.FIRST_SEQ - 1}\n"
        f'    for lb_file in {inbox_dir}/"$1#"*; do\n'
        f"        lb_n=${{lb_file##*#}}\n"
        f"        lb_n=${{lb_n%%.*}}\n"
        f"        case $lb_n in\n"
        f'        {digits}) [ "$lb_n" -gt "$lb_seq" ] && lb_seq=$lb_n ;;\n'
        f"        esac\n"
        f"    done\n"
        f'    lb_call={inbox_dir}/"$1#$((lb_seq + 1))"\n'
        # `true`, not `:`: a failed redirection of a special built-in ends the shell.
        f'    {{ true > "$lb_call.xml"; }} 2>/dev/null || return 1\n'
        f'    if ! cat > "$lb_call.xml"; then\n'
        f'        echo "libvirt-bridge: cannot save the call $2 $3 of $1 in $lb_call.xml; '
        f'its events are lost" >&2\n'
        f"        return 0\n"
        f"    fi\n"
        f"{copy_status}"
        f'    printf \'%s\\n\' "$2" "$3" "$4" > "$lb_call.call" || echo "libvirt-bridge: '
        f'cannot save the call $2 $3 of $1 in $lb_call.call; its events are lost" >&2\n'
        f"}}\n"
    )


def _served_dirs(config: Config, op: str, subop: str, driver: str = "qemu") -> list[str]:
    if driver == "qemu":
        events = mapping.served_events(op, subop)
    else:
        events = mapping.call_events(op, subop, driver)
    return [join(root, event) for root in config.hooks_dirs for event in events]


def nothing_to_run(config: Config, op: str, subop: str) -> bool:
    """The file's answer for the qemu call ``op subop``, worked out in Python.

    The hook gives the same answer, so that a call the launcher could not shortcut (the
    file was stale) keeps no bookkeeping that the shortcut calls after it would never clear.
    """
    for directory in _served_dirs(config, op, subop):
        try:
            with posix.scandir(directory) as entries:
                if any(not entry.name.startswith(".") for entry in entries):
                    return False
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return False  # the hook reports what it cannot read
    return True


def sh_quote(text: str) -> str:
    """``text`` as one sh word (shlex.quote would import ``re`` on the hook's path)."""
    return "'" + text.replace("'", "'\\''") + "'"


def stamp(config: Config) -> str:
    """What the file's first line records of the config it was written from."""
    return "absent" if config.mtime_ns is None else str(config.mtime_ns)


def is_current(config: Config) -> bool:
    """Whether the file for ``config`` exists and is what this version writes for it."""
    try:
        with open(fastpath_path(config.path)) as f:
            return f.read() == render(config)
    except (OSError, UnicodeDecodeError):
        return False


def write(config: Config) -> None:
    """Write the file for ``config`` atomically, with the config's mtime; OSError if not."""
    from .files import write_atomic

    path = fastpath_path(config.path)
    # Equal mtimes are how the launcher knows the config has not changed since.
    write_atomic(path, render(config), 0o644, mtime_ns=config.mtime_ns)


def refresh(config: Config) -> None:
    """Rewrite the file when stale; a config directory that is not writable means no shortcut."""
    if is_current(config):
        return
    try:
        write(config)
    except OSError:
        pass


def remove(config_path: str) -> None:
    """Remove the file for the config at ``config_path``, if there."""
    try:
        posix.unlink(fastpath_path(config_path))
    except FileNotFoundError:
        pass
