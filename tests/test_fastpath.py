"""The qemu launcher answers libvirt from sh, without Python, exactly when nothing can run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from libvirt_bridge import config, fastpath, launcher, mapping
from testing.harness import Bridge, domain_xml

FIRING_CALLS = [
    ("prepare", "begin", "-"),
    ("started", "begin", "-"),
    ("restore", "begin", "-"),
    ("migrate", "begin", "-"),
    ("stopped", "end", "-"),
    ("release", "end", "-"),
]
SILENT_CALLS = [("start", "begin", "-"), ("reconnect", "begin", "-")]


class CountingBridge(Bridge):
    """A bridge whose launchers start Python through a wrapper that counts the starts."""

    def __init__(self, root: Path, **cfg: object) -> None:
        super().__init__(root, **cfg)
        self.starts = root / "python-starts"
        wrapper = root / "python"
        body = (
            f'#!/bin/sh\ncase "$*" in *take_deferred*) kind=after ;; *) kind=during ;; esac\n'
            f'echo "$kind" >> {self.starts}\nexec {sys.executable} "$@"\n'
        )
        wrapper.write_text(body)
        wrapper.chmod(0o755)
        self.python = str(wrapper)
        self.relaunch()

    def relaunch(self, legacy: str = "") -> None:
        for driver in launcher.DRIVERS:
            path = self.launchers / driver
            path.write_text(launcher.render(driver, str(self.config), self.python, legacy))
            path.chmod(0o755)

    def python_starts(self) -> int:
        return len(self.starts.read_text().splitlines()) if self.starts.exists() else 0

    def warm(self) -> None:
        """One call through Python, which writes the fast-path file."""
        self.qemu("vm1", "prepare", "begin", domain_xml())
        assert fastpath.is_current(config.load(str(self.config)))

    def pythons(self, op: str, subop: str, extra: str = "-") -> list[str]:
        """The Pythons the call started: ``during`` it, or ``after`` it (a deferred call)."""
        before = self.python_starts()
        result = self.qemu("vm1", op, subop, domain_xml(), extra)
        assert result.returncode == 0, result.stderr
        self.wait_async()
        return self.starts.read_text().splitlines()[before:] if self.starts.exists() else []

    def starts_python(self, op: str, subop: str, extra: str = "-") -> bool:
        return bool(self.pythons(op, subop, extra))


@pytest.fixture
def bridge(tmp_path: Path) -> CountingBridge:
    return CountingBridge(tmp_path)


@pytest.mark.parametrize("call", FIRING_CALLS + SILENT_CALLS, ids=lambda c: f"{c[0]}-{c[1]}")
def test_no_script_anywhere_no_python(bridge: CountingBridge, call: tuple[str, str, str]) -> None:
    bridge.warm()
    result = bridge.qemu("vm1", *call[:2], domain_xml(), call[2])
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert bridge.python_starts() == 1


def test_first_call_writes_the_file_through_python(bridge: CountingBridge) -> None:
    assert not os.path.exists(fastpath.fastpath_path(str(bridge.config)))
    assert bridge.starts_python("prepare", "begin")
    assert not bridge.starts_python("prepare", "begin")


def test_the_firing_calls_are_the_tables() -> None:
    assert sorted((op, subop) for op, subop, _ in FIRING_CALLS) == sorted(mapping.QEMU_FIRING_CALLS)


@pytest.mark.parametrize("event", mapping.QEMU_EVENTS)
def test_a_script_sends_to_python_exactly_the_calls_that_serve_its_event(
    bridge: CountingBridge, event: str
) -> None:
    bridge.warm()
    bridge.script(event, "50_x", "#!/bin/sh\nexit 0\n")
    for op, subop, extra in FIRING_CALLS:
        if event not in mapping.served_events(op, subop):
            expected = []
        elif (op, subop) in mapping.DEFERRED_CALLS:
            expected = ["after"]
        else:
            expected = ["during"]
        assert bridge.pythons(op, subop, extra) == expected, (op, subop)


def test_what_each_call_serves() -> None:
    # Spelled out once, against the table: the shortcut's whole meaning.
    assert {call: set(mapping.served_events(*call)) for call in mapping.QEMU_FIRING_CALLS} == {
        ("prepare", "begin"): {"before_vm_start", "before_device_create"},
        ("started", "begin"): {"after_vm_start", "after_vm_dehibernate", "after_device_create"},
        ("restore", "begin"): {"before_vm_dehibernate", "before_vm_start", "before_device_create"},
        ("migrate", "begin"): {
            "before_vm_migrate_destination",
            "before_vm_start",
            "before_device_migrate_destination",
            "before_device_create",
        },
        ("stopped", "end"): {
            "before_vm_destroy",
            "after_vm_destroy",
            "after_vm_hibernate",
            "after_vm_migrate_source",
            "before_device_destroy",
            "after_device_destroy",
            "after_device_migrate_source",
        },
        ("release", "end"): {
            "after_vm_destroy",
            "after_vm_hibernate",
            "after_vm_migrate_source",
            "after_device_destroy",
            "after_device_migrate_source",
        },
    }


def test_silent_calls_never_start_python(bridge: CountingBridge) -> None:
    bridge.warm()
    for event in mapping.QEMU_EVENTS:
        bridge.script(event, "50_x", "#!/bin/sh\nexit 0\n")
    for op, subop, extra in SILENT_CALLS:
        assert not bridge.starts_python(op, subop, extra)


def test_a_script_of_a_listener_or_verb_event_keeps_the_shortcut(bridge: CountingBridge) -> None:
    bridge.warm()
    served = {e for call in mapping.QEMU_FIRING_CALLS for e in mapping.served_events(*call)}
    for event in set(mapping.EVENTS) - served:
        bridge.script(event, "50_x", "#!/bin/sh\nexit 0\n")
    assert not bridge.starts_python("prepare", "begin")


def test_dot_files_are_not_scripts_but_other_entries_are_looked_at(
    bridge: CountingBridge,
) -> None:
    bridge.warm()
    bridge.script("before_vm_start", ".50_hidden", "#!/bin/sh\nexit 1\n")
    assert not bridge.starts_python("prepare", "begin")
    # Not runnable, but Python has to say so in the log.
    bridge.script("before_vm_start", "50_not_executable", "#!/bin/sh\n", mode=0o644)
    assert bridge.starts_python("prepare", "begin")
    assert "not executable" in bridge.log_text()


def test_a_dangling_symlink_goes_to_python(bridge: CountingBridge) -> None:
    bridge.warm()
    (bridge.hooks / "after_vm_destroy").mkdir()
    (bridge.hooks / "after_vm_destroy" / "50_gone").symlink_to(bridge.root / "nowhere")
    assert bridge.starts_python("release", "end")


def test_an_edited_config_is_read_again(bridge: CountingBridge, tmp_path: Path) -> None:
    bridge.warm()
    other = tmp_path / "other root"
    bridge.script("before_vm_start", "50_probe", "#!/bin/sh\nexit 0\n", root=other)
    bridge.write_config(hooks_dirs=[str(bridge.hooks), str(other)])
    assert bridge.starts_python("prepare", "begin")
    # Rewritten for the new config: still through Python while the script is there.
    assert fastpath.is_current(config.load(str(bridge.config)))
    assert bridge.starts_python("prepare", "begin")
    (other / "before_vm_start" / "50_probe").unlink()
    assert not bridge.starts_python("prepare", "begin")


def nothing_to_run(cfg: config.Config, op: str = "prepare", subop: str = "begin") -> bool:
    """What the fast-path file written for ``cfg`` answers, asked from sh directly."""
    fastpath.write(cfg)
    script = f'. "$1" && {fastpath.FUNCTION} qemu {op} {subop}'
    path = fastpath.fastpath_path(cfg.path)
    return subprocess.run(["sh", "-c", script, "sh", path]).returncode == 0


# With no config file the bridge uses the host's default state dir and log: these cases
# ask the file itself instead of making a call that would write there.
def test_a_deleted_config_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"hooks_dirs = [{str(tmp_path)!r}]\n")
    cfg = config.load(str(path))
    assert nothing_to_run(cfg)
    path.unlink()
    assert not nothing_to_run(cfg)


def test_a_config_created_after_defaults_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    cfg = config.Config(dict(config.DEFAULTS, hooks_dirs=[str(tmp_path)]), str(path))
    assert nothing_to_run(cfg)
    assert not nothing_to_run(cfg, "attach", "begin")
    path.write_text("")
    assert not nothing_to_run(cfg)


def test_quotes_and_spaces_in_roots(tmp_path: Path) -> None:
    root = tmp_path / "it's a root"
    bridge = CountingBridge(tmp_path, hooks_dirs=[str(root)])
    bridge.warm()
    assert not bridge.starts_python("prepare", "begin")
    bridge.script("after_vm_hibernate", "50_x", "#!/bin/sh\nexit 0\n", root=root)
    assert bridge.starts_python("release", "end")
    assert not bridge.starts_python("started", "begin")


def test_a_legacy_hook_always_goes_to_python(bridge: CountingBridge) -> None:
    legacy = bridge.launchers / "qemu.legacy"
    legacy.write_text("#!/bin/sh\nexit 0\n")
    legacy.chmod(0o755)
    bridge.relaunch(str(legacy))
    bridge.warm()
    assert bridge.starts_python("prepare", "begin")
    assert bridge.starts_python("reconnect", "begin")


def test_a_file_not_owned_by_root_is_not_read(bridge: CountingBridge) -> None:
    bridge.warm()
    os.chown(fastpath.fastpath_path(str(bridge.config)), 65534, 65534)
    assert bridge.starts_python("prepare", "begin")


def test_a_damaged_file_goes_to_python_and_is_rewritten(bridge: CountingBridge) -> None:
    bridge.warm()
    path = Path(fastpath.fastpath_path(str(bridge.config)))
    mtime = path.stat().st_mtime_ns
    path.write_text("lb_nothing_to_run() { return 1; }\n")
    os.utime(path, ns=(mtime, mtime))
    assert bridge.starts_python("prepare", "begin")
    assert not bridge.starts_python("prepare", "begin")


def test_unknown_calls_and_a_daemons_start_and_reload_go_to_python(
    bridge: CountingBridge,
) -> None:
    bridge.warm()
    assert bridge.starts_python("attach", "begin")
    for op, subop in (("start", "-"), ("reload", "begin")):
        before = bridge.python_starts()
        assert bridge.daemon(op, op, subop).returncode == 0
        assert bridge.python_starts() == before + 1, op
    assert "daemon/libvirtd" in {
        str(p.relative_to(bridge.state)) for p in bridge.state.rglob("*") if p.is_file()
    }


def test_a_daemons_stop_starts_python_only_for_an_after_vdsm_stop_script(
    bridge: CountingBridge,
) -> None:
    bridge.warm()
    for event in set(mapping.EVENTS) - {"after_vdsm_stop"}:
        bridge.script(event, "50_x", "#!/bin/sh\nexit 0\n")
    before = bridge.python_starts()
    assert bridge.daemon("shutdown", "shutdown").returncode == 0
    assert bridge.python_starts() == before
    bridge.probe("after_vdsm_stop")
    assert bridge.daemon("shutdown", "shutdown").returncode == 0
    assert [r["event"] for r in bridge.wait_async(1)] == ["after_vdsm_stop"]
    assert bridge.python_starts() == before + 1


def test_an_unwritable_config_dir_means_python_every_time(bridge: CountingBridge) -> None:
    bridge.config.parent.chmod(0o555)
    try:
        # root writes anyway; make the file's place a directory instead.
        os.mkdir(fastpath.fastpath_path(str(bridge.config)))
        assert bridge.starts_python("prepare", "begin")
        assert bridge.starts_python("prepare", "begin")
    finally:
        bridge.config.parent.chmod(0o755)


def test_veto_still_works_after_a_script_appears(bridge: CountingBridge) -> None:
    bridge.warm()
    bridge.script("before_vm_start", "50_veto", "#!/bin/sh\necho no >&2\nexit 1\n")
    result = bridge.qemu("vm1", "prepare", "begin", domain_xml())
    assert result.returncode == 1 and b"no" in result.stderr


def test_render_reads_back(tmp_path: Path) -> None:
    for legacy in ("", "/etc/libvirt/hooks/it's qemu.legacy"):
        text = launcher.render("qemu", str(tmp_path / "a b.toml"), "/usr/bin/python3", legacy)
        call = launcher.read_call(text)
        assert call == launcher.LauncherCall("/usr/bin/python3", str(tmp_path / "a b.toml"), legacy)
    assert launcher.read_call("#!/bin/sh\npython=/x\n") is None
