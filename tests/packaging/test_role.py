"""The Ansible role libvirt_bridge.hosts.libvirt_bridge, run by ansible-playbook against a
sandbox host.

ansible-playbook runs in a :class:`PackageWorld` (the role's apt task installs the .deb on
this machine, its maintainer scripts see private /etc and /run), with a local connection
and every path of the role pointed at the sandbox's directories. The collection's own
playbooks run: ``site`` (the role on the group libvirt_hosts) and ``report``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from libvirt_bridge import config, launcher
from libvirt_bridge.hook import is_launcher
from libvirt_bridge_lab.sandbox import Sandbox
from testing import packaging
from testing.packaging import PackageWorld

from .test_deb import PackagedProbe, tree

pytestmark = [pytest.mark.libvirt, pytest.mark.packaging]

COLLECTION = packaging.REPO / "ansible"
HELLO = "#!/bin/sh\necho hello from {event}\n"
# The files of the shipped hook enabled by the role (hooks.d/<event>/10_cantmigrate).
CANTMIGRATE = (
    "before_vm_migrate_destination/10_cantmigrate",
    "before_vm_migrate_source/10_cantmigrate",
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Ansible:
    """ansible-playbook in ``world``, with the collection from this checkout."""

    def __init__(self, world: PackageWorld, work: Path, installed: bool = False) -> None:
        """``installed``: the collection as ``ansible-galaxy collection install`` puts it
        (a copy, its playbooks away from any checkout), else a link to this checkout's."""
        self.world = world
        self.work = work
        for name in ("home", "tmp"):
            (work / name).mkdir(parents=True)
        if installed:
            self.galaxy("collection", "install", str(COLLECTION), "-p", str(work / "collections"))
        else:
            collections = work / "collections" / "ansible_collections" / "libvirt_bridge"
            collections.mkdir(parents=True)
            (collections / "hosts").symlink_to(COLLECTION)
        self.inventory = work / "inventory.json"
        # Its own (empty) config: none from the cwd or /etc/ansible.
        (work / "ansible.cfg").write_text("[defaults]\n")

    def env(self) -> list[str]:
        values = {
            "ANSIBLE_COLLECTIONS_PATH": str(self.work / "collections"),
            "ANSIBLE_HOME": str(self.work / "home"),
            "ANSIBLE_LOCAL_TEMP": str(self.work / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(self.work / "tmp"),
            "ANSIBLE_CONFIG": str(self.work / "ansible.cfg"),
            "ANSIBLE_CALLBACK_PLUGINS": str(packaging.REPO / "testing" / "ansible_callbacks"),
            "ANSIBLE_STDOUT_CALLBACK": "results_json",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_NOCOLOR": "1",
        }
        return ["env", *(f"{key}={value}" for key, value in values.items())]

    def galaxy(self, *args: str) -> None:
        result = subprocess.run(
            [*self.env(), "ansible-galaxy", *args], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"ansible-galaxy failed:\n{result.stdout}{result.stderr}"

    def playbook(self, name: str, *args: str) -> dict[str, object]:
        """``ansible-playbook libvirt_bridge.hosts.NAME ARGS``: its JSON report."""
        argv = [*self.env(), "ansible-playbook", "-i", str(self.inventory)]
        result = self.world.run([*argv, f"libvirt_bridge.hosts.{name}", *args], check=False)
        output = result.stdout[-6000:] + result.stderr[-3000:]
        assert result.returncode == 0, f"ansible-playbook {name} failed:\n{output}"
        report: dict[str, object] = json.loads(result.stdout)
        return report


def changed(report: dict[str, object], host: str) -> list[str]:
    """The names of the tasks that changed ``host``, in order (a loop counts once)."""
    names = []
    for play in report["plays"]:  # type: ignore[attr-defined]
        for task in play["tasks"]:
            result = task["hosts"].get(host)
            if result and result.get("changed"):
                names.append(task["task"]["name"])
    assert report["stats"][host]["changed"] == len(names)  # type: ignore[index]
    return names


def result_of(report: dict[str, object], host: str, name: str) -> dict[str, object]:
    """The result of the last task named ``name`` on ``host``."""
    found = None
    for play in report["plays"]:  # type: ignore[attr-defined]
        for task in play["tasks"]:
            if task["task"]["name"] == name and host in task["hosts"]:
                found = task["hosts"][host]
    assert found is not None, f"no task {name!r} ran on {host}"
    return found  # type: ignore[no-any-return]


def facts(report: dict[str, object], host: str) -> dict[str, object]:
    name = (
        "Set the facts libvirt_bridge_hooks, libvirt_bridge_hooks_summary and "
        "libvirt_bridge_hooks_digest"
    )
    return result_of(report, host, name)["ansible_facts"]  # type: ignore[return-value]


def write_inventory(
    ansible: Ansible, sandbox: Sandbox, deb: Path, src: Path, **extra: object
) -> None:
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": packaging.PYTHON,
        "ansible_become": False,  # root already; site.yml asks for become
        "libvirt_bridge_deb": str(deb),
        "libvirt_bridge_deb_dir": os.path.join(sandbox.bridge_dir, "debs"),
        "libvirt_bridge_confdir": sandbox.etc_dir,
        "libvirt_bridge_config_path": sandbox.config_path,
        "libvirt_bridge_logrotate_dir": sandbox.logrotate_dir,
        "libvirt_bridge_hooks_dirs": [sandbox.hooks_root],
        "libvirt_bridge_state_dir": sandbox.state_dir,
        "libvirt_bridge_log_file": sandbox.log_file,
        "libvirt_bridge_listener": False,
        "libvirt_bridge_hooks_src": str(src),
        "libvirt_bridge_shipped_hooks": ["cantmigrate"],
        **extra,
    }
    hosts = {sandbox.name: host}
    # Two more hosts for the report, with a copy of the sandbox's hooks (no libvirt there).
    for name in ("lbcopy2", "lbcopy3"):
        root = ansible.work / name
        if root.exists():
            config = root / "bridge.toml"
            hosts[name] = {
                "ansible_connection": "local",
                "ansible_python_interpreter": packaging.PYTHON,
                "libvirt_bridge_confdir": str(root / "etc-libvirt"),
                "libvirt_bridge_config_path": str(config),
            }
    ansible.inventory.write_text(json.dumps({"libvirt_hosts": {"hosts": hosts}}))


def snapshot(world: PackageWorld) -> tuple[dict[str, str], ...]:
    """The sandbox's libvirt and bridge files, its logrotate dir and the world's own."""
    sandbox = world.sandbox
    dirs = (sandbox.etc_dir, sandbox.bridge_dir, sandbox.logrotate_dir)
    return (*(tree(d) for d in dirs), {path: "" for path in world.own_files()})


def copy_host(ansible: Ansible, sandbox: Sandbox, name: str) -> None:
    """A host ``name`` whose only hooks root is a copy of the sandbox's."""
    root = ansible.work / name
    (root / "etc-libvirt").mkdir(parents=True)
    shutil.copytree(sandbox.hooks_root, root / "hooks", symlinks=True)
    (root / "bridge.toml").write_text(f"hooks_dirs = {json.dumps([str(root / 'hooks')])}\n")


def docs_inventory_vars() -> dict[str, str]:
    """The group variables of the inventory docs/many-hosts.md gives, as written."""
    text = (packaging.REPO / "docs" / "many-hosts.md").read_text()
    block = text[text.index("`inventory.yml`:") :]
    block = block[block.index("```yaml\n") + 8 :]
    block = block[block.index("  vars:\n") : block.index("\n```")]
    # Its quoted values (no YAML parser in the venv; the docs quote every path).
    return dict(re.findall(r'^    (\w+): "([^"]*)"', block, re.M))


def test_the_installed_collection_finds_what_the_docs_inventory_names(
    deb: Path, world: PackageWorld, tmp_path: Path
) -> None:
    """The collection's site playbook, run from the installed collection as the docs say,
    with the docs' inventory: the .deb and the hooks tree are the inventory's neighbours."""
    documented = docs_inventory_vars()
    deb_var, src_var = documented["libvirt_bridge_deb"], documented["libvirt_bridge_hooks_src"]
    assert deb_var.startswith("{{ inventory_dir }}/") and src_var == "{{ inventory_dir }}/hooks"
    sandbox = world.sandbox
    ansible = Ansible(world, tmp_path / "ansible", installed=True)
    installed = ansible.work / "collections" / "ansible_collections" / "libvirt_bridge" / "hosts"
    assert (installed / "playbooks" / "site.yml").is_file() and not installed.is_symlink()
    # The operator's directory: inventory.yml, dist/ with the .deb, hooks/<event>/<script>.
    ops = tmp_path / "ops"
    package = ops / deb_var.removeprefix("{{ inventory_dir }}/")
    package.parent.mkdir(parents=True)
    shutil.copy(deb, package)
    (ops / "hooks" / "after_vm_destroy").mkdir(parents=True)
    (ops / "hooks" / "after_vm_destroy" / "20_hello").write_text(HELLO.format(event="x"))
    ansible.inventory = ops / "inventory.yml"
    write_inventory(ansible, sandbox, deb, ops / "hooks")
    inventory = json.loads(ansible.inventory.read_text())
    host = inventory["libvirt_hosts"]["hosts"][sandbox.name]
    host.pop("libvirt_bridge_deb"), host.pop("libvirt_bridge_hooks_src")
    inventory["libvirt_hosts"]["vars"] = {
        "libvirt_bridge_deb": deb_var,
        "libvirt_bridge_hooks_src": src_var,
    }
    ansible.inventory.write_text(json.dumps(inventory))  # JSON is YAML

    before = snapshot(world)
    report = ansible.playbook("site", "--check")
    assert snapshot(world) == before
    assert "Copy the package to the host" in changed(report, sandbox.name)
    copied = result_of(report, sandbox.name, "Copy the hook scripts (owner root, mode 0755)")
    assert [item["item"] for item in copied["results"]] == [  # type: ignore[attr-defined]
        str(ops / "hooks" / "after_vm_destroy" / "20_hello")
    ]


def test_the_roles_defaults_are_the_bridges(tmp_path: Path) -> None:
    """One variable per config key, defaulting to the bridge's default; the argument spec
    gives every variable with the same default."""
    load = (
        "import json, sys, yaml; print(json.dumps([yaml.safe_load(open(p)) for p in sys.argv[1:]]))"
    )
    role = COLLECTION / "roles" / "libvirt_bridge"
    defaults, specs = json.loads(
        packaging.run(
            [
                packaging.PYTHON,
                "-c",
                load,
                str(role / "defaults" / "main.yml"),
                str(role / "meta" / "argument_specs.yml"),
            ]
        ).stdout
    )
    for key, value in config.DEFAULTS.items():
        assert defaults[f"libvirt_bridge_{key}"] == value, key
    options = specs["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults)
    for name, value in defaults.items():
        assert options[name].get("default", value) == value, name
        assert "default" in options[name] or options[name].get("required"), name


def test_ansible_lint_is_clean(tmp_path: Path) -> None:
    collections = tmp_path / "ansible_collections" / "libvirt_bridge"
    collections.mkdir(parents=True)
    (collections / "hosts").symlink_to(COLLECTION)
    env = dict(packaging.HOST_ENV, ANSIBLE_COLLECTIONS_PATH=str(tmp_path), HOME=str(tmp_path))
    result = subprocess.run(
        ["ansible-lint", "--nocolor"],
        cwd=COLLECTION,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed with production profile: 0 failure(s), 0 warning(s)" in result.stderr


def test_the_role_installs_configures_syncs_and_reports(
    deb: Path, world: PackageWorld, tmp_path: Path
) -> None:
    sandbox = world.sandbox
    host = sandbox.name
    ansible = Ansible(world, tmp_path / "ansible")
    probe = PackagedProbe(sandbox, ())
    src = tmp_path / "hooks-src"
    for event in ("before_vm_start", "after_vm_start"):
        (src / event).mkdir(parents=True)
        (src / event / "50_probe").write_text(probe.script)
    (src / "after_vm_destroy").mkdir()
    (src / "after_vm_destroy" / "20_hello").write_text(HELLO.format(event="after_vm_destroy"))
    write_inventory(ansible, sandbox, deb, src)

    # Check mode on the fresh host: it says what it would do, and does nothing.
    before = snapshot(world)
    report = ansible.playbook("site", "--check")
    assert snapshot(world) == before
    assert packaging.status() == ""
    assert changed(report, host) == [
        "Create the directory the package is kept in",
        "Copy the package to the host",
        "Write the config",
        "Create the event directories",
        "Copy the hook scripts (owner root, mode 0755)",
    ]
    assert result_of(report, host, "Plan libvirt-bridge install (--dry-run)").get("skipped")

    # The first run installs the package, writes the config, syncs the tree, installs.
    report = ansible.playbook("site")
    assert changed(report, host) == [
        "Create the directory the package is kept in",
        "Copy the package to the host",
        "Install the package (its dependencies from the host's repositories)",
        "Write the config",
        "Create the event directories",
        "Copy the hook scripts (owner root, mode 0755)",
        "Run libvirt-bridge install",
    ]
    assert packaging.installed()
    qemu = os.path.join(sandbox.hooks_dir, "qemu")
    assert is_launcher(qemu)
    call = launcher.read_call(Path(qemu).read_text())
    assert call is not None and call.interpreter == packaging.PYTHON
    assert "script_timeout = 300" in Path(sandbox.config_path).read_text()
    root = Path(sandbox.hooks_root)
    for relative in ("before_vm_start/50_probe", "after_vm_destroy/20_hello", *CANTMIGRATE):
        st = (root / relative).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o755), relative
    hooks = facts(report, host)["libvirt_bridge_hooks"]
    assert isinstance(hooks, dict)
    assert hooks["before_vm_start"]["50_probe"]["checksum"] == sha256(
        src / "before_vm_start" / "50_probe"
    )
    assert "10_cantmigrate" in hooks["before_vm_migrate_source"]
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    assert probe.events(2) == ["before_vm_start", "after_vm_start"]
    sandbox.virsh("destroy", "g1")
    assert probe.events(0) == []
    assert "after_vm_destroy/20_hello rc=0" in probe.log()

    # The second run changes nothing.
    report = ansible.playbook("site")
    assert changed(report, host) == []

    # Check mode: the controller's tree and the host drifted (a new script, a changed one,
    # a launcher gone); it reports what it would do and changes nothing.
    (src / "after_vm_destroy" / "20_hello").write_text(HELLO.format(event="the new tree"))
    (src / "before_vm_destroy").mkdir()
    (src / "before_vm_destroy" / "30_new").write_text(HELLO.format(event="before_vm_destroy"))
    os.unlink(os.path.join(sandbox.hooks_dir, "daemon"))
    before = snapshot(world)
    report = ansible.playbook("site", "--check")
    assert snapshot(world) == before
    assert changed(report, host) == [
        "Copy the hook scripts (owner root, mode 0755)",
        "Show what libvirt-bridge install would do",
    ]
    would = result_of(report, host, "Show what libvirt-bridge install would do")["msg"]
    sighup = f"sent SIGHUP to libvirtd (pid {sandbox.libvirtd_pid()}): it looks for hooks again"
    assert would == [f"[dry run] installed {sandbox.hooks_dir}/daemon", f"[dry run] {sighup}"]
    copies = result_of(report, host, "Copy the hook scripts (owner root, mode 0755)")["results"]
    assert isinstance(copies, list)
    would_copy = sorted(r["item"][len(str(src)) + 1 :] for r in copies if r["changed"])
    assert would_copy == ["after_vm_destroy/20_hello", "before_vm_destroy/30_new"]
    assert result_of(report, host, "Run libvirt-bridge install").get("skipped")

    # The changed tree synced, with pruning: a script the controller no longer has goes,
    # the shipped hook's files stay; install puts the launcher back.
    os.unlink(src / "after_vm_start" / "50_probe")
    write_inventory(ansible, sandbox, deb, src, libvirt_bridge_hooks_prune=True)
    report = ansible.playbook("site")
    assert changed(report, host) == [
        "Copy the hook scripts (owner root, mode 0755)",
        "Remove the scripts the controller no longer has",
        "Run libvirt-bridge install",
    ]
    assert is_launcher(os.path.join(sandbox.hooks_dir, "daemon"))
    scripts = sorted(str(p.relative_to(root)) for p in root.glob("*/*"))
    assert scripts == sorted(
        [
            "after_vm_destroy/20_hello",
            "before_vm_destroy/30_new",
            "before_vm_start/50_probe",
            *CANTMIGRATE,
        ]
    )
    assert (root / "after_vm_destroy" / "20_hello").read_bytes() == (
        src / "after_vm_destroy" / "20_hello"
    ).read_bytes()

    # A drifted script: the fact has its checksum, and the report names the host, against
    # two hosts with the hooks it should have.
    for name in ("lbcopy2", "lbcopy3"):
        copy_host(ansible, sandbox, name)
    write_inventory(ansible, sandbox, deb, src, libvirt_bridge_hooks_prune=True)
    report = ansible.playbook("report")
    assert (
        result_of(report, host, "Show the hosts whose hooks differ from the most common set")["msg"]
        == "all hosts have the same hooks"
    )
    drifted = root / "after_vm_destroy" / "20_hello"
    drifted.write_text(HELLO.format(event="a hand edit"))
    report = ansible.playbook("report")
    seen = facts(report, host)["libvirt_bridge_hooks"]
    assert isinstance(seen, dict)
    assert seen["after_vm_destroy"]["20_hello"]["checksum"] == sha256(drifted)
    assert sha256(drifted) != sha256(src / "after_vm_destroy" / "20_hello")
    message = result_of(report, host, "Show the hosts whose hooks differ from the most common set")[
        "msg"
    ]
    assert message == {
        "hosts whose hooks differ": {
            host: {
                "only here": [f"after_vm_destroy/20_hello {sha256(drifted)}"],
                "missing or different": [
                    f"after_vm_destroy/20_hello {sha256(src / 'after_vm_destroy' / '20_hello')}"
                ],
            }
        }
    }

    # The failed runs of every host, in one report: a start the host's hooks refused.
    report = ansible.playbook("failures")
    shown = result_of(report, host, "Show the hosts with failed runs")["msg"]
    assert shown == "no failed hook run since 24h"
    refuse = root / "before_vm_start" / "60_refuse"
    refuse.write_text("#!/bin/sh\necho 'no hugepages left' >&2\nexit 1\n")
    refuse.chmod(0o755)
    assert sandbox.virsh("start", "g1", check=False).returncode != 0
    report = ansible.playbook("failures", "-e", "libvirt_bridge_failures_since=1h")
    shown = result_of(report, host, "Show the hosts with failed runs")["msg"]
    assert isinstance(shown, dict)
    [(what, failed)] = shown.items()
    assert what == "failed hook runs since 1h"
    [run] = failed[host]
    assert (run["domain"], run["event"], run["rc"], run["outcome"]) == (
        "g1",
        "before_vm_start",
        1,
        "vetoed",
    )
    assert run["script"] == str(refuse) and run["stderr"] == "no hugepages left"
    assert set(failed) == {host}
