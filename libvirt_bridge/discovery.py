"""Which scripts an event runs: VDSM's directory rules, as strict as run-parts.

For event E, the candidates are the entries of ``<root>/E/`` for every hooks root:
- names starting with ``.`` are skipped, and so are subdirectories (no recursion);
- a symlink counts as what it points to; a dangling one is skipped;
- a regular file that is not executable is skipped, and logged (a common mistake);
- scripts run as root, so one not owned by root (or by the bridge's own user) or writable
  by group or others is refused, and logged; so is every script of an event directory
  that is not root's, or on whose way (its hooks root, a symlink's target, every
  directory above them) someone else may replace what the bridge runs (below);
- the scripts of all roots run in one sequence, sorted by file name in code-point order
  (``10_x`` < ``50_y`` < ``9_z``, upper case before lower case); a name present in two
  roots runs twice, the first root's first.

On the hook's fast path: an event with no scripts costs one ``scandir`` per root.

Root's paths: what the bridge runs as root must be root's. A file or directory is root's
when it is owned by root (or by the bridge's own user, for a bridge run by another user)
and nobody else can write to it: no write bit for group or others. A directory others may
write to is still root's when it has the sticky bit (as ``/tmp``): others may add entries
there but not replace root's; an entry that others added (a symlink to a root-owned
program, say) is not root's. A path is root's when every directory on the way to it is,
and every symlink met on the way lies in such a directory and is followed by the same
rules, so a symlink is judged by its target (what ``sudo`` and ``polkit`` check of their
configuration). ACLs are not read: a directory whose ACL grants others write access while
its mode does not is taken for root's. The config uses the same rules for its files.
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
UNSAFE_PATH = "unsafe-path"


def why_not_run(path: str) -> tuple[str, str] | None:
    """Why the entry at ``path`` of an event directory does not run, or None when it runs.

    The directories above it are not judged here: ``find_scripts`` judges the event
    directory once (``directory_problem``), and so does ``status``.
    """
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
    mine = file_problem(st)
    if mine is not None:
        return (FOREIGN_OWNER if mine.startswith("owned") else WRITABLE), f"refused: {mine}"
    if stat.S_ISLNK(posix.lstat(path).st_mode):
        on_the_way = path_problem(path)
        if on_the_way is not None:
            return UNSAFE_PATH, f"refused: {on_the_way.describe()}"
    return None


def directory_problem(
    directory: str, judged: dict[str, tuple[str | None, bool]] | None = None
) -> PathProblem | None:
    """Why no script of the event directory ``directory`` runs: it, or a directory on the
    way to it, is not root's; None when it is (:func:`path_problem`)."""
    return path_problem(directory, inside=True, judged=judged)


def find_scripts(roots: list[str], event: str, log: Log | None = None) -> list[str]:
    """The paths of the scripts ``event`` runs, in run order."""
    if "/" in event or event in ("", ".", ".."):
        raise ValueError(f"invalid event name {event!r}")
    found: list[tuple[str, int, str]] = []
    judged: dict[str, tuple[str | None, bool]] = {}
    for index, root in enumerate(roots):
        directory = join(root, event)
        try:
            entries = list(posix.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            if log:
                log.error(f"{event}: cannot list {directory}: {exc.strerror}")
            continue
        if not entries:
            continue
        unsafe = directory_problem(directory, judged)
        if unsafe is not None:
            if log:
                log.error(f"{event}: skipped every script in {directory}: {unsafe.describe()}")
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


# -- root's paths ---------------------------------------------------------------------------

# Symlinks followed on one path before giving up, as the kernel's ELOOP limit.
MAX_SYMLINKS = 40


def _owners() -> tuple[int, ...]:
    return (0, posix.geteuid())


def file_problem(st: posix.stat_result) -> str | None:
    """Why someone other than root may change the file with this stat; None if nobody can."""
    if st.st_uid not in _owners():
        return f"owned by uid {st.st_uid}, not by root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _directory_stat_problem(st: posix.stat_result) -> str | None:
    """Why someone other than root may replace what the directory with this stat holds."""
    if st.st_uid not in _owners():
        return f"owned by uid {st.st_uid}, not by root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        mode = stat.S_IMODE(st.st_mode)
        return f"writable by group or others without the sticky bit (mode {mode:04o})"
    return None


class PathProblem:
    """Where a path stops being root's: the directory or symlink at ``where``, and why."""

    __slots__ = ("symlink", "where", "why")

    def __init__(self, where: str, why: str, symlink: bool = False) -> None:
        self.where = where
        self.why = why
        self.symlink = symlink

    def describe(self) -> str:
        what = "symlink" if self.symlink else "directory"
        return f"the {what} {self.where} is {self.why}"


def _judge_directory(
    path: str, judged: dict[str, tuple[str | None, bool]]
) -> tuple[str | None, bool]:
    """(why the directory is not root's or None, whether others may add entries to it)."""
    if path not in judged:
        try:
            st = posix.stat(path)
        except OSError as exc:
            judged[path] = (f"not readable ({exc.strerror})", False)
        else:
            shared = bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))
            judged[path] = (_directory_stat_problem(st), shared)
    return judged[path]


def path_problem(
    path: str, *, inside: bool = False, judged: dict[str, tuple[str | None, bool]] | None = None
) -> PathProblem | None:
    """Why someone other than root may change what ``path`` (absolute) names; None if nobody.

    Every directory on the way is judged, and every symlink is followed. The last
    component is judged only with ``inside`` (a directory whose entries matter); a file's
    own stat says the rest (``file_problem``). A path that cannot be resolved is no
    problem here: whoever opens it finds out. ``judged``: directories judged already, for
    a caller that asks of many paths at once.
    """
    judged = {} if judged is None else judged
    pending = [part for part in path.split("/") if part]
    current = "/"
    followed = 0
    while True:
        if pending or inside:
            problem, shared = _judge_directory(current, judged)
            if problem is not None:
                return PathProblem(current, problem)
        if not pending:
            return None
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            current = _parent(current)
            continue
        here = join(current, part)
        try:
            st = posix.lstat(here)
        except OSError:
            return None
        if not stat.S_ISLNK(st.st_mode):
            current = here
            continue
        if shared and st.st_uid not in _owners():
            # Others may add entries here (sticky): this symlink is one they added.
            return PathProblem(here, f"owned by uid {st.st_uid}, not by root", symlink=True)
        followed += 1
        if followed > MAX_SYMLINKS:
            return None
        try:
            target = posix.readlink(here)
        except OSError:
            return None
        pending[:0] = [p for p in target.split("/") if p]
        if target.startswith("/"):
            current = "/"


def _parent(path: str) -> str:
    head = path.rstrip("/").rpartition("/")[0]
    return head or "/"
