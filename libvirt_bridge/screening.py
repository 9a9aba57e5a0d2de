"""Which custom properties reach root's hook scripts: the trust boundary of the metadata.

A domain's metadata is written by whoever may change that one domain (``virsh metadata``,
``virsh edit``, a libvirt ACL granting ``domain.write``, an imported XML), and its custom
properties become environment variables of scripts that run as root. So a property
reaches a script only if:

- its name is a plain identifier, ``[A-Za-z_][A-Za-z0-9_]*`` (a name a shell can export);
- its name is not one that changes how a program, a shell, the dynamic loader or an
  interpreter runs, nor one the bridge sets itself (``UNSAFE_NAMES``; glibc's
  ``unsecvars.h``, the variables a setuid program must drop, is the core of the list);
- where the config declares a property schema (``[properties]``, as oVirt's engine had
  ``UserDefinedVMProperties`` and ``CustomDeviceProperties``), its name is declared for its
  scope (``vm``, or the device's element: ``interface``, ``disk``, ``hostdev``, ...) and
  its whole value matches every regular expression declared for it.

A refused property is left out of the environment; the event still runs, and its
refusals are logged once per event.

Imported only by an event that has custom properties; the schema's own module,
``schema``, only where one is in force.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Protocol

    from .log import Log

    class Schema(Protocol):
        """What ``schema.Schema`` is to this module (which does not import it)."""

        def refusal(self, scope: str, name: str, value: str) -> str | None: ...


# The scope of the VM's own properties; a device's scope is its element's name.
VM = "vm"

_LOADER = "changes what the dynamic loader or the C library loads or does in every program"
_SHELL = "changes how a shell runs a script (what it sources, runs or traces)"
_PATHS = "changes where programs are looked up, or where files are read and written"
_INTERPRETER = "changes what an interpreter loads or runs before the script's own code"
_TOOL = "changes what a program that scripts commonly run loads, runs or trusts"
_LOCALE = "changes which locale data and message catalogues every program loads"
_IDENTITY = "changes who a program takes itself to be, or where its files go"
_BRIDGE = "set by libvirt-bridge for every script"
_LIBVIRT = "changes how libvirt's clients connect and log (a file of its choosing)"

# (pattern, why): a pattern ending in "*" covers every name that begins with the rest.
# Matched case-sensitively, as the environment is; the proxy variables are read in both
# cases, so both are listed.
UNSAFE_NAMES: tuple[tuple[str, str], ...] = (
    # glibc's unsecvars.h, and the rest of the loader's and the C library's variables.
    ("LD_*", _LOADER),
    ("GCONV_PATH", _LOADER),
    ("GETCONF_DIR", _LOADER),
    ("GLIBC_TUNABLES", _LOADER),
    ("HOSTALIASES", _LOADER),
    ("LOCALDOMAIN", _LOADER),
    ("LOCPATH", _LOADER),
    ("MALLOC_*", _LOADER),
    ("NIS_PATH", _LOADER),
    ("NLSPATH", _LOADER),
    ("RESOLV_HOST_CONF", _LOADER),
    ("RES_OPTIONS", _LOADER),
    ("TZ", _LOADER),
    ("TZDIR", _LOADER),
    # Shells.
    ("PATH", _PATHS),
    ("CDPATH", _PATHS),
    ("IFS", _SHELL),
    ("ENV", _SHELL),
    ("BASH_ENV", _SHELL),
    ("BASH_FUNC_*", _SHELL),
    ("BASH_XTRACEFD", _SHELL),
    ("BASH_COMPAT", _SHELL),
    ("BASH_LOADABLES_PATH", _SHELL),
    ("BASHOPTS", _SHELL),
    ("SHELLOPTS", _SHELL),
    ("PS0", _SHELL),
    ("PS1", _SHELL),
    ("PS2", _SHELL),
    ("PS3", _SHELL),
    ("PS4", _SHELL),
    ("PROMPT_COMMAND", _SHELL),
    ("GLOBIGNORE", _SHELL),
    ("EXECIGNORE", _SHELL),
    ("FPATH", _SHELL),
    ("ZDOTDIR", _SHELL),
    ("HISTFILE", _SHELL),
    ("INPUTRC", _SHELL),
    ("POSIXLY_CORRECT", _SHELL),
    ("SHELL", _SHELL),
    # Interpreters.
    ("PYTHON*", _INTERPRETER),
    ("PERL*", _INTERPRETER),
    ("RUBY*", _INTERPRETER),
    ("GEM_*", _INTERPRETER),
    ("NODE_*", _INTERPRETER),
    ("LUA_*", _INTERPRETER),
    ("TCLLIBPATH", _INTERPRETER),
    ("GUILE_*", _INTERPRETER),
    ("PHPRC", _INTERPRETER),
    ("PHP_INI_SCAN_DIR", _INTERPRETER),
    ("AWKPATH", _INTERPRETER),
    ("AWKLIBPATH", _INTERPRETER),
    ("JAVA_TOOL_OPTIONS", _INTERPRETER),
    ("_JAVA_OPTIONS", _INTERPRETER),
    ("JDK_JAVA_OPTIONS", _INTERPRETER),
    ("CLASSPATH", _INTERPRETER),
    # Programs a hook script commonly runs, and the libraries they load.
    ("GIT_*", _TOOL),
    ("TERM", _TOOL),
    ("TERMCAP", _TOOL),
    ("TERMINFO*", _TOOL),
    ("TAR_OPTIONS", _TOOL),
    ("GZIP", _TOOL),
    ("BZIP", _TOOL),
    ("BZIP2", _TOOL),
    ("XZ_DEFAULTS", _TOOL),
    ("XZ_OPT", _TOOL),
    ("LESS*", _TOOL),
    ("PAGER", _TOOL),
    ("MANPAGER", _TOOL),
    ("EDITOR", _TOOL),
    ("VISUAL", _TOOL),
    ("BROWSER", _TOOL),
    ("SYSTEMD_*", _TOOL),
    ("NOTIFY_SOCKET", _TOOL),
    ("LISTEN_*", _TOOL),
    ("DBUS_*", _TOOL),
    ("XDG_*", _TOOL),
    ("SSH_*", _TOOL),
    ("SUDO_*", _TOOL),
    ("GNUPGHOME", _TOOL),
    ("KRB5*", _TOOL),
    ("SASL_*", _TOOL),
    ("OPENSSL_*", _TOOL),
    ("SSL_*", _TOOL),
    ("GNUTLS_*", _TOOL),
    ("CURL_*", _TOOL),
    ("WGETRC", _TOOL),
    ("REQUESTS_CA_BUNDLE", _TOOL),
    ("RSYNC_*", _TOOL),
    ("CVS_RSH", _TOOL),
    ("GIO_*", _TOOL),
    ("QEMU_*", _TOOL),
    ("http_proxy", _TOOL),
    ("https_proxy", _TOOL),
    ("ftp_proxy", _TOOL),
    ("all_proxy", _TOOL),
    ("no_proxy", _TOOL),
    ("HTTP_PROXY", _TOOL),
    ("HTTPS_PROXY", _TOOL),
    ("FTP_PROXY", _TOOL),
    ("ALL_PROXY", _TOOL),
    ("NO_PROXY", _TOOL),
    # Locale.
    ("LANG*", _LOCALE),
    ("LC_*", _LOCALE),
    # Who and where.
    ("HOME", _IDENTITY),
    ("USER", _IDENTITY),
    ("LOGNAME", _IDENTITY),
    ("MAIL", _IDENTITY),
    ("TMPDIR", _IDENTITY),
    ("TMP", _IDENTITY),
    ("TEMP", _IDENTITY),
    # libvirt's clients (virsh, libvirt-python in a script), and the bridge's own.
    ("LIBVIRT_*", _LIBVIRT),
    ("VIRSH_*", _LIBVIRT),
    ("_hook_*", _BRIDGE),
    ("vmId", _BRIDGE),
)

_EXACT = {pattern: why for pattern, why in UNSAFE_NAMES if not pattern.endswith("*")}
_PREFIXES = tuple((pattern[:-1], why) for pattern, why in UNSAFE_NAMES if pattern.endswith("*"))


def name_refusal(name: str) -> str | None:
    """Why a property called ``name`` never reaches a script; None when its name may."""
    if not (name.isascii() and name.isidentifier()):
        return "not a plain name: letters, digits and _, not starting with a digit"
    why = _EXACT.get(name)
    if why is None:
        why = next((why for prefix, why in _PREFIXES if name.startswith(prefix)), None)
    return why


def refusal(scope: str, name: str, value: str, schema: Schema | None) -> str | None:
    """Why ``name=value`` of ``scope`` never reaches a script; None when it does."""
    why = name_refusal(name)
    if why is None and schema is not None:
        why = schema.refusal(scope, name, value)
    return why


class Refused:
    """One property left out of the environment, and why."""

    __slots__ = ("name", "scope", "value", "why")

    def __init__(self, scope: str, name: str, value: str, why: str) -> None:
        self.scope = scope
        self.name = name
        self.value = value
        self.why = why

    def describe(self) -> str:
        """``custom property LD_PRELOAD (of the VM) refused: why``."""
        whose = "the VM" if self.scope == VM else f"the <{self.scope}>"
        return f"custom property {self.name} (of {whose}) refused: {self.why}"


class Screened:
    """What reaches the scripts' environment of one event (``accepted``), and what not."""

    __slots__ = ("accepted", "refused")

    def __init__(self, accepted: dict[str, str], refused: list[Refused]) -> None:
        self.accepted = accepted
        self.refused = refused

    def log(self, log: Log, label: str) -> None:
        """One line per refused property, naming the event and the domain (``label``)."""
        for refused in self.refused:
            log.warning(f"{label}: {refused.describe()}; the scripts run without it")


def screen(
    vm: Mapping[str, str],
    schema: Schema | None,
    device: Mapping[str, str] | None = None,
    device_scope: str = "",
) -> Screened:
    """The properties of an event that reach its scripts: a device event's device's
    (``device``, of ``device_scope``), then the VM's (which win a clash, as in VDSM), each
    judged in its own scope."""
    accepted: dict[str, str] = {}
    refused: list[Refused] = []
    for scope, props in ((device_scope, device or {}), (VM, vm)):
        for name, value in props.items():
            why = refusal(scope, name, value, schema)
            if why is None:
                accepted[name] = value
            else:
                refused.append(Refused(scope, name, value, why))
    return Screened(accepted, refused)
