"""Which scripts an event runs: VDSM's directory rules, as strict as run-parts.

For event E, the candidates are the entries of ``<root>/E/`` for every hooks root:
- names starting with ``.`` are skipped, and so are subdirectories (no recursion);
- a symlink counts as what it points to; a dangling one is skipped;
- a regular file that is not executable is skipped, and logged (a common mistake);
- scripts run as root, so one not owned by root (or by the bridge's own user) or writable
  by group or others is refused, and logged;
- the scripts of all roots run in one sequence, sorted by file name in code-point order
  (``10_x`` < ``50_y`` < ``9_z``, upper case before lower case); a name present in two
  roots runs twice, the first root's first.

On the hook's fast path: an event with no scripts costs one ``scandir`` per root.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .log import Log


def refusal(st: os.stat_result) -> str | None:
    """Why a script with this (followed) stat may not run as root, or None."""
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not by root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def find_scripts(roots: list[str], event: str, log: Log | None = None) -> list[str]:
    """The paths of the scripts ``event`` runs, in run order."""
    if "/" in event or event in ("", ".", ".."):
        raise ValueError(f"invalid event name {event!r}")
    found: list[tuple[str, int, str]] = []
    for index, root in enumerate(roots):
        try:
            entries = list(os.scandir(os.path.join(root, event)))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            if log:
                log.error(f"{event}: cannot list {os.path.join(root, event)}: {exc.strerror}")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            problem = _problem(entry)
            if problem is None:
                found.append((entry.name, index, entry.path))
            elif problem and log:
                log.warning(f"{event}: skipped {entry.path}: {problem}")
    found.sort()
    return [path for _name, _index, path in found]


def _problem(entry: os.DirEntry[str]) -> str | None:
    """None when runnable; '' when silently skipped; else the reason it is skipped."""
    try:
        st = os.stat(entry.path)
    except FileNotFoundError:
        return "dangling symlink"
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return ""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not os.access(entry.path, os.X_OK):
        return "not executable (chmod +x it to run it)"
    reason = refusal(st)
    if reason:
        return f"refused: {reason}"
    return None
