"""The config file: defaults, validation with clear messages, the marshal cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from libvirt_bridge import config


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    cfg = config.load(str(tmp_path / "absent.toml"))
    assert cfg.hooks_dirs == ["/etc/libvirt/hooks/vdsm.d"]
    assert cfg.state_dir == "/run/libvirt-bridge"
    assert cfg.libvirt_uri == "qemu:///system"
    assert cfg.script_timeout == 300.0


def test_environment_variable_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBVIRT_BRIDGE_CONFIG", "/x/y.toml")
    assert config.config_path() == "/x/y.toml"
    monkeypatch.delenv("LIBVIRT_BRIDGE_CONFIG")
    assert config.config_path() == "/etc/libvirt-bridge.toml"


def test_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'hooks_dirs = ["/a", "/b"]\nscript_timeout = 5\nlibvirt_uri = "test:///default"\n',
    )
    cfg = config.load(path)
    assert cfg.hooks_dirs == ["/a", "/b"]
    assert cfg.script_timeout == 5.0
    assert cfg.libvirt_uri == "test:///default"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hooks_dirs = '/a'", "hooks_dirs must be a list of strings"),
        ('hooks_dirs = ["relative"]', "'relative' is not an absolute path"),
        ("script_timeout = -1", "script_timeout must be a number of seconds >= 0"),
        ("script_timeout = true", "script_timeout must be a number of seconds >= 0"),
        ('state_dir = ""', "state_dir must be a non-empty string"),
        ("log_file = 3", "log_file must be a non-empty string"),
        ("hook_dirs = []", "unknown key 'hook_dirs' (did you mean 'hooks_dirs'?)"),
        ("zzz = 1", "unknown key 'zzz' (known keys:"),
        ("hooks_dirs = [", "is not valid TOML"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(write(tmp_path, text + "\n"))
    assert message in str(info.value)
    assert str(tmp_path / "c.toml") in str(info.value)


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dir.toml"
    path.mkdir()
    with pytest.raises(config.ConfigError, match="cannot read config"):
        config.load(str(path))


def test_cache_is_used_and_refreshed(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/one"\n')
    assert config.load(path).state_dir == "/one"
    cache = tmp_path / ".c.toml.cache"
    assert cache.exists()
    Path(path).write_text('state_dir = "/two-two"\n')
    assert config.load(path).state_dir == "/two-two"


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/one"\n')
    config.load(path)
    (tmp_path / ".c.toml.cache").write_bytes(b"\x00garbage")
    assert config.load(path).state_dir == "/one"


def test_a_cache_that_cannot_be_written_is_harmless(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/one"\n')
    # A directory where the cache goes: no file can replace it, not even root's.
    cache = tmp_path / ".c.toml.cache"
    cache.mkdir()
    (cache / "x").touch()
    assert config.load(path).state_dir == "/one"
    os.utime(write(tmp_path, 'state_dir = "/two"\n'), ns=(1, 1))
    assert config.load(path).state_dir == "/two"
    assert sorted(os.listdir(tmp_path)) == [".c.toml.cache", "c.toml"]  # no temp file left
