"""A private libvirtd for the end-to-end tests, the ``demo`` command and the benchmarks.

A :class:`Sandbox` runs ``virtlogd`` and ``libvirtd`` inside new mount and UTS namespaces,
with the sandbox's own directories bind-mounted over ``/etc/libvirt``, ``/run/libvirt``,
``/var/lib/libvirt``, ``/var/log/libvirt`` and ``/var/cache/libvirt`` and its own hostname,
so two sandboxes can run at once and migrate guests between each other, and nothing of the
host's libvirt is touched. Clients reach a sandbox through its socket (``Sandbox.uri``).
The bridge is installed in it by the real ``libvirt-bridge install``, run inside.

One module a concern: ``host`` (what this machine must have), ``layout`` (the
directories and their mounts), ``namespaces`` (which processes are the sandbox's, killing
them, the watchdog), ``daemons`` (starting, stopping and reloading libvirtd and virtlogd),
``daemonwatch`` (their pids, whether they are ready, what a reload did),
``capscache`` (QEMU capabilities shared between sandboxes), ``client`` and ``guests``
(virsh, the guests), ``bridge`` (installing the bridge, its listener), and ``sandbox``,
the class that composes them.

Facts this relies on (libvirt 9.0, QEMU 7.2, observed) are in the modules' docs.
"""

from .client import VirshError
from .errors import SandboxError
from .guests import OVIRT_VM_NS
from .host import check_host_can_run_libvirt, kvm_usable
from .layout import override_conf
from .namespaces import mounts_mentioning, process_alive
from .sandbox import Sandbox

__all__ = [
    "OVIRT_VM_NS",
    "Sandbox",
    "SandboxError",
    "VirshError",
    "check_host_can_run_libvirt",
    "kvm_usable",
    "mounts_mentioning",
    "override_conf",
    "process_alive",
]
