"""Writing a file whole or not at all: the one way the bridge replaces a file.

The content goes to a temp file beside the target, named ``.NAME.PID.tmp``: a dot-file,
which neither the hooks' discovery nor the async queues ever take for theirs, and unique
to the writer. It gets its mode (and owner, mtime) before one ``rename`` puts it in place,
so a reader sees the old file or the new one, never a part. On the hook's path: only
``os`` is imported.
"""

from __future__ import annotations

import os


def temp_path(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.{os.getpid()}.tmp")


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
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)  # the umask narrowed the mode given to open
            if root_owned and os.geteuid() == 0:
                os.fchown(fd, 0, 0)
        finally:
            os.close(fd)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
