"""The bridge's configuration: a TOML file, read on every hook call.

``tomllib`` costs more than a bare interpreter start (it imports ``re``), and libvirt calls
the hook several times per VM action, so the parsed values are cached with ``marshal``
(a built-in module) beside the file, keyed by the file's identity and mtime. A cache that
cannot be written is not an error: the file is then parsed on each call.
"""

from __future__ import annotations

import marshal
import posix

from .errors import BridgeError
from .log import TARGETS
from .plainos import environ, join, split

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from .schema import Prepared, Schema

DEFAULT_PATH = "/etc/libvirt-bridge.toml"
ENV_VAR = "LIBVIRT_BRIDGE_CONFIG"
# The libvirt configuration directory this process works for, when it is not the host's
# own: the config's paths are as that libvirt's daemon sees them, where it is /etc/libvirt.
# An environment variable so that the listener's drainer and runners inherit it; hook
# scripts never see it (screening: LIBVIRT_*).
CONFDIR_ENV_VAR = "LIBVIRT_BRIDGE_CONFDIR"
ETC_LIBVIRT = "/etc/libvirt"
# The keys that hold paths.
PATH_KEYS = ("state_dir", "log_file", "qemu_status_dir", "properties_dir", "metrics_file")

DEFAULTS: dict[str, object] = {
    # Under /etc/libvirt/hooks/ because the AppArmor profile of Debian's and Ubuntu's
    # libvirtd lets hooks execute files only there.
    "hooks_dirs": ["/etc/libvirt/hooks/vdsm.d"],
    "state_dir": "/run/libvirt-bridge",
    "log_file": "/var/log/libvirt/libvirt-bridge.log",
    "log_target": "file",
    "script_timeout": 300.0,
    "libvirt_uri": "qemu:///system",
    "qemu_status_dir": "/run/libvirt/qemu",
    "start_xml_changes": "warn",
    "properties_dir": "/etc/libvirt-bridge.d/properties",
    "history_size": 4096,
    "metrics_file": "",
    "notify_url": "",
    "notify": "failed",
}

KEY_HELP: dict[str, str] = {
    "hooks_dirs": "list of absolute paths of hooks roots, each holding <event>/<script>",
    "state_dir": "absolute path of the directory for markers and async queues",
    "log_file": "absolute path of the log file (one line per script run)",
    "log_target": (
        "where log lines go: file (log_file), journal (systemd's journal, with the fields "
        "DOMAIN, UUID, EVENT, SCRIPT, RC; log_file when the journal does not take a line), "
        "or both"
    ),
    "script_timeout": "seconds a script may run before its process group is killed; 0: none",
    "libvirt_uri": "libvirt connection URI used by the listener and the commands",
    "qemu_status_dir": "where the qemu driver keeps its status files (<name>.xml)",
    "start_xml_changes": (
        "what a plain `virsh start` does when before_vm_start scripts change the XML, which "
        "libvirt cannot take then: warn, or refuse (pointing to `libvirt-bridge start`)"
    ),
    "properties_dir": (
        "absolute path of a directory of *.toml files that declare properties for the "
        "schema ([vm], [interface], ... tables of NAME = 'regex'), read when [properties] "
        "puts a schema in force"
    ),
    "history_size": (
        "KiB the history of script runs (`libvirt-bridge history`) keeps in state_dir, the "
        "oldest dropped first; 0: keep none"
    ),
    "metrics_file": (
        "absolute path of a Prometheus text file (*.prom, for node_exporter's textfile "
        "collector) with counters of script runs; empty: none"
    ),
    "notify_url": (
        "an http:// or https:// URL that gets one JSON POST per script run notify names "
        "(sent by a detached process, never inside libvirt's hook call); empty: none"
    ),
    "notify": "which script runs notify_url gets: failed (the default), or all",
}

# The property schema: a table of scopes (``vm``, or a device element's name), each a
# table of NAME = "regex". Its presence puts the schema in force (``schema``).
PROPERTIES = "properties"
# Beside it in the parsed values (not a key of the file): each of its regular expressions
# as ``schema.prepare`` compiled it, so that a hook call need not import ``re``.
PREPARED = "_prepared_patterns"

CHOICES: dict[str, tuple[str, ...]] = {
    "start_xml_changes": ("warn", "refuse"),
    "log_target": TARGETS,
    "notify": ("failed", "all"),
}

_CACHE_FORMAT = 7


class ConfigError(BridgeError):
    """The config file exists but cannot be used; the message says why and where."""


class UnsafeFileError(ConfigError):
    """A file of the config that someone other than root may change; ``fix`` says how to
    make it root's."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


class Config:
    """Validated configuration values."""

    __slots__ = (
        "_schema",
        "declared_properties",
        "history_size",
        "hooks_dirs",
        "libvirt_uri",
        "log_file",
        "log_target",
        "metrics_file",
        "mtime_ns",
        "notify",
        "notify_url",
        "path",
        "prepared_patterns",
        "properties_dir",
        "qemu_status_dir",
        "script_timeout",
        "start_xml_changes",
        "state_dir",
    )

    def __init__(self, values: dict[str, object], path: str, mtime_ns: int | None = None) -> None:
        self.path = path
        # The file's mtime when these values were read from it; None: no file, defaults.
        self.mtime_ns = mtime_ns
        self.hooks_dirs: list[str] = list(values["hooks_dirs"])  # type: ignore[call-overload]
        self.state_dir = str(values["state_dir"])
        self.log_file = str(values["log_file"])
        self.log_target = str(values["log_target"])
        self.script_timeout = float(values["script_timeout"])  # type: ignore[arg-type]
        self.libvirt_uri = str(values["libvirt_uri"])
        self.qemu_status_dir = str(values["qemu_status_dir"])
        self.start_xml_changes = str(values["start_xml_changes"])
        self.properties_dir = str(values["properties_dir"])
        self.history_size = int(values["history_size"])  # type: ignore[call-overload]
        self.metrics_file = str(values["metrics_file"])
        self.notify_url = str(values["notify_url"])
        self.notify = str(values["notify"])
        # Scope -> name -> regexes, from the file's [properties] and the drop-in files;
        # None: no schema is in force.
        self.declared_properties: dict[str, dict[str, list[str]]] | None = values.get(  # type: ignore[assignment]
            PROPERTIES
        )
        self.prepared_patterns: dict[str, Prepared | None] = values.get(PREPARED) or {}  # type: ignore[assignment]
        self._schema: Schema | None = None

    @property
    def property_schema(self) -> Schema | None:
        """The property schema in force (``schema.Schema``), or None when none is."""
        if self.declared_properties is None:
            return None
        if self._schema is None:
            from .schema import Schema

            self._schema = Schema(self.declared_properties, self.prepared_patterns)
        return self._schema


def host_path(path: str, confdir: str) -> str:
    """Where ``path``, as a daemon using ``confdir`` sees it, is for this process."""
    if path == ETC_LIBVIRT or path.startswith(ETC_LIBVIRT + "/"):
        return confdir.rstrip("/") + path[len(ETC_LIBVIRT) :]
    return path


def confdir() -> str:
    """The libvirt configuration directory this process works for ($LIBVIRT_BRIDGE_CONFDIR,
    else /etc/libvirt)."""
    return (environ().get(CONFDIR_ENV_VAR) or ETC_LIBVIRT).rstrip("/") or "/"


def seen_from_here(values: dict[str, object]) -> dict[str, object]:
    """``values`` with their paths under /etc/libvirt taken under $LIBVIRT_BRIDGE_CONFDIR."""
    here = confdir()
    if here == ETC_LIBVIRT:
        return values
    seen = dict(values)
    seen["hooks_dirs"] = [host_path(d, here) for d in values["hooks_dirs"]]  # type: ignore[attr-defined]
    for key in PATH_KEYS:
        seen[key] = host_path(str(values[key]), here)
    return seen


def config_path() -> str:
    """The config file in force: $LIBVIRT_BRIDGE_CONFIG, else the default path."""
    return environ().get(ENV_VAR) or DEFAULT_PATH


def load(path: str | None = None) -> Config:
    """Read the config at ``path`` (a missing file means defaults), through the cache.

    The file decides what runs as root: one that someone other than root may change is
    refused (UnsafeFileError), as is a drop-in file of the property schema.
    """
    path = path or config_path()
    st = _stat(path)
    if st is None:
        return Config(seen_from_here(DEFAULTS), path)
    key = (_CACHE_FORMAT, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    cache = _cache_path(path)
    cached = _read_cache(cache, key)
    values = None
    if cached is not None:
        values, dropins = cached
        if values.get(PROPERTIES) is not None and dropins != _dropins_key(values):
            values = None
    if values is None:
        values = _values(path)
        _write_cache(cache, key, (values, _dropins_key(values)))
    return Config(seen_from_here(values), path, st.st_mtime_ns)


def read(path: str) -> Config:
    """The config at ``path`` as :func:`load` gives it, neither reading nor writing the cache."""
    st = _stat(path)
    if st is None:
        return Config(seen_from_here(DEFAULTS), path)
    # Taken before parsing: a file changed meanwhile then looks changed, never the reverse.
    return Config(seen_from_here(_values(path)), path, st.st_mtime_ns)


def _stat(path: str) -> posix.stat_result | None:
    """The config file's stat, once judged root's; None when there is no file."""
    try:
        st = posix.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    _require_roots(path, st)
    return st


def _values(path: str) -> dict[str, object]:
    """The file's values, with the drop-in files' declarations when it declares a schema."""
    values = parse(path)
    if values.get(PROPERTIES) is not None:
        from .schema import prepare

        tables = values[PROPERTIES] = _with_dropins(values)
        values[PREPARED] = {
            pattern: prepare(pattern)
            for names in tables.values()
            for patterns in names.values()
            for pattern in patterns
        }
    return values


def _require_roots(path: str, st: posix.stat_result, what: str = "config") -> None:
    if _roots(st):
        return
    from .discovery import file_problem

    problem = file_problem(st)
    if problem is not None:
        import shlex  # only here: it imports re, which the hook's path does without

        fix = f"{'chown root' if problem.startswith('owned') else 'chmod go-w'} {shlex.quote(path)}"
        raise UnsafeFileError(
            f"{what} {path} is {problem}: refused, since it decides what runs as root (fix: {fix})",
            fix,
        )


def _roots(st: posix.stat_result) -> bool:
    """``discovery.file_problem(st) is None``, without importing it on the hook's path."""
    return st.st_uid in (0, posix.geteuid()) and not st.st_mode & 0o022


def parse(path: str) -> dict[str, object]:
    """Parse and validate the TOML file; raise ConfigError with a precise message."""
    import tomllib

    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    return validate(raw, path)


def validate(raw: dict[str, object], path: str) -> dict[str, object]:
    """Defaults overlaid with the file's keys, each checked for type and form."""
    values = dict(DEFAULTS)
    for key, value in raw.items():
        if key == PROPERTIES:
            values[key] = check_schema_tables(value, f"config {path}", PROPERTIES)
            continue
        if key not in DEFAULTS:
            raise ConfigError(f"config {path}: unknown key {key!r}{_suggest(key)}")
        values[key] = _check(key, value, path)
    return values


# What oVirt and VDSM call a device type, for the element libvirt names it by.
_SCOPE_HINTS = {"nic": "interface", "vnic": "interface", "network": "interface"}


def check_schema_tables(
    value: object, where: str, table: str = ""
) -> dict[str, dict[str, list[str]]]:
    """A property schema's tables (``[vm]``, ``[interface]``, ... of NAME = "regex"),
    checked: scope -> name -> [regex]. ``where`` names the file in messages, ``table``
    the table that holds them there ("" for a whole file)."""
    import re

    from .schema import SCOPES
    from .screening import name_refusal

    def named(*keys: str) -> str:
        return f"{where}: {'.'.join(k for k in (table, *keys) if k)}"

    if not isinstance(value, dict):
        raise ConfigError(
            f"{named()} must be a table of scopes ([{table}.vm], [{table}.interface], ...), "
            'each a table of NAME = "regular expression"'
        )
    tables: dict[str, dict[str, list[str]]] = {}
    for scope, names in value.items():
        if scope not in SCOPES:
            close = _SCOPE_HINTS.get(scope.lower()) or _close(scope, SCOPES, 0.8)
            hint = (
                f"did you mean {close!r}?"
                if close
                else "vm, or a device element: interface, disk, hostdev, ..."
            )
            raise ConfigError(f"{named()}: unknown scope {scope!r} ({hint})")
        if not isinstance(names, dict):
            raise ConfigError(f'{named(scope)} must be a table of NAME = "regular expression"')
        checked: dict[str, list[str]] = {}
        for name, pattern in names.items():
            why = name_refusal(name)
            if why is not None:
                raise ConfigError(
                    f"{named(scope)}: {name!r} cannot be a custom property: {why}, so no "
                    "schema admits it"
                )
            if not isinstance(pattern, str):
                raise ConfigError(
                    f"{named(scope, name)} must be a string: a regular expression that the "
                    "whole value must match"
                )
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"{named(scope, name)}: {pattern!r} is not a regular expression ({exc})"
                ) from None
            checked[name] = [pattern]
        tables[scope] = checked
    return tables


def _check(key: str, value: object, path: str) -> object:
    where = f"config {path}: {key}"
    if key == "hooks_dirs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings ({KEY_HELP[key]})")
        for item in value:
            _require_absolute(item, where)
        return list(value)
    if key == "script_timeout":
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where} must be a number of seconds >= 0 ({KEY_HELP[key]})")
        return float(value)
    if key == "history_size":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where} must be a whole number of KiB >= 0 ({KEY_HELP[key]})")
        return value
    if key in ("metrics_file", "notify_url") and value == "":
        return value
    if key == "notify_url":
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise ConfigError(
                f"{where} must be an http:// or https:// URL, or empty, not {value!r}"
            )
        return value
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string ({KEY_HELP[key]})")
    if key in CHOICES:
        if value not in CHOICES[key]:
            choices = " or ".join(repr(c) for c in CHOICES[key])
            raise ConfigError(f"{where} must be {choices}, not {value!r}")
        return value
    if key != "libvirt_uri":
        _require_absolute(value, where)
    return value


def _require_absolute(value: str, where: str) -> None:
    if not value.startswith("/"):
        raise ConfigError(f"{where}: {value!r} is not an absolute path")


def _suggest(key: str) -> str:
    close = _close(key, [*DEFAULTS, PROPERTIES])
    known = ", ".join([*DEFAULTS, f"[{PROPERTIES}]"])
    return f" (did you mean {close!r}?)" if close else f" (known keys: {known})"


def _close(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


# -- the drop-in files of the property schema --------------------------------------------

DROPIN_SUFFIX = ".toml"


def dropin_files(directory: str) -> list[str]:
    """The schema's drop-in files in ``directory``, in the order they are read."""
    try:
        names = posix.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise ConfigError(
            f"cannot list the property schema's directory {directory}: {exc.strerror}"
        ) from None
    return [
        join(directory, name)
        for name in sorted(names)
        if name.endswith(DROPIN_SUFFIX) and not name.startswith(".")
    ]


def _dropins_key(values: dict[str, object]) -> tuple[object, ...]:
    """What identifies the drop-in files as they are now (their names, identities and
    modes), so that a cached schema is read again when one changes."""
    if values.get(PROPERTIES) is None:
        return ()
    key: list[object] = []
    for path in dropin_files(str(values["properties_dir"])):
        try:
            st = posix.stat(path)
        except OSError:
            continue
        key.append((path, st.st_ino, st.st_mtime_ns, st.st_size, st.st_uid, st.st_mode))
    return tuple(key)


def read_dropin(path: str) -> dict[str, dict[str, list[str]]]:
    """One drop-in file's declarations (``[vm]``, ``[interface]``, ... tables), checked."""
    import tomllib

    try:
        with open(path, "rb") as f:
            _require_roots(path, posix.fstat(f.fileno()), "property schema file")
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the property schema file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"property schema file {path} is not valid TOML: {exc}") from None
    return check_schema_tables(raw, f"property schema file {path}")


def _with_dropins(values: dict[str, object]) -> dict[str, dict[str, list[str]]]:
    """The config's [properties] with every drop-in file's declarations added: a name
    declared more than once keeps every regular expression (a value must match each)."""
    merged: dict[str, dict[str, list[str]]] = {
        scope: {name: list(patterns) for name, patterns in table.items()}
        for scope, table in values[PROPERTIES].items()  # type: ignore[attr-defined]
    }
    for path in dropin_files(str(values["properties_dir"])):
        for scope, table in read_dropin(path).items():
            for name, patterns in table.items():
                known = merged.setdefault(scope, {}).setdefault(name, [])
                known.extend(p for p in patterns if p not in known)
    return merged


def _cache_path(path: str) -> str:
    head, tail = split(path)
    return join(head, f".{tail}.cache")


def _read_cache(
    cache: str, key: tuple[int, ...]
) -> tuple[dict[str, object], tuple[object, ...]] | None:
    """(values, the drop-ins' key) cached for the config file ``key`` names, or None.

    A cache that someone other than root may have written is not read.
    """
    try:
        with open(cache, "rb") as f:
            if not _roots(posix.fstat(f.fileno())):
                return None
            cached_key, values, dropins = marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return (values, dropins) if cached_key == key else None


def _write_cache(
    cache: str, key: tuple[int, ...], cached: tuple[dict[str, object], tuple[object, ...]]
) -> None:
    from .files import write_atomic

    try:
        write_atomic(cache, marshal.dumps((key, *cached)))  # type: ignore[arg-type]
    except OSError:
        pass  # no cache: the file is parsed on each call
