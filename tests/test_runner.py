"""VDSM's runner contract (vdsm-hooks.md sections 1 and 4), through the entry point."""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from testing.harness import (
    Bridge,
    alive,
    assert_a_left_process_never_holds_the_call,
    domain_xml,
    uuid_of,
)

APPEND_NAME = """#!/bin/sh
printf '%s\\n' "$(basename "$0")" >> {out}
"""


def restore(bridge: Bridge, xml: bytes, name: str = "vm1") -> subprocess.CompletedProcess[bytes]:
    return bridge.qemu(name, "restore", "begin", xml)


def prepare(bridge: Bridge, xml: bytes, name: str = "vm1") -> subprocess.CompletedProcess[bytes]:
    return bridge.qemu(name, "prepare", "begin", xml)


# --- discovery -----------------------------------------------------------------------


@pytest.mark.parametrize("order", list(itertools.permutations(["1.sh", "2.sh", "3.sh"])))
def test_scripts_run_in_name_order_whatever_their_creation_order(
    bridge: Bridge, tmp_path: Path, order: tuple[str, ...]
) -> None:
    out = tmp_path / "order.txt"
    for name in order:
        bridge.script("before_vm_start", name, APPEND_NAME.format(out=out))
    assert prepare(bridge, domain_xml()).returncode == 0
    assert out.read_text() == "1.sh\n2.sh\n3.sh\n"


def test_order_is_code_point_order_not_numeric_or_locale(bridge: Bridge, tmp_path: Path) -> None:
    out = tmp_path / "order.txt"
    for name in ("9_z", "50_y", "10_x", "B", "a", "_u"):
        bridge.script("before_vm_start", name, APPEND_NAME.format(out=out))
    prepare(bridge, domain_xml())
    assert out.read_text().split() == ["10_x", "50_y", "9_z", "B", "_u", "a"]


def test_what_is_not_run(bridge: Bridge, tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    body = APPEND_NAME.format(out=out)
    bridge.script("before_vm_start", "10_runs", body)
    bridge.script("before_vm_start", "20_not_executable", body, mode=0o644)
    bridge.script("before_vm_start", ".30_dotfile", body)
    nested = bridge.hooks / "before_vm_start" / "40_dir"
    nested.mkdir(mode=0o777)
    bridge.script("before_vm_start/40_dir", "nested", body)
    (bridge.hooks / "before_vm_start" / "50_dangling").symlink_to(tmp_path / "missing")
    target = bridge.script("elsewhere", "target", body)
    (bridge.hooks / "before_vm_start" / "60_link").symlink_to(target)
    (bridge.hooks / "before_vm_start" / "70_dirlink").symlink_to(nested)
    assert prepare(bridge, domain_xml()).returncode == 0
    assert out.read_text().split() == ["10_runs", "60_link"]
    log = bridge.log_text()
    assert "20_not_executable: not executable" in log
    assert "50_dangling: dangling symlink" in log


def test_missing_hooks_root_runs_nothing(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path, hooks_dirs=[str(tmp_path / "nowhere")])
    result = prepare(bridge, domain_xml())
    assert result.returncode == 0
    assert result.stderr == b""


def test_root_with_or_without_trailing_slash(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path)
    bridge.write_config(hooks_dirs=[str(bridge.hooks) + "/"])
    bridge.probe("before_vm_start")
    prepare(bridge, domain_xml())
    assert bridge.events() == ["before_vm_start"]


def test_scripts_of_several_roots_run_in_one_name_order(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path)
    second = tmp_path / "second"
    bridge.write_config(hooks_dirs=[str(bridge.hooks), str(second)])
    out = tmp_path / "order.txt"
    bridge.script("before_vm_start", "50_a", APPEND_NAME.format(out=out))
    bridge.script("before_vm_start", "10_b", APPEND_NAME.format(out=out), root=second)
    bridge.script("before_vm_start", "90_c", APPEND_NAME.format(out=out), root=second)
    prepare(bridge, domain_xml())
    assert out.read_text().split() == ["10_b", "50_a", "90_c"]


def test_unsafe_scripts_are_refused(bridge: Bridge, tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    body = APPEND_NAME.format(out=out)
    bridge.script("before_vm_start", "10_group_writable", body, mode=0o775)
    bridge.script("before_vm_start", "20_world_writable", body, mode=0o757)
    foreign = bridge.script("before_vm_start", "30_not_root", body)
    os.chown(foreign, 65534, 65534)
    bridge.script("before_vm_start", "40_ok", body)
    assert prepare(bridge, domain_xml()).returncode == 0
    assert out.read_text().split() == ["40_ok"]
    log = bridge.log_text()
    assert "10_group_writable: refused: writable by group or others (mode 0775)" in log
    assert "30_not_root: refused: owned by uid 65534" in log


def test_scripts_in_a_directory_others_may_write_do_not_run(bridge: Bridge, tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    body = APPEND_NAME.format(out=out)
    bridge.script("before_vm_start", "10_ok", body)
    second = tmp_path / "second"
    bridge.write_config(hooks_dirs=[str(bridge.hooks), str(second)])
    bridge.script("before_vm_start", "20_ok", body, root=second)
    event_dir = bridge.hooks / "before_vm_start"
    event_dir.chmod(0o777)
    assert prepare(bridge, domain_xml()).returncode == 0
    assert out.read_text().split() == ["20_ok"]
    assert (
        f"before_vm_start: skipped every script in {event_dir}: the directory {event_dir} is "
        "writable by group or others without the sticky bit (mode 0777)" in bridge.log_text()
    )
    # The hooks root above it, too; with the sticky bit, root's own scripts run again.
    event_dir.chmod(0o755)
    bridge.hooks.chmod(0o757)
    out.unlink()
    assert prepare(bridge, domain_xml()).returncode == 0
    assert out.read_text().split() == ["20_ok"]
    bridge.hooks.chmod(0o1777)
    out.unlink()
    assert prepare(bridge, domain_xml()).returncode == 0
    assert out.read_text().split() == ["10_ok", "20_ok"]


def test_a_symlinked_script_is_judged_by_its_target(bridge: Bridge, tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    target = elsewhere / "real"
    target.write_text(APPEND_NAME.format(out=out))
    target.chmod(0o755)
    event_dir = bridge.hooks / "before_vm_start"
    event_dir.mkdir()
    (event_dir / "50_link").symlink_to(target)
    assert prepare(bridge, domain_xml()).returncode == 0
    assert out.read_text().split() == ["50_link"]
    elsewhere.chmod(0o777)
    assert prepare(bridge, domain_xml()).returncode == 0
    assert out.read_text().split() == ["50_link"], "it ran once more"
    assert (
        f"skipped {event_dir / '50_link'}: refused: the directory {elsewhere} is writable by "
        "group or others without the sticky bit (mode 0777)" in bridge.log_text()
    )


def test_invalid_event_name_is_rejected() -> None:
    from libvirt_bridge.discovery import find_scripts

    for bad in ("/abs", "../x", "a/b", "..", ""):
        with pytest.raises(ValueError):
            find_scripts(["/tmp"], bad)


# --- data, environment, process -------------------------------------------------------


def test_script_contract(bridge: Bridge) -> None:
    bridge.probe("before_vm_start")
    props = {"pincpu": "1-4,^3", "label": "ąbć ünïcode", "empty": "", "LC_ALL": "C.UTF-8"}
    xml = domain_xml("vm1", properties=props)
    assert prepare(bridge, xml).returncode == 0
    [record] = bridge.read_records()
    env = record["env"]
    assert record["argv"] == [str(bridge.hooks / "before_vm_start" / "50_probe")]
    assert record["cwd"] == "/"
    assert record["stdin"] == ""
    assert record["xml_mode"] == "0o600"
    assert record["xml"] == xml.decode()
    assert env["_hook_domxml"] == record["xml_path"]
    assert not os.path.exists(str(record["xml_path"]))
    assert env["vmId"] == uuid_of(xml)
    assert env["pincpu"] == "1-4,^3"
    assert env["label"] == "ąbć ünïcode"
    assert env["empty"] == ""
    # A property never overrides what changes how a program runs: it is left out, logged.
    assert env["LC_ALL"] == "C"
    assert "custom property LC_ALL (of the VM) refused: changes which locale" in bridge.log_text()
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    compat = Path(__file__).resolve().parents[1] / "libvirt_bridge" / "compat"
    assert env["PYTHONPATH"].split(":")[-1] == str(compat)


def test_edits_chain_through_the_shared_file(bridge: Bridge) -> None:
    add = """#!{python}
import os
p = os.environ["_hook_domxml"]
x = open(p).read().replace("</domain>", "<description>{tag}</description></domain>")
open(p, "w").write(x)
"""
    check = """#!/bin/sh
grep -q '<description>first</description>' "$_hook_domxml" || exit 1
"""
    bridge.script(
        "before_vm_dehibernate", "10_first", add.format(python=sys.executable, tag="first")
    )
    bridge.script("before_vm_dehibernate", "20_check", check)
    result = restore(bridge, domain_xml())
    assert result.returncode == 0, result.stderr
    assert b"<description>first</description>" in result.stdout


def test_exit_1_continues_and_vetoes_with_every_failing_stderr(
    bridge: Bridge, tmp_path: Path
) -> None:
    out = tmp_path / "ran.txt"
    bridge.script("before_vm_start", "1.sh", APPEND_NAME.format(out=out))
    for name in ("2.sh", "3.sh"):
        bridge.script(
            "before_vm_start",
            name,
            APPEND_NAME.format(out=out) + f"echo {name} says no >&2\nexit 1\n",
        )
    result = prepare(bridge, domain_xml())
    assert result.returncode == 1
    assert out.read_text().split() == ["1.sh", "2.sh", "3.sh"]
    assert b"2.sh says no" in result.stderr
    assert b"3.sh says no" in result.stderr
    assert b"before_vm_start/2.sh" in result.stderr


def test_exit_2_stops_later_scripts(bridge: Bridge, tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    bridge.script("before_vm_start", "1.sh", APPEND_NAME.format(out=out))
    bridge.script(
        "before_vm_start", "2.sh", APPEND_NAME.format(out=out) + "echo stop >&2\nexit 2\n"
    )
    bridge.script("before_vm_start", "3.sh", APPEND_NAME.format(out=out))
    result = prepare(bridge, domain_xml())
    assert result.returncode == 1
    assert out.read_text().split() == ["1.sh", "2.sh"]
    assert b"stop" in result.stderr


def test_exit_2_in_a_non_veto_event_stops_but_libvirt_goes_on(
    bridge: Bridge, tmp_path: Path
) -> None:
    out = tmp_path / "ran.txt"
    bridge.script("before_vm_destroy", "1.sh", APPEND_NAME.format(out=out) + "exit 2\n")
    bridge.script("before_vm_destroy", "2.sh", APPEND_NAME.format(out=out))
    assert bridge.qemu("vm1", "stopped", "end", domain_xml()).returncode == 0
    assert out.read_text().split() == ["1.sh"]


def test_reserved_exit_code_warns_and_continues(bridge: Bridge, tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    bridge.script("before_vm_destroy", "1.sh", "#!/bin/sh\nexit 111\n")
    bridge.script("before_vm_destroy", "2.sh", APPEND_NAME.format(out=out))
    bridge.qemu("vm1", "stopped", "end", domain_xml())
    assert out.read_text().split() == ["2.sh"]
    warning = next(line for line in bridge.log_text().splitlines() if "1.sh" in line)
    assert " WARNING " in warning and "rc=111" in warning and "reserved" in warning


def test_stderr_is_logged_and_stdout_is_not_passed_on(bridge: Bridge) -> None:
    bridge.script(
        "before_vm_dehibernate", "10_talk", "#!/bin/sh\necho to-stdout\necho diagnostics >&2\n"
    )
    result = restore(bridge, domain_xml())
    assert result.returncode == 0
    assert result.stdout == b""
    line = next(x for x in bridge.log_text().splitlines() if "10_talk" in x)
    assert " INFO " in line and "diagnostics" in line and "stdout_bytes=10" in line


def test_one_log_line_per_script_run(bridge: Bridge) -> None:
    bridge.script("before_vm_start", "10_a", "#!/bin/sh\n")
    bridge.script("before_vm_start", "20_b", "#!/bin/sh\nexit 1\n")
    prepare(bridge, domain_xml("odd 'name' ü"), name="odd 'name' ü")
    lines = [x for x in bridge.log_text().splitlines() if "script=" in x]
    assert len(lines) == 2
    assert all("before_vm_start domain=\"odd 'name' ü\"" in x for x in lines)
    assert "rc=0" in lines[0] and "rc=1" in lines[1] and " ERROR " in lines[1]


def test_script_that_cannot_be_executed_is_a_failure(bridge: Bridge) -> None:
    bridge.script("before_vm_start", "10_no_shebang", "echo hi\n")
    bridge.script("before_vm_start", "20_crlf", "#!/bin/sh\r\nexit 0\r\n")
    result = prepare(bridge, domain_xml())
    assert result.returncode == 1
    assert b"10_no_shebang (could not run: not an executable format" in result.stderr
    assert b"20_crlf (could not run: not found, or its #! interpreter is missing" in result.stderr


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path, script_timeout=1)
    pidfile = tmp_path / "child.pid"
    bridge.script(
        "before_vm_start",
        "10_hang",
        f"#!/bin/sh\nsleep 300 &\necho $! > {pidfile}\ntrap '' TERM\nwait\n",
    )
    result = prepare(bridge, domain_xml())
    assert result.returncode == 1
    assert b"10_hang (killed after timeout" in result.stderr
    child = int(pidfile.read_text())
    assert not alive(child)


def test_timeout_zero_means_none(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path, script_timeout=0)
    bridge.script("before_vm_start", "10_slow", "#!/bin/sh\nsleep 1.5\n")
    assert prepare(bridge, domain_xml()).returncode == 0


def test_background_child_never_holds_the_call(bridge: Bridge, tmp_path: Path) -> None:
    assert_a_left_process_never_holds_the_call(bridge, tmp_path, "sleep 120 &\necho $! > {pidfile}")


# --- XML rules -----------------------------------------------------------------------

MINIDOM_ROUNDTRIP = """#!{python}
import os
from xml.dom import minidom
p = os.environ["_hook_domxml"]
doc = minidom.parse(p)
open(p, "wb").write(doc.toxml(encoding="utf-8"))
"""


def test_reserialising_is_not_a_change(bridge: Bridge) -> None:
    bridge.script(
        "before_vm_migrate_destination",
        "50_cpuflags_like",
        MINIDOM_ROUNDTRIP.format(python=sys.executable),
    )
    result = bridge.qemu("vm1", "migrate", "begin", domain_xml(properties={"a": "b"}))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""


def test_invalid_xml_left_by_a_script_refuses_the_operation(bridge: Bridge) -> None:
    bridge.script("before_vm_dehibernate", "10_ok", "#!/bin/sh\n")
    bridge.script(
        "before_vm_dehibernate", "20_breaks", "#!/bin/sh\necho '<domain>' > \"$_hook_domxml\"\n"
    )
    result = restore(bridge, domain_xml())
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"20_breaks left XML that is not well-formed" in result.stderr


def test_prepare_change_is_logged_naming_the_script(bridge: Bridge) -> None:
    bridge.script(
        "before_vm_start", "10_reserialise", MINIDOM_ROUNDTRIP.format(python=sys.executable)
    )
    bridge.script(
        "before_vm_start",
        "20_edit",
        "#!/bin/sh\nsed -i 's#</domain>#<description>x</description></domain>#' "
        '"$_hook_domxml"\n',
    )
    result = prepare(bridge, domain_xml())
    assert result.returncode == 0
    assert result.stdout == b""
    warning = next(x for x in bridge.log_text().splitlines() if "changed the domain XML" in x)
    assert "20_edit" in warning and "10_reserialise" not in warning


@pytest.mark.parametrize("bad", [b"", b"   \n", b"<domain><name>x</name>", b"\xff\xfe garbage"])
def test_malformed_xml_on_stdin(bridge: Bridge, bad: bytes) -> None:
    bridge.probe("before_vm_start")
    bridge.probe("before_vm_destroy")
    vetoing = prepare(bridge, bad)
    assert vetoing.returncode == 1
    assert b"not well-formed" in vetoing.stderr or b"is empty" in vetoing.stderr
    assert bridge.events() == []
    other = bridge.qemu("vm1", "stopped", "end", bad)
    assert other.returncode == 0
    assert bridge.events() == ["before_vm_destroy"]
    assert "no domain UUID" in bridge.log_text()


@pytest.mark.parametrize(
    "name", ["with space", "quo'te\"s", "ünï", "a/b/../../etc", "-", "$(reboot)"]
)
def test_odd_domain_names_are_never_path_components(bridge: Bridge, name: str) -> None:
    bridge.probe("before_vm_start")
    bridge.probe("after_vm_start")
    xml = domain_xml(name)
    assert prepare(bridge, xml, name=name).returncode == 0
    assert bridge.qemu(name, "started", "begin", xml).returncode == 0
    bridge.wait_async(2)
    files = {p.name for p in bridge.state.rglob("*")}
    assert not any("etc" in f or "reboot" in f or "ü" in f for f in files)
    assert f"domain={name!r}" in bridge.log_text()


# --- configuration errors -------------------------------------------------------------


def test_broken_config_refuses_vetoing_events_with_a_clear_message(bridge: Bridge) -> None:
    bridge.config.write_text("hooks_dirs = [\n")
    result = prepare(bridge, domain_xml())
    assert result.returncode == 1
    assert b"is not valid TOML" in result.stderr
    assert bridge.qemu("vm1", "started", "begin", domain_xml()).returncode == 0


def test_unknown_config_key_names_the_nearest(bridge: Bridge) -> None:
    bridge.config.write_text("script_timout = 3\n")
    result = prepare(bridge, domain_xml())
    assert result.returncode == 1
    assert b"unknown key 'script_timout' (did you mean 'script_timeout'?)" in result.stderr


def test_config_cache_follows_edits(bridge: Bridge, tmp_path: Path) -> None:
    bridge.probe("before_vm_start")
    prepare(bridge, domain_xml())
    other = tmp_path / "other-hooks"
    bridge.write_config(hooks_dirs=[str(other)])
    bridge.probe("before_vm_start", name="99_other", root=other)
    prepare(bridge, domain_xml())
    assert [r["script"] for r in bridge.read_records()] == ["50_probe", "99_other"]
    assert stat.S_ISREG(os.stat(bridge.config.parent / ".libvirt-bridge.toml.cache").st_mode)


def test_scripts_import_the_hooking_module_both_ways(bridge: Bridge) -> None:
    body = f"""#!{sys.executable}
import sys
try:
    import hooking
    from vdsm.hook import hooking as vdsm_hooking
except ImportError as exc:
    sys.exit(f"{{exc}}")
doc = hooking.read_domxml()
if doc.getElementsByTagName("name")[0].firstChild.data != "vm1":
    sys.exit("wrong XML")
hooking.write_domxml(doc)
vdsm_hooking.exit_hook("fine", return_code=0)
"""
    bridge.script("before_vm_start", "50_uses_hooking", body)
    result = prepare(bridge, domain_xml("vm1"))
    assert result.returncode == 0, result.stderr


def test_descriptors_the_process_was_given_never_reach_a_script(tmp_path: Path) -> None:
    # In a process of its own: one given an inheritable descriptor, as by a shell, that
    # runs two events (the check is made once per process, at its first event).
    out = tmp_path / "out"
    script = tmp_path / "fds"
    script.write_text(
        f'#!/bin/sh\n[ -e /proc/$$/fd/"$GIVEN" ] && echo open >> {out}\necho ran >> {out}\n'
    )
    script.chmod(0o755)
    program = f"""
import os
from libvirt_bridge.log import Log
from libvirt_bridge.runner import run_event
read_fd, write_fd = os.pipe()
os.set_inheritable(write_fd, True)
env = dict(os.environ, GIVEN=str(write_fd))
for _ in range(2):
    run_event([{str(script)!r}], b"<domain/>", env, 10, Log(""), "test")
"""
    subprocess.run([sys.executable, "-c", program], check=True, timeout=60)
    assert out.read_text() == "ran\nran\n"
