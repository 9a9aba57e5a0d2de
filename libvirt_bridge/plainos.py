"""What the hook path needs of ``os``, without ``import os``.

``import os`` builds ``os.environ`` and imports ``_collections_abc``: about 1.8 ms, an
eighth of an interpreter start, which every hook call that runs a script would pay. So
the modules such a call runs take their system calls from ``posix`` (``os`` re-exports
them: ``posix.open`` is ``os.open``) and the path helpers and the environment from here.
The helpers behave as ``os.path``'s for ``str`` paths (tests/test_plainos.py compares).
"""

from __future__ import annotations

import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def environ() -> Mapping[str, str]:
    """This process's environment.

    ``os.environ`` once ``os`` is loaded: it follows ``os.environ`` changes (``putenv``),
    which ``posix.environ``, the environment the process started with, does not see.
    """
    loaded = sys.modules.get("os")
    if loaded is not None:
        environment: Mapping[str, str] = loaded.environ
        return environment
    encoding = sys.getfilesystemencoding()
    return {
        key.decode(encoding, "surrogateescape"): value.decode(encoding, "surrogateescape")
        for key, value in posix.environ.items()
    }


def join(path: str, *parts: str) -> str:
    for part in parts:
        if part.startswith("/"):
            path = part
        elif not path or path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def split(path: str) -> tuple[str, str]:
    cut = path.rfind("/") + 1
    head, tail = path[:cut], path[cut:]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head, tail


def basename(path: str) -> str:
    return path[path.rfind("/") + 1 :]


def dirname(path: str) -> str:
    return split(path)[0]


def normpath(path: str) -> str:
    if not path:
        return "."
    # POSIX keeps exactly two leading slashes; one, or three and more, become one.
    lead = 2 if path.startswith("//") and not path.startswith("///") else int(path[0] == "/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part != ".." or (not lead and (not parts or parts[-1] == "..")):
            parts.append(part)
        elif parts:
            parts.pop()
    return "/" * lead + "/".join(parts) or "."


def abspath(path: str) -> str:
    return normpath(path if path.startswith("/") else join(posix.getcwd(), path))


def exists(path: str) -> bool:
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def isdir(path: str) -> bool:
    try:
        return posix.stat(path).st_mode & 0o170000 == 0o040000
    except (OSError, ValueError):
        return False


def makedirs(path: str, mode: int = 0o777) -> None:
    """``os.makedirs(path, mode, exist_ok=True)``: the missing parents get the default mode."""
    try:
        posix.mkdir(path, mode)
    except FileExistsError:
        if not isdir(path):
            raise
    except FileNotFoundError:
        parent = dirname(path)
        if not parent or parent == path:
            raise
        makedirs(parent)
        makedirs(path, mode)
