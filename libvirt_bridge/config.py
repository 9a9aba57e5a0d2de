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
from .plainos import environ, join, split

DEFAULT_PATH = "/etc/libvirt-bridge.toml"
ENV_VAR = "LIBVIRT_BRIDGE_CONFIG"

DEFAULTS: dict[str, object] = {
    # Under /etc/libvirt/hooks/ because the AppArmor profile of Debian's and Ubuntu's
    # libvirtd lets hooks execute files only there.
    "hooks_dirs": ["/etc/libvirt/hooks/vdsm.d"],
    "state_dir": "/run/libvirt-bridge",
    "log_file": "/var/log/libvirt/libvirt-bridge.log",
    "script_timeout": 300.0,
    "libvirt_uri": "qemu:///system",
    "qemu_status_dir": "/run/libvirt/qemu",
    "start_xml_changes": "warn",
}

KEY_HELP: dict[str, str] = {
    "hooks_dirs": "list of absolute paths of hooks roots, each holding <event>/<script>",
    "state_dir": "absolute path of the directory for markers and async queues",
    "log_file": "absolute path of the log file (one line per script run)",
    "script_timeout": "seconds a script may run before its process group is killed; 0: none",
    "libvirt_uri": "libvirt connection URI used by the listener and the commands",
    "qemu_status_dir": "where the qemu driver keeps its status files (<name>.xml)",
    "start_xml_changes": (
        "what a plain `virsh start` does when before_vm_start scripts change the XML, which "
        "libvirt cannot take then: warn, or refuse (pointing to `libvirt-bridge start`)"
    ),
}

CHOICES: dict[str, tuple[str, ...]] = {"start_xml_changes": ("warn", "refuse")}

_CACHE_FORMAT = 3


class ConfigError(BridgeError):
    """The config file exists but cannot be used; the message says why and where."""


class Config:
    """Validated configuration values."""

    __slots__ = (
        "hooks_dirs",
        "libvirt_uri",
        "log_file",
        "mtime_ns",
        "path",
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
        self.script_timeout = float(values["script_timeout"])  # type: ignore[arg-type]
        self.libvirt_uri = str(values["libvirt_uri"])
        self.qemu_status_dir = str(values["qemu_status_dir"])
        self.start_xml_changes = str(values["start_xml_changes"])


def config_path() -> str:
    """The config file in force: $LIBVIRT_BRIDGE_CONFIG, else the default path."""
    return environ().get(ENV_VAR) or DEFAULT_PATH


def load(path: str | None = None) -> Config:
    """Read the config at ``path`` (a missing file means defaults)."""
    path = path or config_path()
    try:
        st = posix.stat(path)
    except FileNotFoundError:
        return Config(dict(DEFAULTS), path)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    key = (_CACHE_FORMAT, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    cache = _cache_path(path)
    values = _read_cache(cache, key)
    if values is None:
        values = parse(path)
        _write_cache(cache, key, values)
    return Config(values, path, st.st_mtime_ns)


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
        if key not in DEFAULTS:
            raise ConfigError(f"config {path}: unknown key {key!r}{_suggest(key)}")
        values[key] = _check(key, value, path)
    return values


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
    import difflib

    close = difflib.get_close_matches(key, list(DEFAULTS), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(DEFAULTS)})"


def _cache_path(path: str) -> str:
    head, tail = split(path)
    return join(head, f".{tail}.cache")


def _read_cache(cache: str, key: tuple[int, ...]) -> dict[str, object] | None:
    try:
        with open(cache, "rb") as f:
            cached_key, values = marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return values if cached_key == key else None


def _write_cache(cache: str, key: tuple[int, ...], values: dict[str, object]) -> None:
    from .files import write_atomic

    try:
        write_atomic(cache, marshal.dumps((key, values)))
    except OSError:
        pass  # no cache: the file is parsed on each call
