"""Writing a file whole or not at all: the one way the bridge replaces a file.

The content goes to a temp file beside the target, named ``.NAME.PID.tmp``: a dot-file,
which neither the hooks' discovery nor the async queues ever take for theirs, and unique
to the writer. It gets its mode (and owner, mtime) before one ``rename`` puts it in place,
so a reader sees the old file or the new one, never a part. On the hook's path: only
``os`` is imported.
"""

from __future__ import annotations

import posix

from .plainos import join, split


def temp_path(path: str) -> str:
    directory, name = split(path)
    return join(directory, f".{name}.{posix.getpid()}.tmp")


def write_atomic(
    path: str,
    data: bytes | str,
    mode: int = 0o644,
    *,
    mtime_ns: int | None = None,
    root_owned: bool = False,
) -> None:
    """Replace ``path`` with ``data``; raise OSError (leaving no temp file) on failure.

    ``root_owned``: chown it to root when this process is root (the hooks' scripts must be).
    """
    tmp = temp_path(path)
    content = data.encode() if isinstance(data, str) else data
    try:
        # Truncated, not exclusive: a temp file a killed writer of the same pid left is reused.
        fd = posix.open(
            tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_NOFOLLOW, mode
        )
        try:
            view = memoryview(content)
            while view:
                view = view[posix.write(fd, view) :]
            posix.fchmod(fd, mode)  # the umask narrowed the mode given to open
            if root_owned and posix.geteuid() == 0:
                posix.fchown(fd, 0, 0)
        finally:
            posix.close(fd)
        if mtime_ns is not None:
            posix.utime(tmp, ns=(mtime_ns, mtime_ns))
        posix.replace(tmp, path)
    except OSError:
        try:
            posix.unlink(tmp)
        except OSError:
            pass
        raise
