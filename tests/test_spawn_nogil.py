"""posix_spawn through libc: the same child as ``os.posix_spawn`` makes, the same errors."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from libvirt_bridge.spawn_nogil import posix_spawn

# sh, not Python: Python ignores SIGPIPE as it starts.
REPORT = """#!/bin/sh
set -- $(cat /proc/$$/stat)
[ "$6" = "$$" ] && echo session-leader
readlink /proc/self/fd/0
grep SigIgn /proc/$$/status
env | grep ^SPAWN_ | sort
"""


def child_report(spawn: Callable[..., int], script: Path) -> list[str]:
    read_fd, write_fd = os.pipe()
    try:
        pid = spawn(
            str(script),
            [str(script)],
            {"SPAWN_A": "1", "SPAWN_B": "é = two"},
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, write_fd, 1),
            ],
            setsid=True,
            setsigdef=(signal.SIGPIPE,),
        )
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as output:
        data = output.read()
    assert os.waitpid(pid, 0)[1] == 0
    return data.decode().splitlines()


def test_the_child_is_the_one_os_posix_spawn_makes(tmp_path: Path) -> None:
    script = tmp_path / "report"
    script.write_text(REPORT)
    script.chmod(0o755)
    # This process ignores SIGPIPE (Python does): the child must get it back as default.
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    ours = child_report(posix_spawn, script)
    assert ours == child_report(os.posix_spawn, script)
    leader, stdin, ignored, *env = ours
    assert (leader, stdin, env) == ("session-leader", "/dev/null", ["SPAWN_A=1", "SPAWN_B=é = two"])
    assert not int(ignored.split()[1], 16) & 1 << (signal.SIGPIPE - 1)


@pytest.mark.parametrize("mode", [None, 0o644])
def test_an_exec_that_fails_raises_what_os_posix_spawn_raises(
    tmp_path: Path, mode: int | None
) -> None:
    path = tmp_path / "script"
    if mode is not None:
        path.write_text("#!/bin/sh\n")
        path.chmod(mode)
    errors = []
    for spawn in (posix_spawn, os.posix_spawn):
        with pytest.raises(OSError) as caught:
            spawn(str(path), [str(path)], {}, file_actions=[])
        errors.append((type(caught.value), caught.value.errno, caught.value.filename))
    assert errors[0] == errors[1]
    assert errors[0][2] == str(path)
