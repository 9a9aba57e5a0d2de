"""libvirt-bridge: VDSM-style hook directories for plain libvirt/KVM hosts."""

__version__ = "0.1.0"
