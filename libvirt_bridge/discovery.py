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

import posix
import stat

from .plainos import join

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .log import Log


# Why an entry of an event directory does not run, as (kind, reason). ``status`` names a
# fix per kind; the hook logs the reason (a subdirectory is skipped without a word).
DANGLING = "dangling"
CANNOT_STAT = "cannot-stat"
DIRECTORY = "directory"
NOT_REGULAR = "not-regular"
NOT_EXECUTABLE = "not-executable"
FOREIGN_OWNER = "foreign-owner"
WRITABLE = "writable"


def why_not_run(path: str) -> tuple[str, str] | None:
    """Why the entry at ``path`` of an event directory does not run, or None when it runs."""
    try:
        st = posix.stat(path)
    except FileNotFoundError:
        return DANGLING, "dangling symlink"
    except OSError as exc:
        return CANNOT_STAT, f"cannot stat: {exc.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return DIRECTORY, "a directory"
    if not stat.S_ISREG(st.st_mode):
        return NOT_REGULAR, "not a regular file"
    if not posix.access(path, posix.X_OK):
        return NOT_EXECUTABLE, "not executable (chmod +x it to run it)"
    # Scripts run as root.
    if st.st_uid not in (0, posix.geteuid()):
        return FOREIGN_OWNER, f"refused: owned by uid {st.st_uid}, not by root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return WRITABLE, (
            f"refused: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
        )
    return None


def find_scripts(roots: list[str], event: str, log: Log | None = None) -> list[str]:
    """The paths of the scripts ``event`` runs, in run order."""
    if "/" in event or event in ("", ".", ".."):
        raise ValueError(f"invalid event name {event!r}")
    found: list[tuple[str, int, str]] = []
    for index, root in enumerate(roots):
        try:
            entries = list(posix.scandir(join(root, event)))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            if log:
                log.error(f"{event}: cannot list {join(root, event)}: {exc.strerror}")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            problem = why_not_run(entry.path)
            if problem is None:
                found.append((entry.name, index, entry.path))
            elif problem[0] != DIRECTORY and log:
                log.warning(f"{event}: skipped {entry.path}: {problem[1]}")
    found.sort()
    return [path for _name, _index, path in found]
