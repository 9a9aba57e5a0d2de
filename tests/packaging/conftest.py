"""The sandbox fixtures of the end-to-end tests, for the packaging tests too."""

from e2e.conftest import libvirt_host, make_sandbox  # noqa: F401
