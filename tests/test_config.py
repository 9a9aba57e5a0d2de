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


# -- trust: the file decides what runs as root ---------------------------------------------


@pytest.mark.parametrize(
    ("mode", "owner", "message"),
    [
        (0o664, 0, "is writable by group or others (mode 0664): refused"),
        (0o646, 0, "is writable by group or others (mode 0646): refused"),
        (0o644, 65534, "is owned by uid 65534, not by root: refused"),
    ],
)
def test_a_config_someone_else_may_change_is_refused(
    tmp_path: Path, mode: int, owner: int, message: str
) -> None:
    path = write(tmp_path, 'state_dir = "/one"\n')
    config.load(path)  # cached while it was root's
    os.chmod(path, mode)
    os.chown(path, owner, 0)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert f"config {path} {message}" in str(info.value)
    fix = "chmod go-w" if owner == 0 else "chown root"
    assert f"(fix: {fix} {path})" in str(info.value)


def test_a_cache_someone_else_wrote_is_not_read(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/one"\n')
    config.load(path)
    cache = tmp_path / ".c.toml.cache"
    planted = tmp_path / "planted.toml"
    planted.write_text('state_dir = "/planted"\n')
    # A cache of another file's values, made to look current, then given away.
    config.load(str(planted))
    os.replace(tmp_path / ".planted.toml.cache", cache)
    import marshal

    st = os.stat(path)
    key = (config._CACHE_FORMAT, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    _, values, dropins = marshal.loads(cache.read_bytes())
    cache.write_bytes(marshal.dumps((key, values, dropins)))
    assert config.load(path).state_dir == "/planted", "a current cache of root's is used"
    os.chown(cache, 65534, 65534)
    assert config.load(path).state_dir == "/one"


# -- the property schema ---------------------------------------------------------------------


def test_no_properties_table_means_no_schema(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, 'state_dir = "/one"\n')).property_schema is None
    assert config.load(str(tmp_path / "absent.toml")).property_schema is None


def test_an_empty_properties_table_puts_a_schema_in_force(tmp_path: Path) -> None:
    schema = config.load(write(tmp_path, "[properties]\n")).property_schema
    assert schema is not None
    assert schema.refusal("vm", "pincpu", "1") == "not declared for the VM in the property schema"


def test_the_schema_and_its_dropins_are_read_and_cached(tmp_path: Path) -> None:
    dropins = tmp_path / "properties.d"
    dropins.mkdir()
    (dropins / "10_pincpu.toml").write_text("[vm]\npincpu = '[0-9,^-]+'\n")
    (dropins / "notes.txt").write_text("not a drop-in: ignored\n")
    (dropins / ".hidden.toml").write_text("not valid = = toml\n")
    path = write(
        tmp_path,
        f'properties_dir = "{dropins}"\n'
        "[properties.vm]\npincpu = '[0-9-]+'\nlabel = '.*'\n"
        "[properties.interface]\nextnet = 'br-[a-z]+'\n",
    )
    cfg = config.load(path)
    assert cfg.declared_properties == {
        "vm": {"pincpu": ["[0-9-]+", "[0-9,^-]+"], "label": [".*"]},
        "interface": {"extnet": ["br-[a-z]+"]},
    }
    schema = cfg.property_schema
    assert schema is not None
    assert schema.refusal("vm", "pincpu", "1-4") is None
    assert schema.refusal("vm", "pincpu", "1,3") is not None, "it must match both"
    # A new drop-in file is seen though the config file did not change.
    (dropins / "20_nicnet.toml").write_text("[interface]\nnicnet = '[a-z:]+'\n")
    assert config.load(path).declared_properties["interface"] == {  # type: ignore[index]
        "extnet": ["br-[a-z]+"],
        "nicnet": ["[a-z:]+"],
    }
    (dropins / "20_nicnet.toml").unlink()
    assert "nicnet" not in config.load(path).declared_properties["interface"]  # type: ignore[index]


def test_dropins_count_only_when_the_config_declares_a_schema(tmp_path: Path) -> None:
    dropins = tmp_path / "properties.d"
    dropins.mkdir()
    (dropins / "pincpu.toml").write_text("[vm]\npincpu = '.*'\n")
    cfg = config.load(write(tmp_path, f'properties_dir = "{dropins}"\n'))
    assert cfg.property_schema is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("properties = 1", "properties must be a table of scopes"),
        ("[properties.vms]\na = '.*'", "properties: unknown scope 'vms' (did you mean 'vm'?)"),
        ("[properties.nic]\na = '.*'", "unknown scope 'nic' (did you mean 'interface'?)"),
        ("[properties.frob]\na = '.*'", "unknown scope 'frob' (vm, or a device element"),
        ("[properties]\nvm = 'x'", "properties.vm must be a table of NAME"),
        ("[properties.vm]\na = 1", "properties.vm.a must be a string: a regular expression"),
        ("[properties.vm]\na = '[0-9'", "properties.vm.a: '[0-9' is not a regular expression"),
        (
            "[properties.vm]\nLD_PRELOAD = '.*'",
            "properties.vm: 'LD_PRELOAD' cannot be a custom property: changes what the dynamic",
        ),
        (
            "[properties.interface]\n'a-b' = '.*'",
            "properties.interface: 'a-b' cannot be a custom property: not a plain name",
        ),
        ("[propertys.vm]\na = '.*'", "unknown key 'propertys' (did you mean 'properties'?)"),
    ],
)
def test_bad_schemas_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(write(tmp_path, text + "\n"))
    assert message in str(info.value)


def test_a_bad_or_unsafe_dropin_is_named(tmp_path: Path) -> None:
    dropins = tmp_path / "properties.d"
    dropins.mkdir()
    bad = dropins / "x.toml"
    bad.write_text("[vm]\nPATH = '.*'\n")
    path = write(tmp_path, f'properties_dir = "{dropins}"\n[properties]\n')
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert f"property schema file {bad}: vm: 'PATH' cannot be a custom property" in str(info.value)
    bad.write_text("[vm]\nlabel = '.*'\n")
    assert config.load(path).property_schema is not None
    bad.chmod(0o666)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert f"property schema file {bad} is writable by group or others" in str(info.value)
