"""End-to-end tests against real libvirt daemons in private sandboxes."""
