"""libvirt-bridge's bench: private libvirt daemons to show, try and test the bridge on.

Not part of what runs on a host (the Debian package does not carry it): the sandbox
(``sandbox``: libvirt daemons in private namespaces, the cached roots that hold libvirt
11.3), the ``demo`` and the ``lab``, and their commands, which ``libvirt-bridge`` offers
when this package is installed beside it.
"""
