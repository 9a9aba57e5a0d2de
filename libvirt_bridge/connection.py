"""Opening a libvirt connection and finding a domain: one way, for every command.

A domain is found by name, UUID or id, as virsh takes them. Never used inside a hook
call: libvirt holds the domain's lock while its hook runs.
"""

from __future__ import annotations

import re

import libvirt

from .errors import BridgeError

_UUID = re.compile(r"[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")


class LibvirtFailure(BridgeError):
    """libvirt cannot be reached, or refused what was asked; the message says why."""


def _quiet(_ctx: object, _error: object) -> None:
    """libvirt's default handler prints every error to stderr; the caller says it better."""


def message(exc: libvirt.libvirtError) -> str:
    return exc.get_error_message() or str(exc)


def open_connection(uri: str, readonly: bool = False) -> libvirt.virConnect:
    libvirt.registerErrorHandler(_quiet, None)
    try:
        if readonly:
            return libvirt.openReadOnly(uri)
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise LibvirtFailure(f"cannot connect to {uri}: {message(exc)}") from None


def find_domain(conn: libvirt.virConnect, ident: str) -> libvirt.virDomain:
    """The domain named ``ident``, or with that UUID or id."""
    lookups = [conn.lookupByName]
    if _UUID.fullmatch(ident):
        lookups.append(conn.lookupByUUIDString)
    if ident.isdigit():
        lookups.append(lambda text: conn.lookupByID(int(text)))
    for lookup in lookups:
        try:
            return lookup(ident)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise LibvirtFailure(f"cannot look up domain {ident!r}: {message(exc)}") from None
    raise LibvirtFailure(f"no domain {ident!r} on {conn.getURI()} (see: virsh list --all)")


def list_domains(conn: libvirt.virConnect) -> list[libvirt.virDomain]:
    """Every domain of the connection, running or defined, by name."""
    try:
        found: list[libvirt.virDomain] = conn.listAllDomains(0)
    except libvirt.libvirtError as exc:
        raise LibvirtFailure(f"cannot list the domains: {message(exc)}") from None
    return sorted(found, key=lambda dom: dom.name())
