"""list: per event, the scripts that would run, in run order, with their sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from libvirt_bridge import installation
from testing.hosts import Host


@pytest.fixture
def host(tmp_path: Path) -> Host:
    host = Host(tmp_path)
    host.install()
    return host


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_scripts_in_run_order_with_their_sha256(host: Host, tmp_path: Path) -> None:
    second = tmp_path / "second-root"
    host.bridge.write_config(hooks_dirs=[str(host.hooks_root), str(second)])
    b = host.bridge
    s50 = b.script("before_vm_start", "50_b", "#!/bin/sh\necho b\n")
    s9 = b.script("before_vm_start", "9_c", "#!/bin/sh\necho c\n")
    s10 = b.script("before_vm_start", "10_a", "#!/bin/sh\necho a\n")
    s30 = b.script("before_vm_start", "30_x", "#!/bin/sh\necho x\n", root=second)
    b.script("before_vm_start", "20_not_executable", "#!/bin/sh\n", mode=0o644)
    b.script("before_vm_start", ".hidden", "#!/bin/sh\n")
    b.script("before_vm_start", "40_others_may_write", "#!/bin/sh\n", mode=0o777)
    s1 = b.script("after_vm_destroy", "1_d", "#!/bin/sh\necho d\n")

    status, out, err = host.cmd("list", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert list(report) == ["before_vm_start", "after_vm_destroy"]
    expected = [(p.name, {"checksum": sha256(p), "path": str(p)}) for p in (s10, s30, s50, s9)]
    assert list(report["before_vm_start"].items()) == expected
    assert report["after_vm_destroy"] == {"1_d": {"checksum": sha256(s1), "path": str(s1)}}
    assert "20_not_executable: not executable" in err
    assert "40_others_may_write: refused: writable by group or others" in err

    status, out, _ = host.cmd("list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "before_vm_start:"
    assert [line.split()[0] for line in lines[1:5]] == ["10_a", "30_x", "50_b", "9_c"]
    assert lines[1].split()[1:] == [sha256(s10), str(s10)]
    assert lines[5] == "after_vm_destroy:"
    assert "20_not_executable" not in out


def test_a_name_in_two_roots_is_listed_twice(host: Host, tmp_path: Path) -> None:
    second = tmp_path / "second-root"
    host.bridge.write_config(hooks_dirs=[str(host.hooks_root), str(second)])
    first = host.bridge.script("after_vm_start", "50_x", "#!/bin/sh\necho 1\n")
    other = host.bridge.script("after_vm_start", "50_x", "#!/bin/sh\necho 2\n", root=second)
    status, out, _ = host.cmd("list", "--json")
    assert status == 0
    assert json.loads(out)["after_vm_start"] == {
        "50_x": {"checksum": sha256(first), "path": str(first)},
        str(other): {"checksum": sha256(other), "path": str(other)},
    }


def test_nothing_to_run(host: Host) -> None:
    host.bridge.script("before_vm_start", "10_off", "#!/bin/sh\n", mode=0o644)
    assert json.loads(host.cmd("list", "--json")[1]) == {}
    status, out, _ = host.cmd("list")
    assert status == 0
    assert out.startswith("no script would run")


def test_unreadable_script_has_an_empty_checksum(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(b"abc")
    assert installation.checksum(str(path)) == hashlib.sha256(b"abc").hexdigest()
    assert installation.checksum(str(tmp_path / "missing")) == ""
    assert installation.checksum(str(tmp_path)) == ""


def test_invalid_config_is_an_error(host: Host) -> None:
    host.config.write_text("hooks_dirs = [\n")
    status, out, err = host.cmd("list")
    assert status == 1
    assert out == ""
    assert f"libvirt-bridge list: error: config {host.config} is not valid TOML" in err


def test_domains_lists_the_domains_with_their_state(testdrv: object, host: Host) -> None:
    status, out, err = host.cmd("list", "--domains", "--json", "--connect", "test:///default")
    assert status == 0, err
    rows = json.loads(out)
    [test] = [row for row in rows if row["name"] == "test"]
    assert test["state"] == "running" and test["persistent"] is True
    assert len(test["uuid"]) == 36
    status, out, _ = host.cmd("list", "--domains", "--connect", "test:///default")
    assert status == 0
    assert f"test  {test['uuid']}  running\n" in out


def test_connect_without_domains_is_a_usage_error(host: Host) -> None:
    status, _, err = host.cmd("list", "--connect", "test:///default")
    assert status == 2
    assert "--connect is for --domains" in err
