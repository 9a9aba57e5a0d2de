"""``virsh``, the client that reaches a sandbox's libvirtd through its socket."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence

from .errors import SandboxError
from .host import binary


class VirshError(SandboxError):
    """A ``virsh`` command failed (``returncode`` is None when it timed out)."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(
            f"{shlex.join(self.argv)} {status}\nstdout: {stdout.strip()}\nstderr: {stderr.strip()}"
        )


def client_env() -> dict[str, str]:
    """This process's environment for virsh, without variables that pick another URI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIBVIRT_", "VIRSH_"))}
    env["LC_ALL"] = "C"
    return env


def virsh_argv(uri: str, *args: str) -> list[str]:
    return [binary("virsh"), "-c", uri, *args]


def virsh(
    uri: str, *args: str, check: bool = True, timeout: float = 60.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``virsh -c URI ARGS``; VirshError on failure (if ``check``) or timeout."""
    argv = virsh_argv(uri, *args)
    try:
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=client_env(),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise VirshError(argv, None, out, err) from None
    if check and result.returncode != 0:
        raise VirshError(argv, result.returncode, result.stdout, result.stderr)
    return result
