"""``posix_spawn`` through libc, with the GIL released while the child starts.

``os.posix_spawn`` holds the GIL until the child has exec'd (glibc's child borrows the
parent's memory until then), so in a process whose threads spawn side by side every spawn
stalls all its threads; on a loaded host that is milliseconds each. ctypes releases the
GIL around a foreign call. The drainer (``drainer``), whose threads run many domains'
scripts at once, spawns this way; a hook call runs one thread and keeps ``os.posix_spawn``
(importing ctypes would cost it more than it saves).

Only what ``runner`` asks of a spawn: ``open`` and ``dup2`` file actions, a new session,
signals reset to their default.
"""

from __future__ import annotations

import ctypes
import os
import posix

_LIBC = ctypes.CDLL(None, use_errno=True)
# glibc's flags (<spawn.h>); POSIX_SPAWN_SETSID since glibc 2.26.
_SETSIGDEF = 0x04
_SETSID = 0x80
# Room for glibc's opaque posix_spawn_file_actions_t (80 bytes on x86_64),
# posix_spawnattr_t (336) and sigset_t (128), whatever the architecture.
_OPAQUE = 1024


def posix_spawn(
    path: str,
    argv: list[str],
    env: dict[str, str],
    *,
    file_actions: list[tuple[int, ...] | tuple[int, int, str, int, int]],
    setsid: bool = False,
    setsigdef: tuple[int, ...] = (),
) -> int:
    """As ``os.posix_spawn`` with these arguments; the child's pid. Raises OSError."""
    actions = ctypes.create_string_buffer(_OPAQUE)
    attributes = ctypes.create_string_buffer(_OPAQUE)
    signals = ctypes.create_string_buffer(_OPAQUE)
    _check(_LIBC.posix_spawn_file_actions_init(actions), path)
    try:
        _check(_LIBC.posix_spawnattr_init(attributes), path)
        try:
            for action in file_actions:
                _add_action(actions, action, path)
            flags = _SETSID if setsid else 0
            if setsigdef:
                _LIBC.sigemptyset(signals)
                for signum in setsigdef:
                    _LIBC.sigaddset(signals, int(signum))
                _check(_LIBC.posix_spawnattr_setsigdefault(attributes, signals), path)
                flags |= _SETSIGDEF
            _check(_LIBC.posix_spawnattr_setflags(attributes, ctypes.c_short(flags)), path)
            return _spawn(path, argv, env, actions, attributes)
        finally:
            _LIBC.posix_spawnattr_destroy(attributes)
    finally:
        _LIBC.posix_spawn_file_actions_destroy(actions)


def _add_action(
    actions: ctypes.Array[ctypes.c_char],
    action: tuple[int, ...] | tuple[int, int, str, int, int],
    path: str,
) -> None:
    if action[0] == posix.POSIX_SPAWN_OPEN:
        _, fd, name, flags, mode = action
        assert isinstance(name, str)
        error = _LIBC.posix_spawn_file_actions_addopen(actions, fd, os.fsencode(name), flags, mode)
    elif action[0] == posix.POSIX_SPAWN_DUP2:
        error = _LIBC.posix_spawn_file_actions_adddup2(actions, action[1], action[2])
    else:
        raise ValueError(f"unsupported file action {action!r}")
    _check(error, path)


def _spawn(
    path: str,
    argv: list[str],
    env: dict[str, str],
    actions: ctypes.Array[ctypes.c_char],
    attributes: ctypes.Array[ctypes.c_char],
) -> int:
    args = [os.fsencode(arg) for arg in argv]
    environment = [os.fsencode(key) + b"=" + os.fsencode(value) for key, value in env.items()]
    c_argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
    c_envp = (ctypes.c_char_p * (len(environment) + 1))(*environment, None)
    pid = ctypes.c_int()
    _check(
        _LIBC.posix_spawn(
            ctypes.byref(pid), os.fsencode(path), actions, attributes, c_argv, c_envp
        ),
        path,
    )
    return pid.value


def _check(error: int, path: str) -> None:
    # posix_spawn and its helpers return the error number (exec's too), as os.posix_spawn
    # reports it.
    if error:
        raise OSError(error, posix.strerror(error), path)
